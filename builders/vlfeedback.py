"""VLFeedback (`MMInstruction/VLFeedback`): four GPT-4V-rated completions per prompt.

Layouts read (SOURCES.md): `vlfeedback_80k.jsonl` with images in `merged_images.zip`
(`merged_images/<id>.jpg`, or that folder unzipped), or the parquet copy `data/*.parquet`
(completions as a struct of lists, the image embedded). Parquet wins when both are present.

Pairing, as its authors and LLaVA-Critic did: a completion's score is the mean of its
numeric aspect ratings (`--aspects`); a completion with a rating that is not a number (or
ratings whose mean overflows, like 1e308), or an empty response, takes part in no pair. Of the unordered pairs of usable completions, a pair
whose gap exceeds `--margin` passes; `--pairs-per-prompt max-gap` keeps the widest one per
row, `all` keeps every passing pair. A gap of 0 is a tie (offered to `--keep-ties`); a gap
too wide for a float (1e308 against -1e308) is filtered as `gap_not_finite`. A row pairs its
first MAX_COMPLETIONS completions (VLFeedback has four): the others take part in no pair and
are counted as the note `completions_over_cap`, so no row can ask for millions of pairs.

Rejects: unparsable JSON line (or one nested past Python's recursion limit, or holding an
integer past Python's 4300 digits), a row missing its fields or with an id of only whitespace,
a missing image (or one that is not a regular file), an image over the size cap
(`image_file_too_large`), a damaged archive member (`image_undecodable`), two image files for
one id (`x.jpg` and `x.png`: `image_ambiguous`), fewer than two rated completions
(`rating_unparsable`) or fewer than two non-empty ones (`empty_response`), an empty prompt. A byte-order mark at the start
of the JSON Lines file is read as one. GPT-4V's `Rationale` text is read and dropped here: it never leaves.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections import Counter
from collections.abc import Iterator
from functools import lru_cache, partial
from itertools import combinations, islice
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from critic_data import UserError
from critic_data.builders import SourceSpec
from critic_data.builders.images import ImageFileError, read_archive_member, read_image_file
from critic_data.builders.options import BuildOptions
from critic_data.builders.readers import ParquetReader, file_key, image_from_struct
from critic_data.builders.records import Example, Pair
from critic_data.builders.text import clean_question, clean_response
from critic_data.schemas import Reject, RejectReason

NAME = "vlfeedback"
MAX_COMPLETIONS = 64  # completions of a row that take part in pairs: at most 2016 pairs per row


def _number(value) -> float | None:
    """A rating as a finite number, or None: what `float(str(value))` makes of it."""
    try:
        rating = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return rating if math.isfinite(rating) else None


def _rating(annotations, aspect: str) -> float | None:
    entry = annotations.get(aspect) if isinstance(annotations, dict) else None
    return _number(entry.get("Rating") if isinstance(entry, dict) else entry)


def _score(annotations, aspects) -> float | None:
    """A completion's score: the mean of its aspect ratings, None when one is not a number
    or the mean is not finite (ratings like 1e308 overflow the sum)."""
    ratings = [_rating(annotations, aspect) for aspect in aspects]
    if None in ratings:
        return None
    score = sum(ratings) / len(ratings)
    return score if math.isfinite(score) else None


def _completions(raw) -> list[dict] | None:
    """Completions as a list of dicts, from either a list of dicts or a dict of lists."""
    if isinstance(raw, dict):
        columns = {key: value for key, value in raw.items() if isinstance(value, list)}
        lengths = {len(value) for value in columns.values()}
        if not columns or len(lengths) != 1:
            return None
        return [dict(zip(columns, values)) for values in zip(*columns.values())]
    if isinstance(raw, list) and all(isinstance(item, dict) for item in raw):
        return raw
    return None


def _pairs(completions: list[dict], scores: list[float | None], options: BuildOptions
           ) -> tuple[list[Pair], int, Counter, Counter] | RejectReason:
    """The pairs a row offers, how many it formed, what rules filtered, and per-completion notes."""
    notes: Counter = Counter()
    if len(completions) > MAX_COMPLETIONS:
        notes["completions_over_cap"] += len(completions) - MAX_COMPLETIONS
        completions, scores = completions[:MAX_COMPLETIONS], scores[:MAX_COMPLETIONS]
    scored = []  # (score, response) of usable completions, in source order
    rated = 0
    for completion, score in zip(completions, scores):
        response = completion.get("response")
        response = clean_response(response) if isinstance(response, str) else ""
        if score is None:
            notes["completions_unrated"] += 1
            continue
        rated += 1
        if not response:
            notes["completions_empty"] += 1
            continue
        scored.append((score, response))
    if rated < 2:
        return RejectReason.RATING_UNPARSABLE
    if len(scored) < 2:
        return RejectReason.EMPTY_RESPONSE

    filtered: Counter = Counter()
    passing, ties = [], []
    formed = 0
    for (score_a, text_a), (score_b, text_b) in combinations(scored, 2):
        formed += 1
        gap = round(abs(score_a - score_b), 6)
        if text_a == text_b:
            filtered["identical_responses"] += 1
        elif not math.isfinite(gap):  # finite scores so far apart (1e308 and -1e308) that no margin can hold it
            filtered["gap_not_finite"] += 1
        elif gap == 0:
            ties.append(Pair(text_a, text_b, 0.0, tie=True))
        elif gap <= options.margin:
            filtered["below_margin"] += 1
        else:
            better, worse = (text_a, text_b) if score_a > score_b else (text_b, text_a)
            passing.append(Pair(better, worse, gap))
    if options.pairs_per_prompt == "all":
        return passing + ties, formed, filtered, notes
    if passing:
        widest = max(passing, key=lambda pair: pair.margin)  # first of equals, in source order
        filtered["not_widest"] += len(passing) - 1
        filtered["tie_dropped"] += len(ties)
        return [widest], formed, filtered, notes
    filtered["tie_dropped"] += max(0, len(ties) - 1)
    return ties[:1], formed, filtered, notes


def _example(row: dict, image: tuple[bytes, str | None] | None, options: BuildOptions) -> Example | Reject:
    source_id = row.get("id")
    if not isinstance(source_id, (str, int)) or not str(source_id).strip():  # the id names the row's image
        return Reject(NAME, str(row.get("_position")), RejectReason.ROW_MALFORMED, "no id")
    source_id = str(source_id)
    completions = _completions(row.get("completions"))
    scores = row.get("_scores")  # computed for a whole row group by `_with_scores`, when it could
    if scores is None and completions is not None:
        scores = [_score(completion.get("annotations"), options.aspects) for completion in completions]
    if not isinstance(row.get("prompt"), str) or completions is None or len(scores) != len(completions):
        return Reject(NAME, source_id, RejectReason.ROW_MALFORMED, "needs a string prompt and a list of completions")
    question = clean_question(row["prompt"])
    if not question:
        return Reject(NAME, source_id, RejectReason.EMPTY_QUESTION, "prompt is empty once <image> is removed")
    if image is None:
        return Reject(NAME, source_id, RejectReason.IMAGE_MISSING, f"no image for id {source_id}")
    result = _pairs(completions, scores, options)
    if isinstance(result, RejectReason):
        return Reject(NAME, source_id, result, f"fewer than two usable completions out of {len(completions)}")
    pairs, formed, filtered, notes = result
    return Example(NAME, source_id, question, [image], pairs, formed, filtered, notes)


def _parquet_example(position: str, row: dict, options: BuildOptions) -> Example | Reject:
    row["_position"] = position
    return _example(row, image_from_struct(row.get("image")), options)


def _with_scores(table: pa.Table, aspects: tuple[str, ...]) -> pa.Table:
    """The row group with `_scores` (per completion, `_score` of its ratings) computed over the
    whole group at once; unchanged, so that rows are scored one by one, when its completions
    are laid out otherwise than the Hub's struct of lists."""
    try:
        completions = table["completions"].combine_chunks()
        annotations, responses = completions.field("annotations"), completions.field("response")
        total = None
        for aspect in aspects:
            rating = _numbers(annotations.values.field(aspect).field("Rating"))
            total = rating if total is None else pc.add(total, rating)  # a null stays null
    except (KeyError, AttributeError, TypeError, pa.ArrowException):
        return table
    means = pc.divide(total, float(len(aspects)))
    means = pc.if_else(pc.is_finite(means), means, pa.scalar(None, pa.float64()))  # as `_score`: an overflowed sum is unrated
    scores = pa.ListArray.from_arrays(annotations.offsets, means, mask=annotations.is_null())
    # the ratings are in the scores now: rows carry only the responses
    responses_only = pa.StructArray.from_arrays([responses], names=["response"], mask=completions.is_null())
    table = table.set_column(table.schema.get_field_index("completions"), "completions", responses_only)
    return table.append_column("_scores", scores)


