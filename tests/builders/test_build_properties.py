"""Property tests: whatever the rows hold, the build never crashes and loses no row."""

from __future__ import annotations

import json
import math
import re
import tempfile
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from critic_data import UserError
from critic_data.builders.images import check_image
from critic_data.builders.options import BuildOptions
from critic_data.builders.pipeline import build
from critic_data.builders.text import _BLANK, clean_question, clean_response, clean_responses
from critic_data.schemas import RejectReason
from tests.snapshots import ASPECTS, corrupt_jpeg, jpeg

junk = st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8),
                 st.lists(st.integers(), max_size=2))
rating = st.one_of(st.sampled_from(["1", "2", "3", "4", "5", " 4 ", "N/A", "", "nan", "inf", "3.5", "1e308", "-1e308"]),
                   st.integers(0, 6), junk)
annotations = st.one_of(
    st.fixed_dictionaries({aspect: st.one_of(st.fixed_dictionaries({"Rating": rating,
                                                                    "Rationale": st.just("RATIONALE-SECRET")}), junk)
                           for aspect in ASPECTS}),
    junk,
)
completion = st.fixed_dictionaries({
    "annotations": annotations,
    "model": st.text(max_size=5),
    "response": st.one_of(st.sampled_from(["A cat.", "A dog.", "A cat.", "  ", "【1†source】", "Two birds <image>",
                                           "\u200b\u2060",
                                           "A \ud800 cat."]), st.text(max_size=30), junk),
})
row = st.fixed_dictionaries({
    "id": st.one_of(st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 3), junk),
    "prompt": st.one_of(st.sampled_from(["What is this?", "<image>", "<image>\nCount them.", "<image>\ufeff",
                                         "Is \udfff this?"]), junk),
    "completions": st.one_of(st.lists(completion, max_size=5), junk,
                             st.fixed_dictionaries({"response": st.lists(st.text(max_size=5), max_size=3)})),
})
line = st.one_of(row.map(json.dumps), st.sampled_from(['{"id": "x"', "[1, 2]", "null", '"text"', "{}", "[" * 5000]))


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(line, min_size=1, max_size=12), keep_ties=st.integers(0, 2),
       pairs=st.sampled_from(["max-gap", "all"]))
def test_malformed_rows_never_crash_and_are_all_accounted_for(lines, keep_ties, pairs):
    with tempfile.TemporaryDirectory() as tmp:
        snapshot = Path(tmp) / "snapshot"
        snapshot.mkdir()
        (snapshot / "vlfeedback_80k.jsonl").write_text("\n".join(lines) + "\n")
        with zipfile.ZipFile(snapshot / "merged_images.zip", "w") as archive:
            archive.writestr("merged_images/a.jpg", jpeg(1))
            archive.writestr("merged_images/b.jpg", jpeg(2))
            archive.writestr("merged_images/c.jpg", corrupt_jpeg(3))
            archive.writestr("merged_images/0.jpg", jpeg(4))
        out = Path(tmp) / "out"
        try:
            manifest = build(BuildOptions(out=out, inputs={"vlfeedback": snapshot}, keep_ties=keep_ties,
                                          pairs_per_prompt=pairs, test_size=0.3))
        except UserError as error:  # no row kept: one line that accounts for every row, and no folder
            assert str(error).startswith(f"no rows kept (vlfeedback: {len(lines)} rows read, ")
            assert not out.exists()
            return
        counts = manifest["sources"]["vlfeedback"]["counts"]
        assert counts["rows_read"] == len(lines)
        assert counts["rows_used"] + counts["rows_rejected"] == counts["rows_read"]
        assert len((out / "rejects.jsonl").read_text().splitlines()) == counts["rows_rejected"]
        assert counts["pairs_formed"] == (counts["pairs_kept"] + sum(counts["pairs_filtered"].values())
                                          + counts["duplicates_dropped"])
        written = sum(pq.read_metadata(path).num_rows for path in (out / "data").glob("*.parquet"))
        assert written == counts["pairs_kept"]
        for path in out.rglob("*"):
            if path.is_file():
                assert b"RATIONALE-SECRET" not in path.read_bytes()


