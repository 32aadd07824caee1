"""What a source reader provides, and the reading machinery the sources share.

The contract (`SourceReader`): a source's rows in parts that worker processes read on their
own, in input order. Reading a part yields `RowBatch`es of consecutive rows: each row an
`Example` or a `Reject` and, when the reader holds the images as Arrow data (parquet), those
rows' images as one Arrow column beside them, so that image bytes reach the output without
becoming Python objects. The build asks a reader nothing else.

The machinery: `ParquetReader` (a part per run of row groups, projected columns, a damaged page
as one line), `JsonLinesReader` (a file cut into parts at line boundaries by a first pass over its
bytes), `ImageStore` (images by id from a zip archive or a folder), and helpers for the Hub's
nested layouts.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from critic_data import UserError
from critic_data.builders.images import read_archive_member
from critic_data.builders.records import Example
from critic_data.files import ImageFileError, json_values, read_image_file, split_json_lines
from critic_data.schemas import Reject, RejectReason

if TYPE_CHECKING:
    from critic_data.builders.options import BuildOptions

# Rows turned into Python objects, checked and prepared together: enough that the fixed cost of
# each column-wise step (tens of Arrow calls) is small beside the rows' own, few enough that a
# part's rows and their rendered prompts stay a few tens of megabytes.
ROWS_PER_BATCH = 1000
PART_BYTES = 16 << 20  # a parquet part's row groups, uncompressed, at most (one group may hold more)


@dataclass
class RowBatch:
    """Consecutive input rows. `images`, when the reader has them as Arrow data: one
    list<struct<bytes, path>> value per item, aligned with `items` (a Reject's is not used)."""

    items: list[Example | Reject]
    images: pa.Array | None = None


class SourceReader(Protocol):
    """A source's rows, in parts: each part can be read in another process, and reading the
    parts in order gives every row in input order. Readers must pickle cheaply."""

    files: list[Path]  # every file the build reads (fingerprinted into the manifest)
    layout: str  # which of the source's Hub layouts was found
    total_rows: int | None  # for the progress bar, when cheap to know
    parts: Sequence  # picklable part descriptors, in input order

    def read_part(self, part) -> Iterator[RowBatch]: ...


@dataclass(frozen=True)
class SourceSpec:
    """A source: where it lives on the Hub, what the card says of it, and how to open a snapshot."""

    name: str
    hub_repo: str
    # The files fetched from `hub_repo` (allow_patterns), at whatever revision is asked for: only
    # those the reader reads. A source read from several revisions' layouts (VLFeedback's main and
    # its parquet conversion, refs/convert/parquet) lists them all: each revision holds its own
    # only, and a commit pinned from either needs no telling which branch it came from.
    hub_files: tuple[str, ...]
    license: str
    homepage: str
    citation: str
    summary: str
    open: Callable[[Path, BuildOptions], SourceReader]  # raises UserError on a malformed folder


# --- parquet ---------------------------------------------------------------------------------

class ParquetReader:
    """Rows of parquet shards, as parts that workers can read on their own: a part is a run of a
    shard's row groups, up to ROWS_PER_BATCH rows and PART_BYTES (the Hub writes image data in
    groups of 100 rows: one part each would spend more on each part's fixed cost than on its rows).

    `convert(file name, index of the first row in the file, rows)` (picklable) turns a slice of a
    row group into Examples and Rejects, one per row; `per_row` makes one from a function of one
    row. `columns` are the (possibly nested, dotted) columns to read when every one of them is in
    a shard; a shard laid out otherwise is read whole, so no data is lost to projection.
    `image_column` names the Image struct column holding each row's one image, handed over with
    the rows as Arrow data.
    """

    layout = "parquet"

    def __init__(self, files: list[Path], convert: Callable[[str, int, pa.Table], list[Example | Reject]],
                 columns: list[str] | None = None, image_column: str = "image"):
        self.files, self.convert, self.columns, self.image_column = files, convert, columns, image_column
        # (file index, row groups, first row's index in the file)
        self.parts: list[tuple[int, tuple[int, ...], int]] = []
        self.total_rows = 0
        self.identities: list[tuple | None] = []  # each shard's identity when its row groups were listed
        for index, path in enumerate(files):
            if not path.is_file():  # a FIFO named *.parquet would block the open forever
                raise UserError(f"{path} is not a regular file; replace it with the downloaded parquet file")
            try:
                metadata = pq.ParquetFile(path).metadata
            except Exception as error:  # pyarrow raises several types for a damaged file
                if path.name.startswith("._"):  # what macOS leaves beside each file it copies to a foreign disk
                    raise UserError(f"{path} is a macOS metadata file (._*), not parquet; delete the ._* files in "
                                    f"{path.parent}") from None
                raise UserError(f"cannot read {path} as parquet ({_one_line(error)}); re-download that file") from None
            self.identities.append(file_identity(path))
            first = 0
            for groups, rows in _runs(metadata):
                self.parts.append((index, groups, first))
                first += rows
            self.total_rows += first

    def read_part(self, part: tuple[int, tuple[int, ...], int]) -> Iterator[RowBatch]:
        index, groups, first = part
        path = self.files[index]
        try:
            table = _read_row_groups(path, groups, self.columns)
            table.validate(full=True)  # strings that are not UTF-8 come from a damaged page too
        except Exception as error:  # a damaged page: pyarrow raises OSError, ArrowInvalid, ...
            if file_identity(path) != self.identities[index]:  # replaced since: its row groups are not the ones listed
                raise UserError(f"{path} changed while the build read it (written to, replaced or removed); rerun "
                                "when the input is settled") from None
            where = f"row group {groups[0]}" if len(groups) == 1 else f"row groups {groups[0]}-{groups[-1]}"
            raise UserError(f"cannot read {where} of {path} ({_one_line(error)}); "
                            "the file is damaged: re-download it") from None
        images = _image_lists(contiguous(table[self.image_column])) if self.image_column in table.column_names else None
        for offset in range(0, table.num_rows, ROWS_PER_BATCH):
            rows = table.slice(offset, ROWS_PER_BATCH)
            yield RowBatch(self.convert(path.name, first + offset, rows),
                           None if images is None else images.slice(offset, rows.num_rows))


def _runs(metadata: pq.FileMetaData) -> Iterator[tuple[tuple[int, ...], int]]:
    """A shard's row groups in runs of ROWS_PER_BATCH rows and PART_BYTES at most (a group
    larger than either is a run of its own): (the groups, their rows)."""
    groups, rows, size = [], 0, 0
    for group in range(metadata.num_row_groups):
        info = metadata.row_group(group)
        if groups and (rows + info.num_rows > ROWS_PER_BATCH or size + info.total_byte_size > PART_BYTES):
            yield tuple(groups), rows
            groups, rows, size = [], 0, 0
        groups.append(group)
        rows, size = rows + info.num_rows, size + info.total_byte_size
    if groups:
        yield tuple(groups), rows


def per_row(convert: Callable[[str, dict], Example | Reject]) -> Callable[[str, int, pa.Table], list[Example | Reject]]:
    """A ParquetReader converter from a function of one row (`position` is "file:index")."""
    return partial(_each_row, convert)


def _each_row(convert, file_name: str, first: int, rows: pa.Table) -> list[Example | Reject]:
    return [convert(f"{file_name}:{first + offset}", row) for offset, row in enumerate(rows.to_pylist())]


def _image_lists(column: pa.Array) -> pa.Array | None:
    """An Image struct column as `images` values: a one-image list per row, the file name only.
    None for a column of another type (plain bytes, text, a list, a struct without `bytes` or
    with numbers there): the rows' converter then rejects each row's value with its reason."""
    if not pa.types.is_struct(column.type) or column.type.get_field_index("bytes") < 0:
        return None
    try:
        data = pc.struct_field(column, "bytes").cast(pa.binary())
    except pa.ArrowException:  # bytes of a type that is not binary or text
        return None
    rows = len(column)
    # as `image_from_struct`: a struct without `path` (struct<bytes>) has no file names
    paths = pc.struct_field(column, "path") if column.type.get_field_index("path") >= 0 else pa.nulls(rows)
    if pa.types.is_string(paths.type) or pa.types.is_large_string(paths.type):
        names = pc.replace_substring_regex(paths.cast(pa.string()), r"^.*/", "")
        names = pc.if_else(pc.equal(names, ""), pa.scalar(None, pa.string()), names)
    else:  # as `image_from_struct`: a path that is not text names nothing
        names = pa.nulls(rows, pa.string())
    image = pa.StructArray.from_arrays([data, names], names=["bytes", "path"])
    return pa.ListArray.from_arrays(pa.array(range(rows + 1), pa.int32()), image)


def _one_line(error: Exception) -> str:
    """pyarrow's error, on one line (its messages span several) and kept short."""
    return " ".join(f"{type(error).__name__}: {error}".split())[:300]


def contiguous(column: pa.ChunkedArray) -> pa.Array:
    """The column as one array: its only chunk as it is (`combine_chunks` would copy it)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _read_row_groups(path: Path, groups: tuple[int, ...], columns: list[str] | None) -> pa.Table:
    """Row groups of a shard. Only `columns` are read when every one of them is in the shard; a shard
    laid out otherwise is read whole, so no data is lost to projection."""
    shard = _open_parquet(path, *file_key(path))
    paths = {shard.schema.column(i).path for i in range(len(shard.schema))}
    if columns and not all(any(p == c or p.startswith(c + ".") for p in paths) for c in columns):
        columns = None
    return shard.read_row_groups(list(groups), columns=columns)


def file_key(path: Path) -> tuple[int, int, int, int]:
    """What an open file is cached under besides its path: the file's identity (a file
    replaced at the same path is opened afresh) and this process (a worker forked from the
    build opens its own: sharing the build's file offset would mix up their reads)."""
    stat = path.stat()
    return os.getpid(), stat.st_ino, stat.st_mtime_ns, stat.st_size


def file_identity(path: Path) -> tuple[int, int, int] | None:
    """A file's identity across processes (`file_key` less the process); None when it is gone."""
    try:
        return file_key(path)[1:]
    except OSError:
        return None


@lru_cache(maxsize=8)
def _open_parquet(path: Path, *_identity) -> pq.ParquetFile:
    """Shards stay open: each part would otherwise parse the footer again. Pages that carry
    a checksum are verified: a damaged page is then an error, not silently wrong rows."""
    return pq.ParquetFile(path, page_checksum_verification=True)


# --- JSON Lines --------------------------------------------------------------------------------

class JsonLinesReader:
    """A JSON Lines file in parts of ROWS_PER_BATCH lines that workers read on their own: a first
    pass over the file's bytes (no JSON parsing) finds where each part starts and the number of
    its first line. `convert(rows)` (picklable) turns a batch's JSON objects, each with its
    position ("line N"), into Examples and Rejects, one per row; a line that is not JSON, or not
    an object, is rejected here. Lines end as `split_json_lines` says."""

    layout = "jsonl"
    total_rows = None

    def __init__(self, source: str, path: Path, files: list[Path],
                 convert: Callable[[list[tuple[str, dict]]], list[Example | Reject]]):
        self.source, self.path, self.files, self.convert = source, path, files, convert
        try:
            self.parts = line_parts(path, ROWS_PER_BATCH)
        except OSError as error:  # a file the system cannot read (EIO, no permission)
            raise UserError(f"cannot read {error.filename or path}: {error.strerror or error}; check the file, "
                            "or re-download it") from None

    def read_part(self, part: tuple[int, int, int]) -> Iterator[RowBatch]:
        start, size, first_line = part
        try:
            with self.path.open("rb") as handle:
                handle.seek(start)
                data = handle.read(size)
        except OSError as error:
            raise UserError(f"cannot read {self.path}: {error.strerror or error}; check the file, "
                            "or re-download it") from None
        items: list[Example | Reject | None] = []
        objects = []  # (index in items, position, the JSON object) of each line that is an object
        # bytes that are not UTF-8 read as U+FFFD, as the build has always read them
        for number, _, value in json_values(data, first_line, errors="replace"):
            if isinstance(value, dict):
                objects.append((len(items), f"line {number}", value))
                items.append(None)
            else:
                items.append(self._reject(f"line {number}", value))
        for (index, _, _), item in zip(objects, self.convert([(position, row) for _, position, row in objects]),
                                       strict=True):
            items[index] = item
        yield RowBatch(items)

    def _reject(self, position: str, value) -> Reject:
        if isinstance(value, (ValueError, RecursionError)):  # ValueError: also an integer past 4300 digits;
            # RecursionError: nested past Python's limit
            return Reject(self.source, position, RejectReason.JSON_INVALID,
                          f"{type(value).__name__}: {str(value)[:200]}")
        return Reject(self.source, position, RejectReason.ROW_MALFORMED, "line is not a JSON object")


def line_parts(path: Path, lines_per_part: int) -> list[tuple[int, int, int]]:
    """(byte offset, byte size, number of the first line) of each run of `lines_per_part`
    lines. Parts end after a newline byte; lines are numbered as `split_json_lines` splits them."""
    parts, start, number = [], 0, 1
    with path.open("rb") as handle:
        while chunk := b"".join(islice(handle, lines_per_part)):
            parts.append((start, len(chunk), number))
            number += len(split_json_lines(chunk))
            start += len(chunk)
    return parts


# --- images by id ------------------------------------------------------------------------------

def image_store(location: Path) -> ImageStore:
    """The store at `location`, opened once per process (an archive's directory of 80k names is
    read once; see `file_key`)."""
    return _open_image_store(location, *file_key(location))


@lru_cache(maxsize=2)
def _open_image_store(location: Path, *_identity) -> ImageStore:
    return ImageStore(location)


class ImageStore:
    """Images by id (the file name without its extension) from a zip archive or a folder. Two
    files for one id (`x.jpg` and `x.png`) are not guessed between: `image_ambiguous`."""

    def __init__(self, location: Path):
        self.location = location
        self._zip = zipfile.ZipFile(location) if location.is_file() else None
        names = self._zip.namelist() if self._zip else [p.name for p in location.iterdir()] if location.is_dir() else []
        self._by_id: dict[str, list[str]] = {}
        for name in sorted(set(names)):  # a name the archive holds twice is one file (the last copy)
            if not name.endswith("/"):
                self._by_id.setdefault(Path(name).stem, []).append(name)

    def get(self, image_id: str) -> tuple[bytes, str] | None:
        """(bytes, file name) of the image `image_id`, None when there is none; ImageFileError when
        it cannot be read (not a regular file, over the size cap, damaged, ambiguous)."""
        names = self._by_id.get(image_id)
        if names is None:
            return None
        if len(names) > 1:
            listed = ", ".join(repr(name[-100:]) for name in names[:3]) + (" ..." if len(names) > 3 else "")
            raise ImageFileError(RejectReason.IMAGE_AMBIGUOUS,
                                 f"{len(names)} image files for id {image_id[:100]!r}: {listed}")
        data = read_archive_member(self._zip, names[0]) if self._zip else read_image_file(self.location / names[0])
        return data, Path(names[0]).name


# --- the Hub's nested layouts ---------------------------------------------------------------------

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
