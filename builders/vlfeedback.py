"""VLFeedback (`MMInstruction/VLFeedback`): four GPT-4V-rated completions per prompt.

Layouts read. The repository's main branch holds `vlfeedback_80k.jsonl` with the images in
`merged_images.zip` (`merged_images/<id>.jpg`; that folder unzipped is read too), beside files
the build does not read (`instruction_source.jsonl`, the loading script `VLFeedback.py`). The
Hub's parquet conversion (revision `refs/convert/parquet`) holds `default/train/NNNN.parquet`,
the image embedded in the column the loading script names `img_path`; other users' re-uploads
hold `data/*.parquet` with an `image` column. Both parquet copies store the completions as a
struct of lists. Parquet wins when a folder holds both; the manifest's `layout` says which was
read (`parquet`, `converted-parquet` or `jsonl`). An image column that is not an Image struct
(`struct<bytes, path>`) is no crash: its rows are rejected as `image_missing`.

Pairing, as its authors and LLaVA-Critic did: a completion's score is the mean of its
numeric aspect ratings (`--aspects`); a completion with a rating that is not a number (or
ratings whose mean overflows, like 1e308), or an empty response, takes part in no pair. Each
unordered pair of usable completions, in source order (`itertools.combinations`), has a gap:
the difference of their scores rounded to 6 decimals. A pair of identical texts is filtered
as `identical_responses`; a gap too wide for a float (1e308 against -1e308) as
`gap_not_finite`; a gap of 0 is a tie (offered to `--keep-ties`); a gap up to `--margin` is
`below_margin`; a wider one passes, its higher-scored response the better. `--pairs-per-prompt
all` offers every passing pair, then every tie; `max-gap` offers one: the widest passing pair
(the first of equals), else the first tie, and counts the others as `not_widest`. A row pairs
its first MAX_COMPLETIONS completions (VLFeedback has four): the others take part in no pair and
are counted as the note `completions_over_cap`, so no row can ask for millions of pairs. Every
layout is paired a batch of rows at a time (`_pairs_of_rows`, numpy over the pairs); the Hub's
parquet is scored from its columns, JSON Lines (and parquet laid out otherwise) row by row.

Rejects: unparsable JSON line (or one nested past Python's recursion limit, or holding an
integer past Python's 4300 digits), a row missing its fields or with an id of only whitespace,
a missing image (or one that is not a regular file), an image over the size cap
(`image_file_too_large`), a damaged archive member (`image_undecodable`), two image files for
one id (`x.jpg` and `x.png`: `image_ambiguous`), fewer than two rated completions
(`rating_unparsable`) or fewer than two non-empty ones (`empty_response`), an empty prompt.
A byte-order mark at the start of the JSON Lines file is read as one. GPT-4V's `Rationale`
text is read and dropped here: it never leaves.
"""

from __future__ import annotations

import math
import zipfile
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from critic_data import UserError
from critic_data.builders.options import BuildOptions
from critic_data.builders.readers import JsonLinesReader, ParquetReader, SourceSpec, image_from_struct, image_store
from critic_data.builders.records import Example, Pair
from critic_data.builders.text import clean_question, clean_response, clean_responses
from critic_data.files import ImageFileError
from critic_data.schemas import Reject, RejectReason

NAME = "vlfeedback"
MAX_COMPLETIONS = 64  # completions of a row that take part in pairs: at most 2016 pairs per row

# What a row's completions give (`_pairs_of_rows`): its pairs, how many it formed, the pairs each rule
# filtered and per-completion notes; or the reason the row is rejected.
Paired = tuple[list[Pair], int, dict[str, int], dict[str, int]] | RejectReason


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


def _completion_dicts(raw) -> list[dict] | None:
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


