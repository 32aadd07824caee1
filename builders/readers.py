"""Reading the file formats sources share: parquet shards with an embedded Image column."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from critic_data import UserError
from critic_data.builders.records import Example
from critic_data.schemas import Reject

BATCH_ROWS = 64  # rows turned into Python objects at a time


class ParquetReader:
    """Rows of parquet shards, as parts (one per row group) that workers can read on their own.

    `convert(position, row)` (a picklable function) turns a row into an Example or a Reject.
    `columns` are the (possibly nested, dotted) columns to read when every one of them is in
    a shard; a shard laid out otherwise is read whole, so no data is lost to projection.
    `image_column` names the Image struct column that holds each row's one image: the build
    then takes the images of its pairs from the row group as Arrow data (`images`).
    `prepare(table)` (picklable), when given, may add columns computed over a whole row group
    before its rows are converted.
    """

    layout = "parquet"

    def __init__(self, files: list[Path], convert: Callable[[str, dict], Example | Reject],
                 columns: list[str] | None = None, image_column: str | None = "image",
                 prepare: Callable[[pa.Table], pa.Table] | None = None):
        self.files, self.convert, self.columns, self.image_column = files, convert, columns, image_column
        self.prepare = prepare
        self.parts: list[tuple[int, int, int]] = []  # (file index, row group, first row's index in the file)
        self.total_rows = 0
        for index, path in enumerate(files):
            if not path.is_file():  # a FIFO named *.parquet would block the open forever
                raise UserError(f"{path} is not a regular file; replace it with the downloaded parquet file")
            try:
                metadata = pq.ParquetFile(path).metadata
            except Exception as error:  # pyarrow raises several types for a damaged file
                raise UserError(f"cannot read {path} as parquet ({_one_line(error)}); re-download that file") from None
            first = 0
            for group in range(metadata.num_row_groups):
                self.parts.append((index, group, first))
                first += metadata.row_group(group).num_rows
            self.total_rows += first

    def read_part(self, part: tuple[int, int, int]) -> Iterator[Example | Reject]:
        index, group, first = part
        path = self.files[index]
        try:
            table = _row_group(path, group, self.columns)
            table.validate(full=True)  # strings that are not UTF-8 come from a damaged page too
        except Exception as error:  # a damaged page: pyarrow raises OSError, ArrowInvalid, ...
            raise UserError(f"cannot read row group {group} of {path} ({_one_line(error)}); "
                            "the file is damaged: re-download it") from None
        if self.prepare is not None:
            table = self.prepare(table)
        for offset in range(0, table.num_rows, BATCH_ROWS):
            for row in table.slice(offset, BATCH_ROWS).to_pylist():
                yield self.convert(f"{path.name}:{first}", row)
                first += 1

    def images(self, part: tuple[int, int, int], rows: list[int]) -> pa.Array:
        """`images` values (a one-image list each, file name only) for rows of a part, by index:
        Arrow slices of the row group `read_part` has just read, never Python objects."""
        index, group, _ = part
        column = contiguous(_row_group(self.files[index], group, self.columns)[self.image_column])
        picked = column.take(pa.array(rows, pa.int64()))
        # as `image_from_struct`: a struct without `path` (struct<bytes>) has no file names
        paths = pc.struct_field(picked, "path") if picked.type.get_field_index("path") >= 0 else pa.nulls(len(rows))
        if pa.types.is_string(paths.type) or pa.types.is_large_string(paths.type):
            names = pc.replace_substring_regex(paths.cast(pa.string()), r"^.*/", "")
            names = pc.if_else(pc.equal(names, ""), pa.scalar(None, pa.string()), names)
        else:  # as `image_from_struct`: a path that is not text names nothing
            names = pa.nulls(len(rows), pa.string())
        image = pa.StructArray.from_arrays([pc.struct_field(picked, "bytes").cast(pa.binary()), names], names=["bytes", "path"])
        return pa.ListArray.from_arrays(pa.array(range(len(rows) + 1), pa.int32()), image)


def _one_line(error: Exception) -> str:
    """pyarrow's error, on one line (its messages span several) and kept short."""
    return " ".join(f"{type(error).__name__}: {error}".split())[:300]


def contiguous(column: pa.ChunkedArray) -> pa.Array:
    """The column as one array: its only chunk as it is (`combine_chunks` would copy it)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _row_group(path: Path, group: int, columns: list[str] | None) -> pa.Table:
    """One row group, decoded once for both its rows and its images (the last one is kept).
    Only `columns` are read when every one of them is in the shard; a shard laid out
    otherwise is read whole, so no data is lost to projection."""
    return _read_row_group(path, group, tuple(columns) if columns else None, *file_key(path))


@lru_cache(maxsize=1)
def _read_row_group(path: Path, group: int, columns: tuple[str, ...] | None, *_identity) -> pa.Table:
    shard = _open_parquet(path, *_identity)
    paths = {shard.schema.column(i).path for i in range(len(shard.schema))}
    if columns and not all(any(p == c or p.startswith(c + ".") for p in paths) for c in columns):
        columns = None
    return shard.read_row_group(group, columns=list(columns) if columns else None)


def file_key(path: Path) -> tuple[int, int, int, int]:
    """What an open file is cached under besides its path: the file's identity (a file
    replaced at the same path is opened afresh) and this process (a worker forked from the
    build opens its own: sharing the build's file offset would mix up their reads)."""
    stat = path.stat()
    return os.getpid(), stat.st_ino, stat.st_mtime_ns, stat.st_size


@lru_cache(maxsize=8)
def _open_parquet(path: Path, *_identity) -> pq.ParquetFile:
    """Shards stay open: each part would otherwise parse the footer again. Pages that carry
    a checksum are verified: a damaged page is then an error, not silently wrong rows."""
    return pq.ParquetFile(path, page_checksum_verification=True)


def image_from_struct(value) -> tuple[bytes, str | None] | None:
    """An Image column value (`{"bytes", "path"}`) as (bytes, file name), or None if it has no bytes."""
    if isinstance(value, dict) and value.get("bytes"):
        path = value.get("path")
        return value["bytes"], (path.rpartition("/")[2] or None) if isinstance(path, str) else None
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