markup = st.lists(st.sampled_from(["【", "】", "3†source", "<image>", "<ima", "ge>", "<|", "|>", "im_end",
                                   "<|image_pad|>",
                                   " ", "\n", "a"]), max_size=20).map("".join)


@given(markup)
def test_cleaning_leaves_no_marker_and_is_idempotent(text):
    response, question = clean_response(text), clean_question(text)
    assert clean_response(response) == response and clean_question(question) == question
    assert "<image>" not in question and "<image>" not in response
    assert "【3†source】" not in response
    assert not re.search(r"<\|\w+\|>", response) and not re.search(r"<\|\w+\|>", question)


blanky = st.lists(st.one_of(st.sampled_from(list(_BLANK)),
                            st.sampled_from(["a", "é", "【3†source】", "<|im_end|>", " \n",
                                               "\t\n", "<|", "\n"])),
                 max_size=12).map("".join)


@settings(deadline=None)
@given(st.lists(st.one_of(st.none(), blanky, markup, st.text(max_size=12)), max_size=20), st.integers(0, 3),
       st.integers(0, 3))
def test_cleaning_a_column_at_once_is_cleaning_each_text(texts, start, cut):
    # the parquet path cleans a row group's responses column-wise (a null, not text, becomes "")
    assert clean_responses(pa.array(texts, pa.string())).to_pylist() == [
        clean_response(text) if text is not None else "" for text in texts]
    # a slice of a column: its bytes before and after are not its texts'
    part = texts[start : len(texts) - cut]
    assert clean_responses(pa.array(texts, pa.string()).slice(start, len(part))).to_pylist() == [
        clean_response(text) if text is not None else "" for text in part]


def test_clean_text_examples():
    assert clean_response("A bike【3†source】 on a wall【12†source】.") == "A bike on a wall."
    assert clean_question("<image>\nWhat is this?") == "What is this?"
    assert clean_question("Compare <image> and <image> please") == "Compare and please"
    assert clean_question("<ima<image>ge>What?") == "What?"
    assert clean_response("Two cats.<|im_end|>\n<|im_start|>assistant") == "Two cats.\nassistant"
    assert clean_response("a <|im【3†source】_end|>b") == "a b"
    assert clean_question("Is <|image_pad|>this a cat?") == "Is this a cat?"
    assert clean_response("x <| y |> z") == "x <| y |> z"  # not a marker: left as written
    assert clean_response("<image>\nA cat <image> on a mat<ima<image>ge>.") == "A cat on a mat."
    # not placeholders
    assert clean_response("HTML's <img> tag, <Image>, <image 1>") == "HTML's <img> tag, <Image>, <image 1>"


def _png(size=(40, 30)) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("level", ["structure", "decode"])
def test_check_image_decides_by_content(level):
    assert check_image(jpeg(0), level=level) is None
    assert check_image(_png(), level=level) is None
    assert check_image(corrupt_jpeg(0), level=level)[0] is RejectReason.IMAGE_UNDECODABLE
    assert check_image(jpeg(0)[:-2], level=level)[0] is RejectReason.IMAGE_UNDECODABLE  # no end-of-image marker
    assert check_image(_png()[:-20], level=level)[0] is RejectReason.IMAGE_UNDECODABLE
    assert check_image(b"", level=level)[0] is RejectReason.IMAGE_MISSING
    assert check_image(b"GIF89a not really", level=level)[0] is RejectReason.IMAGE_UNDECODABLE
    assert check_image(jpeg(0, size=(64, 48)), max_pixels=64 * 48 - 1, level=level)[0] is RejectReason.IMAGE_TOO_LARGE