_DECIMAL = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"  # text every float parser reads alike


def _numbers(ratings: pa.Array) -> pa.Array:
    """`_number` of every rating: plain decimals are read by Arrow, all at once; anything else
    (`N/A`, `nan`, another type) is read one by one as Python reads it."""
    if pa.types.is_integer(ratings.type) or pa.types.is_floating(ratings.type):
        values = ratings.cast(pa.float64())
        return pc.if_else(pc.is_finite(values), values, pa.scalar(None, pa.float64()))
    if not pa.types.is_string(ratings.type):
        return pa.array([_number(value) for value in ratings.to_pylist()], pa.float64())
    text = pc.utf8_trim_whitespace(ratings)
    decimal = pc.fill_null(pc.match_substring_regex(text, _DECIMAL), False)
    values = pc.if_else(decimal, text, pa.scalar(None, pa.string())).cast(pa.float64())
    others = pc.and_(pc.invert(decimal), pc.is_valid(ratings))
    if pc.any(others).as_py():
        where = pc.indices_nonzero(others)
        read = pa.array([_number(value) for value in ratings.take(where).to_pylist()], pa.float64())
        values = pc.replace_with_mask(values, others, read)
    return pc.if_else(pc.is_finite(values), values, pa.scalar(None, pa.float64()))


