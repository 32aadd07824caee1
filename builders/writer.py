"""Write output rows as Hub-style parquet shards: data/<split>-NNNNN-of-MMMMM.parquet.

Row groups hold a fixed number of rows (the last one of a shard fewer), and a shard closes
once the row groups written reach a byte budget: the same rows always give the same files,
byte for byte, however they arrive. Each shard's content hash (`file_xxh3_128`) is taken as it
closes, for build.json: `push` checks that it publishes the files the build wrote.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from critic_data.builders.readers import contiguous
from critic_data.schemas import ARROW_SCHEMA

ROWS_PER_ROW_GROUP = 100  # the Hub's viewer and `datasets` page image data in small groups


def _write_contiguous(writer: pq.ParquetWriter, table: pa.Table) -> None:
    writer.write_table(table.combine_chunks())


def file_xxh3_128(path: Path) -> str:
    """The xxh3_128 hex digest of a file, read in large blocks: xxh3 outruns the disk (the
    shards of a 1.7 GB build, just written, hash in about half a second) and releases the GIL."""
    digest, block = xxhash.xxh3_128(), bytearray(8 << 20)
    view = memoryview(block)
    with path.open("rb", buffering=0) as file:
        while size := file.readinto(block):
            digest.update(view[:size])
    return digest.hexdigest()


def _finish_shard(writer: pq.ParquetWriter, path: Path, digests: list[str]) -> None:
    writer.close()
    digests.append(file_xxh3_128(path))


def _row_bytes(table: pa.Table) -> list[int]:
    """Image and text bytes per row: a size fixed by content, not by memory layout."""
    sizes = np.zeros(table.num_rows, dtype=np.int64)
    for field in table.schema:
        if field.name == "images":  # chunk by chunk: joining the chunks would copy every image's bytes
            sizes += np.concatenate([_image_bytes(chunk) for chunk in table[field.name].chunks])
        elif pa.types.is_string(field.type):
            sizes += pc.utf8_length(contiguous(table[field.name])).fill_null(0).to_numpy(zero_copy_only=False)
    return sizes.tolist()


def _image_bytes(images: pa.ListArray) -> np.ndarray:
    """Each row's image bytes, summed over its list of images."""
    lengths = pc.binary_length(pc.struct_field(pc.list_flatten(images), "bytes")).to_numpy(zero_copy_only=False)
    return np.bincount(pc.list_parent_indices(images).to_numpy(), weights=lengths,
                       minlength=len(images)).astype(np.int64)


class SplitWriter:
    """Streams the rows of one split into size-bounded shards.

    Encoding and writing a row group (pyarrow releases the GIL) runs on one background
    thread, in order, while the build assembles the next rows; at most one group waits.
    """

    def __init__(self, data_dir: Path, split: str, max_shard_bytes: int, schema: pa.Schema = ARROW_SCHEMA):
        self.data_dir, self.split, self.max_shard_bytes, self.schema = data_dir, split, max_shard_bytes, schema
        self.rows = 0
        self.digests: list[str] = []  # xxh3_128 of each shard, in order (written by the background thread)
        self._shards: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self._shard_bytes = 0
        self._buffer: list[pa.Table] = []
        self._sizes: list[int] = []  # bytes of each buffered row
        self._background = ThreadPoolExecutor(1, thread_name_prefix=f"write-{split}")
        self._pending: Future | None = None
        # image bytes never repeat: a dictionary would only cost time; short labels do repeat
        self._dictionary_columns = [c for c in ("source", "template", "answer") if c in schema.names]
        # JPEG and PNG bytes are compressed already: snappy would spend CPU to gain nothing
        self._compression = {name: "none" if name == "images" else "snappy" for name in schema.names}

    def _wait(self) -> None:
        if self._pending is not None:
            self._pending.result()  # re-raises a write error here, in the build's thread
            self._pending = None

    def write(self, table: pa.Table) -> None:
        """Append rows; they are grouped by count and byte budget, whatever the tables' sizes."""
        if table.num_rows:
            self._buffer.append(table)
            self._sizes += _row_bytes(table)
        while rows := self._next_group():
            self._write_group(rows)

    def _next_group(self, final: bool = False) -> int:
        """Rows in the next row group: ROWS_PER_ROW_GROUP, or fewer where the shard's budget ends."""
        budget, total = self.max_shard_bytes - self._shard_bytes, 0
        for index, size in enumerate(self._sizes[:ROWS_PER_ROW_GROUP]):
            total += size
            if total >= budget:
                return index + 1
        if len(self._sizes) >= ROWS_PER_ROW_GROUP:
            return ROWS_PER_ROW_GROUP
        return len(self._sizes) if final else 0

    def _write_group(self, rows: int) -> None:
        pending = pa.concat_tables(self._buffer)
        group, rest = pending.slice(0, rows), pending.slice(rows)
        self._buffer = [rest] if rest.num_rows else []
        group_bytes, self._sizes = sum(self._sizes[:rows]), self._sizes[rows:]
        if self._writer is None:
            path = self.data_dir / f".{self.split}-{len(self._shards):05d}.parquet.partial"
            self._shards.append(path)
            self._writer = pq.ParquetWriter(path, self.schema, use_dictionary=self._dictionary_columns,
                                            compression=self._compression)
        self._wait()
        # one contiguous chunk per column: pages then never depend on how the rows arrived
        self._pending = self._background.submit(_write_contiguous, self._writer, group)
        self.rows += group.num_rows
        self._shard_bytes += group_bytes
        if self._shard_bytes >= self.max_shard_bytes:
            self._close_shard()

    def _close_shard(self) -> None:
        if self._writer is not None:
            # closed and hashed in the background, after the shard's last group; the next
            # shard's first group waits for it (one thread: shards finish in order)
            self._wait()
            self._pending = self._background.submit(_finish_shard, self._writer, self._shards[-1], self.digests)
            self._writer = None
            self._shard_bytes = 0

    def close(self) -> list[Path]:
        """Finish the split and give its shards their final names. An empty split has no
        file: `datasets` cannot load a split without rows, so it is left out, not faked."""
        while rows := self._next_group(final=True):
            self._write_group(rows)
        self._close_shard()
        self._wait()
        self._background.shutdown()
        total = len(self._shards)
        final = []
        for index, partial in enumerate(self._shards):
            path = self.data_dir / f"{self.split}-{index:05d}-of-{total:05d}.parquet"
            partial.rename(path)
            final.append(path)
        return final