def test_an_impossible_huffman_table_is_refused_at_both_levels():
    """Code counts summing far past 256 symbols: a header PIL's own parser reads without
    complaint; libjpeg-turbo's header parse (the structure check) refuses it."""
    data = bytearray(jpeg(0))
    dht = data.index(b"\xff\xc4")
    data[dht + 5 : dht + 21] = b"\xff" * 16
    assert check_image(bytes(data), level="structure")[0] is RejectReason.IMAGE_UNDECODABLE
    assert check_image(bytes(data), level="decode")[0] is RejectReason.IMAGE_UNDECODABLE


def _with_thumbnail(data: bytes) -> bytes:
    """`data` with an EXIF-style APP1 segment holding a whole small JPEG (its own scan and
    end-of-image marker) right after the start-of-image marker."""
    thumbnail = jpeg(1, size=(16, 12))
    payload = b"Exif\x00\x00" + thumbnail
    return data[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + data[2:]


def test_a_truncated_jpeg_is_refused_even_when_its_thumbnail_is_complete():
    whole = _with_thumbnail(jpeg(0))
    assert check_image(whole) is None
    cut = whole[: len(whole) - 200]  # the main image's scan cut short; the thumbnail's end marker remains
    assert cut.rfind(b"\xff\xd9") > 0
    assert check_image(cut)[0] is RejectReason.IMAGE_UNDECODABLE
    assert check_image(cut, level="decode")[0] is RejectReason.IMAGE_UNDECODABLE


rating_text = st.one_of(
    st.none(),
    st.text(alphabet="0123456789+-.eE _naifNA/ ٣", max_size=8),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(-10, 10).map(lambda n: f" {n} "),
)


@given(st.lists(rating_text, max_size=30))
def test_ratings_read_a_row_group_at_a_time_equal_ratings_read_one_by_one(values):
    """VLFeedback's vectorised rating parser agrees with Python's float() on every text."""
    import pyarrow as pa

    from critic_data.builders.vlfeedback import _number, _numbers

    assert _numbers(pa.array(values, pa.string())).to_pylist() == [_number(v) for v in values]


@given(st.lists(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)), max_size=30))
def test_numeric_ratings_read_alike(values):
    import pyarrow as pa

    from critic_data.builders.vlfeedback import _number, _numbers

    assert _numbers(pa.array(values, pa.float64())).to_pylist() == [_number(v) for v in values]


@given(st.lists(st.sampled_from([b"{}", b"x", b"", b"\r", b"\r\n", b"\n", b"\xff\xfe", "é".encode(), b" ",
                                 b"\xef\xbb\xbf"]), max_size=40),
       st.integers(1, 5))
def test_json_lines_whole_or_in_parts_give_the_lines_numbers_and_values_of_text_mode(pieces, lines_per_part):
    """Whatever newline styles and bytes a JSON Lines file holds, reading it in parts (as the
    build's workers do) gives the numbered non-blank lines that reading it whole in text mode
    gives, parsed alike; and eval's and best-of-n's `json_lines` numbers them alike."""
    from critic_data.builders.readers import line_parts
    from critic_data.files import json_lines, json_values

    def parsed(value):
        return (type(value).__name__, str(value)) if isinstance(value, Exception) else value

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rows.jsonl"
        path.write_bytes(b"".join(pieces))
        with path.open(encoding="utf-8-sig", errors="replace") as whole:
            expected = []
            for number, line in enumerate(whole, start=1):
                if line.strip():
                    try:
                        expected.append((number, json.loads(line)))
                    except (ValueError, RecursionError) as error:
                        expected.append((number, parsed(error)))
        data = path.read_bytes()
        got = [(number, parsed(value)) for start, size, first in line_parts(path, lines_per_part)
               for number, _, value in json_values(data[start : start + size], first, errors="replace")]
        numbers = [number for number, _, _ in json_lines(path)]
    assert got == expected
    assert numbers == [number for number, _ in expected]