def _parquet_columns(options: BuildOptions) -> list[str]:
    """Only what pairing needs: GPT-4V's rationales are never even read from parquet."""
    ratings = [f"completions.annotations.list.element.{aspect}.Rating" for aspect in options.aspects]
    return ["id", "prompt", "completions.response", *ratings, "image"]


PART_LINES = 100  # JSON lines a worker reads and prepares as one part


class _JsonlReader:
    """The JSON Lines layout, in parts of PART_LINES lines that workers read on their own: a
    first pass over the file's bytes (no JSON parsing) finds where each part starts and the
    number of its first line."""

    layout = "jsonl"
    total_rows = None

    def __init__(self, jsonl: Path, images: Path, options: BuildOptions):
        self.jsonl, self.images, self.options = jsonl, images, options
        self.files = [jsonl, images] if images.is_file() else [jsonl]
        try:
            _image_store(images, *file_key(images))  # fail now, not mid-build, on a damaged archive or folder
            self.parts = _line_parts(jsonl, PART_LINES)
        except OSError as error:  # a file the system cannot read (EIO, no permission); BadZipFile is no OSError
            raise UserError(f"cannot read {error.filename or jsonl}: {error.strerror or error}; check the file, "
                            "or re-download it") from None

    def read_part(self, part: tuple[int, int, int]) -> Iterator[Example | Reject]:
        start, size, first_line = part
        try:
            with self.jsonl.open("rb") as handle:
                handle.seek(start)
                data = handle.read(size)
        except OSError as error:
            raise UserError(f"cannot read {self.jsonl}: {error.strerror or error}; check the file, or re-download it") from None
        store = _image_store(self.images, *file_key(self.images))
        # decoded as the whole file would be read in text mode: the same lines, the same numbers,
        # and a byte-order mark read as one (only the first part starts the file)
        encoding = "utf-8-sig" if start == 0 else "utf-8"
        lines = io.TextIOWrapper(io.BytesIO(data), encoding=encoding, errors="replace")
        for number, line in enumerate(lines, start=first_line):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (ValueError, RecursionError) as error:  # ValueError: also an integer past 4300 digits;
                # RecursionError: nested past Python's limit
                yield Reject(NAME, f"line {number}", RejectReason.JSON_INVALID, f"{type(error).__name__}: {str(error)[:200]}")
                continue
            if not isinstance(row, dict):
                yield Reject(NAME, f"line {number}", RejectReason.ROW_MALFORMED, "line is not a JSON object")
                continue
            row["_position"] = f"line {number}"
            try:
                image = store.get(str(row.get("id", "")))
            except ImageFileError as error:  # not a regular file, over the size cap, damaged, ambiguous
                yield Reject(NAME, str(row.get("id") or row["_position"]), error.reason, error.detail)
                continue
            yield _example(row, image, self.options)