def _example(row: dict, position: str, image: tuple[bytes, str | None] | None, options: BuildOptions,
             paired: tuple[int, Paired] | None) -> Example | Reject:
    """A row as an Example, given its number of completions and what `_pairs_of_rows` makes of
    them (None: the row has no list of completions)."""
    source_id = row.get("id")
    if not isinstance(source_id, (str, int)) or not str(source_id).strip():  # the id names the row's image
        return Reject(NAME, position, RejectReason.ROW_MALFORMED, "no id")
    source_id = str(source_id)
    if not isinstance(row.get("prompt"), str) or paired is None:
        return Reject(NAME, source_id, RejectReason.ROW_MALFORMED, "needs a string prompt and a list of completions")
    question = clean_question(row["prompt"])
    if not question:
        return Reject(NAME, source_id, RejectReason.EMPTY_QUESTION, "prompt is empty once <image> is removed")
    if image is None:
        return Reject(NAME, source_id, RejectReason.IMAGE_MISSING, f"no image for id {source_id}")
    completions, result = paired
    if isinstance(result, RejectReason):
        return Reject(NAME, source_id, result, f"fewer than two usable completions out of {completions}")
    pairs, formed, filtered, notes = result
    return Example(NAME, source_id, question, [image], pairs, formed, filtered, notes)


def _rows_paired(raw_completions: list, options: BuildOptions) -> list[tuple[int, Paired] | None]:
    """`_pairs_of_rows` of rows read as Python objects (JSON Lines, and parquet laid out otherwise
    than the Hub's struct of lists), each row's completions cleaned and scored one by one. The
    texts go to Arrow as UTF-8 bytes that keep a lone surrogate (a JSON `\\ud800` escape), which
    Arrow's strings cannot hold: the pairs are the same, and the row is rejected later for it."""
    completions = [_completion_dicts(raw) for raw in raw_completions]
    texts = pa.array([None if listed is None else [_response(c).encode("utf-8", "surrogatepass") for c in listed]
                      for listed in completions], pa.list_(pa.binary()))
    scores = pa.array([None if listed is None else [_score(c.get("annotations"), options.aspects) for c in listed]
                       for listed in completions], pa.list_(pa.float64()))
    return _pairs_of_rows(texts, scores, options)


def _response(completion: dict) -> str:
    response = completion.get("response")
    return clean_response(response) if isinstance(response, str) else ""


def _parquet_rows(options: BuildOptions, image_column: str, file_name: str, first: int,
                  rows: pa.Table) -> list[Example | Reject]:
    """A ParquetReader converter: the rows' responses are cleaned, scored and paired for all of them at once."""
    table, paired = _paired(rows, options)
    rows = table.to_pylist()
    if paired is None:
        paired = _rows_paired([row.get("completions") for row in rows], options)
    return [_example(row, f"{file_name}:{first + offset}", image_from_struct(row.get(image_column)), options,
                     paired[offset]) for offset, row in enumerate(rows)]


def _paired(table: pa.Table, options: BuildOptions) -> tuple[pa.Table, list[tuple[int, Paired] | None] | None]:
    """The rows without their completions and, per row, its number of completions and what
    `_pairs_of_rows` makes of them, read from the table's columns; the table unchanged and None,
    so that rows are read as Python objects (`_rows_paired`), when its completions are laid out
    otherwise than the Hub's struct of lists, or a row has ratings but no list of responses
    (read one by one, its completions' responses are empty)."""
    try:
        completions = table["completions"].combine_chunks()
        annotations, responses = completions.field("annotations"), completions.field("response")
        if not all(pa.types.is_list(a.type) or pa.types.is_large_list(a.type) for a in (annotations, responses)):
            return table, None  # fixed-size lists, list views: the rows read as Python lists
        if pc.any(pc.and_(completions.is_valid(), responses.is_null())).as_py():
            return table, None
        total = None
        for aspect in options.aspects:
            # pc.struct_field, not .field(): a null annotation's child may hold a value
            rating = _numbers(pc.struct_field(annotations.values, [aspect, "Rating"]))
            total = rating if total is None else pc.add(total, rating)  # a null stays null
        texts = clean_responses(responses.values)
        means = pc.divide(total, float(len(options.aspects)))
        # as `_score`: an overflowed sum is unrated
        means = pc.if_else(pc.is_finite(means), means, pa.scalar(None, pa.float64()))
        scores = pa.ListArray.from_arrays(annotations.offsets, means, mask=annotations.is_null())
        # a row without completions has no list of completions
        texts = pa.ListArray.from_arrays(responses.offsets, texts, mask=pc.fill_null(completions.is_null(), True))
    except (KeyError, AttributeError, TypeError, pa.ArrowException):
        return table, None
    return table.drop_columns(["completions"]), _pairs_of_rows(texts, scores, options)