@given(st.lists(st.integers(1, 30), min_size=1, max_size=12), st.integers(1, 40), st.integers(1, 4000))
def test_parquet_parts_are_runs_of_row_groups_within_both_bounds(group_rows, rows_per_batch, part_bytes):
    """Parts cover every row group once, in order, each part's first row where the one before
    ended; a part holds more than ROWS_PER_BATCH rows or PART_BYTES only as a single group."""
    from unittest import mock

    from critic_data.builders.readers import ParquetReader

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train-00000-of-00001.parquet"
        with pq.ParquetWriter(path, pa.schema([("text", pa.string())])) as writer:
            for number, rows in enumerate(group_rows):
                writer.write_table(pa.table({"text": [f"group {number} row {i} " * (1 + i % 5) for i in range(rows)]}))
        metadata = pq.ParquetFile(path).metadata
        with mock.patch.multiple("critic_data.builders.readers", ROWS_PER_BATCH=rows_per_batch, PART_BYTES=part_bytes):
            reader = ParquetReader([path], convert=None)
    assert [g for _, groups, _ in reader.parts for g in groups] == list(range(len(group_rows)))
    assert reader.total_rows == sum(group_rows)
    first = 0
    for index, groups, start in reader.parts:
        assert index == 0 and start == first
        rows = sum(group_rows[g] for g in groups)
        size = sum(metadata.row_group(g).total_byte_size for g in groups)
        assert len(groups) == 1 or (rows <= rows_per_batch and size <= part_bytes)
        first += rows


def _pairs(responses: list[str], scores: list[float | None], options: BuildOptions):
    """The pairing rule of vlfeedback.py's docstring, one row at a time in plain Python: the oracle
    the build's batch pairing (`_pairs_of_rows`) is checked against. `responses` cleaned ("" for
    a response that is not text), `scores` as `_score` gives them. The row's pairs, how many it
    formed, what rules filtered and per-completion notes; or the reason the row is rejected."""
    from collections import Counter
    from itertools import combinations

    from critic_data.builders.records import Pair
    from critic_data.builders.vlfeedback import MAX_COMPLETIONS

    notes: Counter = Counter()
    if len(responses) > MAX_COMPLETIONS:
        notes["completions_over_cap"] += len(responses) - MAX_COMPLETIONS
        responses, scores = responses[:MAX_COMPLETIONS], scores[:MAX_COMPLETIONS]
    rated = [(score, response) for response, score in zip(responses, scores) if score is not None]
    scored = [(score, response) for score, response in rated if response]
    notes.update({"completions_unrated": len(responses) - len(rated), "completions_empty": len(rated) - len(scored)})
    if len(rated) < 2:
        return RejectReason.RATING_UNPARSABLE
    if len(scored) < 2:
        return RejectReason.EMPTY_RESPONSE
    passing, ties, filtered = [], [], Counter()  # (gap, better, worse) of the passing pairs and the ties
    for (score_a, text_a), (score_b, text_b) in combinations(scored, 2):
        gap = round(abs(score_a - score_b), 6)
        if text_a == text_b:
            filtered["identical_responses"] += 1
        elif not math.isfinite(gap):
            filtered["gap_not_finite"] += 1
        elif gap == 0:
            ties.append((0.0, text_a, text_b))
        elif gap <= options.margin:
            filtered["below_margin"] += 1
        else:
            passing.append((gap, text_a, text_b) if score_a > score_b else (gap, text_b, text_a))
    if options.pairs_per_prompt == "all":
        offered = passing + ties
    else:
        offered = [max(passing, key=lambda pair: pair[0])] if passing else ties[:1]
        filtered["not_widest"] = len(passing) + len(ties) - len(offered)
    formed = len(scored) * (len(scored) - 1) // 2
    return [Pair(a, b, gap, tie=gap == 0) for gap, a, b in offered], formed, filtered, +notes


# a completion for pairing: a cleaned response and its score (None: unrated)
scored_completion = st.tuples(
    st.sampled_from(["", "A cat.", "A dog.", "A cat.", "é", "x" * 40]),
    st.one_of(st.none(), st.sampled_from([1.0, 4 / 3, 5 / 3, 2.0, 2.6, 3.0, 3.6, 5.0, 1e308, -1e308, 1e-7, 0.6 + 1e-9]),
              st.floats(-6, 6)),
)
# a row: None (no list of completions), its completions, and whether its scores are a null list
scored_row = st.one_of(st.none(), st.tuples(st.lists(scored_completion, max_size=8), st.booleans()))


