"""Reading the file formats sources share: parquet shards with an embedded Image column."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from critic_data import UserError

BATCH_ROWS = 64  # parquet rows decoded at a time: a few MB of images


def count_parquet_rows(files: list[Path]) -> int:
    """Rows in the shards, from their footers; a damaged shard is the user's to replace."""
    total = 0
    for path in files:
        try:
            total += pq.ParquetFile(path).metadata.num_rows
        except Exception as error:  # pyarrow raises several types for a damaged file
            raise UserError(f"cannot read {path} as parquet ({error}); re-download that file") from None
    return total


def parquet_rows(files: list[Path]) -> Iterator[tuple[str, dict]]:
    """(position, row) for every row of the shards in order, a batch of rows at a time."""
    for path in files:
        index = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS):
            for row in batch.to_pylist():
                yield f"{path.name}:{index}", row
                index += 1


def image_from_struct(value) -> tuple[bytes, str | None] | None:
    """An Image column value (`{"bytes", "path"}`) as (bytes, file name), or None if it has no bytes."""
    if isinstance(value, dict) and value.get("bytes"):
        path = value.get("path")
        return value["bytes"], Path(path).name if isinstance(path, str) and path else None
    return None


def conversation_turns(raw) -> list[dict] | None:
    """`conversations` as a list of {"from", "value"}: accepts a list of dicts, a dict of
    lists (how `datasets` stores a sequence of dicts), or either wrapped in one extra list."""
    if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], (list, dict)) and not _is_turn(raw[0]):
        raw = raw[0]
    if isinstance(raw, dict) and isinstance(raw.get("from"), list) and isinstance(raw.get("value"), list):
        raw = [{"from": f, "value": v} for f, v in zip(raw["from"], raw["value"])]
    if isinstance(raw, list) and raw and all(_is_turn(turn) for turn in raw):
        return raw
    return None


def _is_turn(turn) -> bool:
    return isinstance(turn, dict) and isinstance(turn.get("from"), str) and isinstance(turn.get("value"), str)