def _pairs_of_rows(texts: pa.ListArray, scores: pa.ListArray, options: BuildOptions) -> list[tuple[int, Paired] | None]:
    """The pairing rule (the module's docstring) applied to every row of a batch at once, numpy
    over the pairs: per row, its number of completions and its pairs, how many it formed, the
    pairs each rule filtered and per-completion notes, or the reason the row is rejected; None
    for a row without a list of completions, or with more or fewer scores than responses.
    `texts`: each row's cleaned responses, strings or UTF-8 bytes (a null list: the row has
    none); `scores`: each completion's `_score` (a null list: none is rated)."""
    count = np.diff(texts.offsets.to_numpy())
    has_scores = scores.is_valid().to_numpy(zero_copy_only=False)
    listed = texts.is_valid().to_numpy(zero_copy_only=False) & (~has_scores
                                                                 | (np.diff(scores.offsets.to_numpy()) == count))
    capped = np.where(listed, np.minimum(count, MAX_COMPLETIONS), 0)
    completions = _completions_in_pairs(texts, scores, has_scores, capped)
    rated, usable = (np.bincount(completions.row[which], minlength=len(count))
                     for which in (completions.rated, completions.usable))
    pairing = (rated >= 2) & (usable >= 2)
    tallies, pairs = _offered_pairs_and_tallies(texts.values, completions, usable, pairing, options)

    results: list[tuple[int, Paired] | None] = []
    for r, (n, is_listed, n_capped, n_rated, n_usable, tally) in enumerate(zip(
            count.tolist(), listed.tolist(), capped.tolist(), rated.tolist(), usable.tolist(), tallies.tolist())):
        if not is_listed:
            results.append(None)
        elif n_rated < 2:
            results.append((n, RejectReason.RATING_UNPARSABLE))
        elif n_usable < 2:
            results.append((n, RejectReason.EMPTY_RESPONSE))
        else:
            identical, not_finite, below_margin, passing, ties = tally
            filtered = {rule: k for rule, k in (("identical_responses", identical), ("gap_not_finite", not_finite),
                                                ("below_margin", below_margin)) if k}
            if options.pairs_per_prompt != "all":
                filtered["not_widest"] = passing + ties - len(pairs[r])
            notes = {name: k for name, k in (("completions_over_cap", n - n_capped),
                                             ("completions_unrated", n_capped - n_rated),
                                             ("completions_empty", n_rated - n_usable)) if k}
            results.append((n, (pairs[r], n_usable * (n_usable - 1) // 2, filtered, notes)))
    return results


class _Completions(NamedTuple):
    """The completions of a batch that take part in pairs (each row's first MAX_COMPLETIONS), in order."""

    row: np.ndarray  # the row of each
    text: np.ndarray  # its text, an index into texts.values
    score: np.ndarray  # its score, NaN: unrated
    lengths: np.ndarray  # the UTF-8 length of every text of texts.values
    rated: np.ndarray  # which are rated
    usable: np.ndarray  # the indices of those rated with a text that is not empty


def _completions_in_pairs(texts: pa.ListArray, scores: pa.ListArray, has_scores: np.ndarray,
                          capped: np.ndarray) -> _Completions:
    """The completions of a batch that take part in pairs: each row's first `capped` ones."""
    row = np.repeat(np.arange(len(capped)), capped)
    within = np.arange(len(row)) - np.repeat(np.cumsum(capped) - capped, capped)
    text = texts.offsets.to_numpy()[row] + within
    score = np.full(len(row), np.nan)
    in_list = has_scores[row]
    score[in_list] = scores.values.to_numpy(zero_copy_only=False)[scores.offsets.to_numpy()[row[in_list]]
                                                                  + within[in_list]]
    lengths = pc.binary_length(texts.values).to_numpy(zero_copy_only=False)
    rated = ~np.isnan(score)
    return _Completions(row, text, score, lengths, rated, np.flatnonzero(rated & (lengths[text] > 0)))


def _offered_pairs_and_tallies(values: pa.Array, completions: _Completions, usable: np.ndarray, pairing: np.ndarray,
                               options: BuildOptions) -> tuple[np.ndarray, list[list[Pair]]]:
    """Per row (`usable`: its usable completions; `pairing`: the rows that pair), how many of
    its pairs were identical, not finite, below the margin, passing and ties, and the pairs it
    offers: the rows with as many usable completions are paired together, a matrix of pairs."""
    text, score = completions.text, completions.score
    first_usable = np.cumsum(usable) - usable  # each row's first entry in completions.usable
    tallies = np.zeros((len(usable), 5), np.int64)
    offered = []  # (row, tie, gap, better, worse) of the pairs offered, per group of rows
    for size in np.unique(usable[pairing]).tolist():
        rows = np.flatnonzero(pairing & (usable == size))
        first, second = np.triu_indices(size, 1)  # the order of itertools.combinations
        # a row of pairs per row
        a, b = (completions.usable[first_usable[rows][:, None] + which] for which in (first, second))
        with np.errstate(over="ignore"):
            gap = _rounded(np.abs(score[a] - score[b]))
        identical = _same_text(values, completions.lengths, text[a], text[b])
        finite = ~identical & np.isfinite(gap)
        tie, passing = finite & (gap == 0), finite & (gap > options.margin)
        below = finite & (gap != 0) & ~passing
        tallies[rows] = np.stack([m.sum(axis=1) for m in (identical, ~identical & ~finite, below, passing, tie)],
                                 axis=1)
        a_better = score[a] > score[b]
        better, worse = np.where(a_better, text[a], text[b]), np.where(a_better, text[b], text[a])
        if options.pairs_per_prompt == "all":  # every passing pair, then every tie, in order
            picks = [(*np.nonzero(passing), False), (*np.nonzero(tie), True)]
        else:  # the widest passing pair (the first of equals), else the first tie
            some = passing.any(axis=1)
            tied = ~some & tie.any(axis=1)
            picks = [(np.flatnonzero(some), np.argmax(np.where(passing, gap, -np.inf), axis=1)[some], False),
                     (np.flatnonzero(tied), np.argmax(tie, axis=1)[tied], True)]
        for k, column, is_tie in picks:
            offered.append((rows[k], np.full(len(k), is_tie), gap[k, column],
                            (text[a] if is_tie else better)[k, column], (text[b] if is_tie else worse)[k, column]))
    pairs: list[list[Pair]] = [[] for _ in range(len(usable))]
    if offered:
        row_of, tie_of, gap_of, better_of, worse_of = (np.concatenate(column) for column in zip(*offered))
        order = np.lexsort((tie_of, row_of))  # by row, its passing pairs before its ties (a stable sort)
        for r, is_tie, gap, better, worse in zip(row_of[order].tolist(), tie_of[order].tolist(), gap_of[order].tolist(),
                                                 _texts(values.take(better_of[order])),
                                                 _texts(values.take(worse_of[order]))):
            pairs[r].append(Pair(better, worse, gap, tie=is_tie))
    return tallies, pairs


def _texts(values: pa.Array) -> list[str]:
    """Texts as Python strings; UTF-8 bytes decoded as `_rows_paired` encoded them."""
    if pa.types.is_binary(values.type):
        return [text.decode("utf-8", "surrogatepass") for text in values.to_pylist()]
    return values.to_pylist()


def _rounded(gaps: np.ndarray) -> np.ndarray:
    """`round(gap, 6)` of each gap, as Python rounds it (to the nearest decimal, exactly: numpy's
    own `round` scales by 10**6 first, and may land on the other side of a half). A batch's gaps
    take few distinct values: each is rounded once."""
    values, where = np.unique(gaps, return_inverse=True)
    return np.array([round(value, 6) for value in values.tolist()])[where.reshape(-1)].reshape(gaps.shape)


def _same_text(values: pa.StringArray, lengths: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Whether texts `first` and `second` (indices into `values`; `lengths`: their UTF-8 lengths)
    are the same, element-wise; only texts of one length are compared."""
    same = lengths[first] == lengths[second]
    where = np.flatnonzero(same)
    if len(where):
        equal = pc.equal(values.take(first.reshape(-1)[where]), values.take(second.reshape(-1)[where]))
        same.reshape(-1)[where] = equal.to_numpy(zero_copy_only=False)
    return same


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


def _parquet_columns(options: BuildOptions, image_column: str) -> list[str]:
    """Only what pairing needs: GPT-4V's rationales are never even read from parquet."""
    ratings = [f"completions.annotations.list.element.{aspect}.Rating" for aspect in options.aspects]
    return ["id", "prompt", "completions.response", *ratings, image_column]


# Parquet copies, the first found wins: (folder of the shards, the manifest's name for the layout)
PARQUET_LAYOUTS = (("data", "parquet"), ("default/train", "converted-parquet"))


def _image_column(shard: Path) -> str:
    """`image` (re-uploads), or `img_path` where a shard has only that (the Hub's conversion keeps
    the loading script's name). A shard that cannot be read is named by ParquetReader, which
    checks first that it is a regular file: a FIFO would block this read forever."""
    if not shard.is_file():
        return "image"
    try:
        names = pq.read_schema(shard).names
    except Exception:  # pyarrow raises several types for a damaged file
        return "image"
    return "img_path" if "img_path" in names and "image" not in names else "image"


def _jsonl_rows(images: Path, options: BuildOptions, rows: list[tuple[str, dict]]) -> list[Example | Reject]:
    """A JsonLinesReader converter: rows of `vlfeedback_80k.jsonl` (with their positions), paired
    together, each with its image from the store."""
    store = image_store(images)
    paired = _rows_paired([row.get("completions") for _, row in rows], options)
    return [_jsonl_example(store, position, row, options, row_paired)
            for (position, row), row_paired in zip(rows, paired, strict=True)]


def _jsonl_example(store, position: str, row: dict, options: BuildOptions,
                   paired: tuple[int, Paired] | None) -> Example | Reject:
    try:
        image = store.get(str(row.get("id", "")))
    except ImageFileError as error:  # not a regular file, over the size cap, damaged, ambiguous
        return Reject(NAME, str(row.get("id") or position), error.reason, error.detail)
    return _example(row, position, image, options, paired)


def open_snapshot(folder: Path, options: BuildOptions):
    for shards, layout in PARQUET_LAYOUTS:
        if parquet := sorted((folder / shards).glob("*.parquet")):
            image_column = _image_column(parquet[0])
            reader = ParquetReader(parquet, partial(_parquet_rows, options, image_column),
                                   _parquet_columns(options, image_column), image_column=image_column)
            reader.layout = layout
            return reader
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
            image_store(images)  # fail now, not mid-build, on a damaged archive or an unreadable folder
        except zipfile.BadZipFile:
            raise UserError(f"{images} is not a readable zip archive; re-download it") from None
        except OSError as error:  # a file the system cannot read (EIO, no permission)
            raise UserError(f"cannot read {error.filename or images}: {error.strerror or error}; check the file, "
                            "or re-download it") from None
        return JsonLinesReader(NAME, jsonl, [jsonl, images] if images.is_file() else [jsonl],
                               partial(_jsonl_rows, images, options))
    raise UserError(
        f"{folder} does not look like a VLFeedback snapshot: expected vlfeedback_80k.jsonl with merged_images.zip "
        "(main), default/train/*.parquet (revision refs/convert/parquet) or data/*.parquet"
    )


SOURCE = SourceSpec(
    name=NAME,
    hub_repo="MMInstruction/VLFeedback",
    # main's files and its parquet conversion's: a revision holds one of them (a commit pinned from
    # either is read alike); instruction_source.jsonl and the loading script are not read
    hub_files=("vlfeedback_80k.jsonl", "merged_images.zip", "default/train/*.parquet"),
    license="unknown",  # the card states none
    homepage="https://vlf-silkie.github.io",
    citation="""@article{li2023silkie,
  title={Silkie: Preference Distillation for Large Visual Language Models},
  author={Li, Lei and Xie, Zhihui and Li, Mukai and Chen, Shunian and Wang, Peiyi and Chen, Liang and Yang, Yazheng \
and Wang, Benyou and Kong, Lingpeng},
  journal={arXiv preprint arXiv:2312.10665},
  year={2023}
}""",
    summary="80k multimodal instructions, each with four completions rated 1-5 by GPT-4V on "
    "helpfulness, ethical considerations and visual faithfulness.",
    open=open_snapshot,
)