def _batch_and_rows(rows: list, leading: int) -> tuple[pa.ListArray, pa.ListArray, list]:
    """The texts and scores list arrays of `rows` (sliced past `leading` rows, as a batch of a
    part is), and each row's (responses, scores) as `_pairs` reads them."""
    padding = [([("pad", 1.0)], False)] * leading
    every = padding + rows
    texts = pa.array([None if r is None else [t for t, _ in r[0]] for r in every], pa.list_(pa.string()))
    scores = pa.array([None if r is None or r[1] else [s for _, s in r[0]] for r in every], pa.list_(pa.float64()))
    one_by_one = [None if r is None else ([t for t, _ in r[0]], [None if r[1] else s for _, s in r[0]]) for r in rows]
    return texts.slice(leading), scores.slice(leading), one_by_one


def _plain(paired):
    """A `_pairs_of_rows` or `_pairs` outcome with its counters as dicts (a count of 0 is kept:
    `not_widest` is counted when 0, and no other count is)."""
    if paired is None or isinstance(paired[1], RejectReason):
        return paired
    n, (pairs, formed, filtered, notes) = paired
    return n, ([tuple(p) for p in pairs], formed, dict(filtered), dict(notes))


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.lists(scored_row, max_size=10), st.integers(0, 3), st.sampled_from(["max-gap", "all"]),
       st.sampled_from([0.0, 0.6, 1.5]))
def test_pairs_of_a_batch_are_the_pairs_of_each_row(rows, leading, pairs_per_prompt, margin):
    """`_pairs_of_rows` (numpy over a batch, what the build pairs every layout with) gives each
    row what the oracle `_pairs` (the rule, one row in plain Python) gives it: the same pairs in
    the same order, margins rounded alike, the same counts, notes and rejects."""
    from critic_data.builders.vlfeedback import _pairs_of_rows

    options = BuildOptions(out=Path("unused"), pairs_per_prompt=pairs_per_prompt, margin=margin)
    texts, scores, one_by_one = _batch_and_rows(rows, leading)
    expected = [None if row is None else (len(row[0]), _pairs(*row, options)) for row in one_by_one]
    assert [_plain(p) for p in _pairs_of_rows(texts, scores, options)] == [_plain(p) for p in expected]


@pytest.mark.parametrize("pairs_per_prompt", ["max-gap", "all"])
def test_pairs_of_a_batch_with_rows_over_the_completion_cap_and_mismatched_lists(pairs_per_prompt):
    """Rows of 70 and 64 completions (the cap: 64), with ties, identical responses and
    overflowing gaps among them, and a row with more scores than responses (malformed: None)."""
    import random

    from critic_data.builders.vlfeedback import MAX_COMPLETIONS, _pairs_of_rows

    rng = random.Random(0)
    options = BuildOptions(out=Path("unused"), pairs_per_prompt=pairs_per_prompt)
    rows = [([(rng.choice(["a", "b", "c", "", f"r{i}"]), rng.choice([None, 1.0, 2.0, 5 / 3, 1e308, -1e308]))
              for i in range(size)], False) for size in (70, MAX_COMPLETIONS, 3)]
    texts, scores, one_by_one = _batch_and_rows(rows, 1)
    expected = [(len(r[0]), _pairs(*r, options)) for r in one_by_one]
    got = _pairs_of_rows(texts, scores, options)
    assert [_plain(p) for p in got] == [_plain(p) for p in expected]
    assert got[0][1][3]["completions_over_cap"] == 6
    mismatched = pa.array([["a", "b"]], pa.list_(pa.string())), pa.array([[1.0, 2.0, 3.0]], pa.list_(pa.float64()))
    assert _pairs_of_rows(*mismatched, options) == [None]
