"""Write output rows as Hub-style parquet shards: data/<split>-NNNNN-of-MMMMM.parquet.

Row groups hold at most a fixed number of rows, and a shard closes once a byte budget
counted from the rows themselves is reached: the same rows always give the same files,
byte for byte.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from critic_data.schemas import ARROW_SCHEMA

ROWS_PER_ROW_GROUP = 100  # the Hub's viewer and `datasets` page image data in small groups


def _row_bytes(row: dict) -> int:
    """Approximate stored size: the images plus the text (the prompt repeats the text)."""
    text = sum(len(v) for v in row.values() if isinstance(v, str))
    return sum(len(image["bytes"]) for image in row["images"]) + 2 * text


class SplitWriter:
    """Streams the rows of one split into size-bounded shards.

    Encoding and writing a row group (pyarrow releases the GIL) runs on one background
    thread, in order, while the build assembles the next rows; at most one group waits.
    """

    def __init__(self, data_dir: Path, split: str, max_shard_bytes: int, schema: pa.Schema = ARROW_SCHEMA):
        self.data_dir, self.split, self.max_shard_bytes, self.schema = data_dir, split, max_shard_bytes, schema
        self.rows = 0
        self._shards: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self._shard_bytes = 0
        self._buffer: list[dict] = []
        self._background = ThreadPoolExecutor(1, thread_name_prefix=f"write-{split}")
        self._pending: Future | None = None
        # image bytes never repeat: a dictionary would only cost time; short labels do repeat
        self._dictionary_columns = [c for c in ("source", "template", "answer") if c in schema.names]

    def _wait(self) -> None:
        if self._pending is not None:
            self._pending.result()  # re-raises a write error here, in the build's thread
            self._pending = None

    def write(self, row: dict) -> None:
        self._buffer.append(row)
        self._shard_bytes += _row_bytes(row)
        self.rows += 1
        if self._shard_bytes >= self.max_shard_bytes:
            self._close_shard()
        elif len(self._buffer) >= ROWS_PER_ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self._writer is None:
            path = self.data_dir / f".{self.split}-{len(self._shards):05d}.parquet.partial"
            self._shards.append(path)
            self._writer = pq.ParquetWriter(path, self.schema, use_dictionary=self._dictionary_columns)
        table = pa.Table.from_pylist(self._buffer, schema=self.schema)
        self._buffer = []
        self._wait()
        self._pending = self._background.submit(self._writer.write_table, table)

    def _close_shard(self) -> None:
        self._flush()
        self._wait()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._shard_bytes = 0

    def close(self) -> list[Path]:
        """Finish the split and give its shards their final names. An empty split has no
        file: `datasets` cannot load a split without rows, so it is left out, not faked."""
        self._close_shard()
        self._background.shutdown()
        total = len(self._shards)
        final = []
        for index, partial in enumerate(self._shards):
            path = self.data_dir / f"{self.split}-{index:05d}-of-{total:05d}.parquet"
            partial.rename(path)
            final.append(path)
        return final