def _line_parts(path: Path, lines_per_part: int) -> list[tuple[int, int, int]]:
    """(byte offset, byte size, number of the first line) of each run of `lines_per_part`
    lines. Parts end after a newline byte; lines are numbered as text mode counts them
    (\n, \r\n and a lone \r each end one)."""
    parts, start, number = [], 0, 1
    with path.open("rb") as handle:
        while chunk := b"".join(islice(handle, lines_per_part)):
            parts.append((start, len(chunk), number))
            number += chunk.count(b"\n") + chunk.count(b"\r") - chunk.count(b"\r\n")
            start += len(chunk)
    return parts


@lru_cache(maxsize=2)
def _image_store(location: Path, *_key) -> _ImageStore:
    """Opened once per process (an archive's directory of 80k names is read once); see `file_key`."""
    return _ImageStore(location)


class _ImageStore:
    """Images by id from `merged_images.zip` or an unzipped `merged_images/` folder. Two files
    for one id (`x.jpg` and `x.png`) are not guessed between: the row is `image_ambiguous`."""

    def __init__(self, location: Path):
        self.location = location
        self._zip = zipfile.ZipFile(location) if location.is_file() else None
        names = self._zip.namelist() if self._zip else [p.name for p in location.iterdir()] if location.is_dir() else []
        self._by_id: dict[str, list[str]] = {}
        for name in sorted(set(names)):  # a name the archive holds twice is one file (the last copy)
            if not name.endswith("/"):
                self._by_id.setdefault(Path(name).stem, []).append(name)

    def get(self, image_id: str) -> tuple[bytes, str] | None:
        names = self._by_id.get(image_id)
        if names is None:
            return None
        if len(names) > 1:
            listed = ", ".join(repr(name[-100:]) for name in names[:3]) + (" ..." if len(names) > 3 else "")
            raise ImageFileError(RejectReason.IMAGE_AMBIGUOUS, f"{len(names)} image files for id {image_id[:100]!r}: {listed}")
        data = read_archive_member(self._zip, names[0]) if self._zip else read_image_file(self.location / names[0])
        return data, Path(names[0]).name


def open_snapshot(folder: Path, options: BuildOptions):
    parquet = sorted((folder / "data").glob("*.parquet"))
    if parquet:
        return ParquetReader(parquet, partial(_parquet_example, options=options), _parquet_columns(options),
                             prepare=partial(_with_scores, aspects=tuple(options.aspects)))
    jsonl = folder / "vlfeedback_80k.jsonl"
    if not jsonl.is_file():
        found = sorted(folder.glob("*.jsonl"))
        jsonl = found[0] if len(found) == 1 else jsonl
    if jsonl.is_file():
        archive = folder / "merged_images.zip"
        images = archive if archive.is_file() else folder / "merged_images"
        if not images.exists():
            raise UserError(f"{folder} has {jsonl.name} but neither merged_images.zip nor merged_images/")
        try:
            return _JsonlReader(jsonl, images, options)
        except zipfile.BadZipFile:
            raise UserError(f"{images} is not a readable zip archive; re-download it") from None
    raise UserError(
        f"{folder} does not look like a VLFeedback snapshot: expected data/*.parquet, "
        "or vlfeedback_80k.jsonl with merged_images.zip"
    )


SOURCE = SourceSpec(
    name=NAME,
    hub_repo="MMInstruction/VLFeedback",
    hub_files=("data/*.parquet",),
    license="unknown",  # the card states none
    homepage="https://vlf-silkie.github.io",
    citation="""@article{li2023silkie,
  title={Silkie: Preference Distillation for Large Visual Language Models},
  author={Li, Lei and Xie, Zhihui and Li, Mukai and Chen, Shunian and Wang, Peiyi and Chen, Liang and Yang, Yazheng and Wang, Benyou and Kong, Lingpeng},
  journal={arXiv preprint arXiv:2312.10665},
  year={2023}
}""",
    summary="80k multimodal instructions, each with four completions rated 1-5 by GPT-4V on "
    "helpfulness, ethical considerations and visual faithfulness.",
    open=open_snapshot,
)
