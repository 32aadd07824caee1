"""Damaged rows: each is one reject with its reason, never the end of a build.

Each test builds a small snapshot of one source's real layout with one kind of damage
planted, and checks that the build finishes, that the damaged row is rejected for the
right reason, that every other row is used, and that the accounting stays exact (rows
read = used + rejected, one reason each). Damage to a whole file (a corrupt parquet page,
an unreadable JSON file) is one line naming the file, exit 2, no traceback.
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from critic_data import UserError, files
from critic_data.builders import images as image_module
from critic_data.builders.images import check_image
from critic_data.builders.options import BuildOptions
from critic_data.builders.pipeline import build
from critic_data.builders.text import clean_question, clean_response
from critic_data.schemas import RejectReason
from tests.cli import one_line_error, run_cli
from tests.snapshots import (
    ASPECTS,
    LLAVA_RLHF_FAULTS,
    jpeg,
    rlhf_v_texts,
    write_llava_rlhf,
    write_vlfeedback_jsonl,
    write_vlfeedback_parquet,
)

# About rows and rejects, not the card: builds here skip drawing its charts (conftest.charts_not_drawn).
pytestmark = pytest.mark.usefixtures("charts_not_drawn")


def _outcome(manifest: dict, out: Path, name: str, rows: int) -> tuple[dict, dict[str, str]]:
    """The source's counts and its rejects by source id, after checking the accounting is exact."""
    counts = manifest["sources"][name]["counts"]
    assert counts["rows_read"] == rows
    assert counts["rows_read"] == counts["rows_used"] + counts["rows_rejected"]
    assert counts["pairs_formed"] == (counts["pairs_kept"] + sum(counts["pairs_filtered"].values())
                                      + counts["duplicates_dropped"])
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == counts["rows_rejected"]
    assert sum(pq.read_metadata(p).num_rows for p in (out / "data").glob("*.parquet")) == counts["pairs_kept"]
    return counts, {r["source_id"]: r["reason"] for r in rejects}


def _details(out: Path) -> dict[str, str]:
    return {r["source_id"]: r["detail"] for r in map(json.loads, (out / "rejects.jsonl").read_text().splitlines())}


# --- VLFeedback (JSON Lines + merged_images.zip) ---------------------------------------------

def _vlfeedback(folder: Path, n: int = 6) -> list[dict]:
    """A clean VLFeedback JSON Lines snapshot whose rows the test then damages with `_rewrite`."""
    return write_vlfeedback_jsonl(folder, n=n, quirks=False)


def _rewrite(folder: Path, rows: list, prefix: bytes = b"") -> None:
    """`vlfeedback_80k.jsonl` again: dicts as JSON (ASCII: a lone surrogate is written as the
    `\\ud800` escape that decodes to it), strings as raw lines."""
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    (folder / "vlfeedback_80k.jsonl").write_bytes(prefix + "".join(line + "\n" for line in lines).encode())


def _vlf_build(folder: Path, out: Path, num_proc: int = 1, **options) -> dict:
    return build(BuildOptions(out=out, inputs={"vlfeedback": folder}, num_proc=num_proc, **options))


def _rate(completion: dict, rating) -> None:
    for aspect in ASPECTS:
        completion["annotations"][aspect]["Rating"] = rating


@pytest.mark.parametrize("layout", ["jsonl", "parquet"])
def test_an_overflowing_rating_leaves_its_completion_unrated(layout, tmp_path):
    """`1e308` parses as a finite float, but the mean of three overflows to infinity: that
    completion is unrated (as `N/A` would be); a row left with one rated completion is a reject."""
    rows = _vlfeedback(tmp_path / "s")
    _rate(rows[1]["completions"][0], "1e308")  # three others remain: the row is used
    for completion in rows[2]["completions"][1:]:
        _rate(completion, "1e308")  # one rated completion remains
    _rate(rows[3]["completions"][0], "-1e308")
    if layout == "jsonl":
        _rewrite(tmp_path / "s", rows)
    else:
        write_vlfeedback_parquet(tmp_path / "p", n=6, quirks=False, shards=1)
        table = pq.read_table(tmp_path / "p" / "data" / "train-00000-of-00001.parquet")
        completions = [{"annotations": [c["annotations"] for c in row["completions"]],
                        "model": [c["model"] for c in row["completions"]],
                        "response": [c["response"] for c in row["completions"]]} for row in rows]
        table = table.set_column(table.schema.get_field_index("completions"), "completions", pa.array(completions))
        pq.write_table(table, tmp_path / "p" / "data" / "train-00000-of-00001.parquet")
    manifest = _vlf_build(tmp_path / ("s" if layout == "jsonl" else "p"), tmp_path / "o")
    counts, rejects = _outcome(manifest, tmp_path / "o", "vlfeedback", 6)
    assert rejects == {rows[2]["id"]: "rating_unparsable"}
    assert manifest["sources"]["vlfeedback"]["notes"]["completions_unrated"] == 2  # rows 1 and 3 (row 2 is rejected)
    assert counts["rows_used"] == 5 and counts["pairs_kept"] >= 1
    assert all(row["margin"] < 5 for path in (tmp_path / "o" / "data").glob("*.parquet")
               for row in pq.read_table(path).to_pylist())


@pytest.mark.parametrize("kind", ["numbers", "bytes"])
def test_parquet_responses_that_are_not_text_are_empty_not_their_digits(kind, tmp_path):
    """A parquet copy whose responses are stored as numbers or bytes: as in JSON Lines, a response
    that is not text is empty (the column-wise cleaning does not cast 3 into "3")."""
    write_vlfeedback_parquet(tmp_path / "p", n=6, quirks=False, shards=1)
    path = tmp_path / "p" / "data" / "train-00000-of-00001.parquet"
    table = pq.read_table(path)
    rows = table.to_pylist()
    values = {"numbers": [1, 2, 3, 4], "bytes": [b"a", b"b", b"c", b"d"]}[kind]
    completions = [{**row["completions"], "response": values[:len(row["completions"]["response"])]} for row in rows]
    table = table.set_column(table.schema.get_field_index("completions"), "completions", pa.array(completions))
    pq.write_table(table, path)
    with pytest.raises(UserError, match=r"no rows kept \(vlfeedback: 6 rows read, 6 rejected \(empty_response 6\)\)"):
        _vlf_build(tmp_path / "p", tmp_path / "o")


def test_ratings_whose_gap_overflows_form_no_pair(tmp_path):
    """With one aspect, 1e308 and -1e308 are finite scores whose gap is not: that pair is
    filtered (counted by rule), the row's other pairs are kept."""
    rows = _vlfeedback(tmp_path / "s", n=4)
    for completion, rating in zip(rows[0]["completions"], ["1e308", "-1e308", "1", "5"]):
        completion["annotations"]["Helpfulness"]["Rating"] = rating
    _rewrite(tmp_path / "s", rows)
    manifest = _vlf_build(tmp_path / "s", tmp_path / "o", aspects=("Helpfulness",), pairs_per_prompt="all")
    counts, rejects = _outcome(manifest, tmp_path / "o", "vlfeedback", 4)
    assert rejects == {}
    assert counts["pairs_filtered"]["gap_not_finite"] == 1
    kept = [row for path in (tmp_path / "o" / "data").glob("*.parquet") for row in pq.read_table(path).to_pylist()
            if row["source_id"] == rows[0]["id"]]
    assert len(kept) == 5  # the other five of the six pairs


def test_a_lone_surrogate_in_json_lines_is_a_reject(tmp_path):
    rows = _vlfeedback(tmp_path / "s")
    rows[1]["prompt"] = "What is \ud800 this?"
    for number, completion in enumerate(rows[2]["completions"]):  # whichever pair is kept holds one
        completion["response"] = f"A cat \udfff {number}."
    _rewrite(tmp_path / "s", rows)
    manifest = _vlf_build(tmp_path / "s", tmp_path / "o")
    counts, rejects = _outcome(manifest, tmp_path / "o", "vlfeedback", 6)
    assert rejects == {rows[1]["id"]: "text_unencodable", rows[2]["id"]: "text_unencodable"}
    assert counts["rows_used"] == 4


def test_an_image_the_decoder_raises_on_is_undecodable(tmp_path):
    """A corrupt AVIF makes Pillow's AVIF plugin raise RuntimeError (not an OSError)."""
    rows = _vlfeedback(tmp_path / "s")
    archive = tmp_path / "s" / "merged_images.zip"
    members = _zip_members(archive)
    del members[f"merged_images/{rows[1]['id']}.jpg"]
    _rewrite_zip(archive, {**members, f"merged_images/{rows[1]['id']}.avif": corrupt_avif()})
    manifest = _vlf_build(tmp_path / "s", tmp_path / "o")
    _, rejects = _outcome(manifest, tmp_path / "o", "vlfeedback", 6)
    assert rejects == {rows[1]["id"]: "image_undecodable"}
    assert "RuntimeError" in _details(tmp_path / "o")[rows[1]["id"]]


def corrupt_avif() -> bytes:
    """An AVIF made by Pillow whose first coded bytes (the start of the `mdat` box's AV1
    data) are overwritten: Pillow's AVIF plugin raises RuntimeError on it, not OSError."""
    buffer = io.BytesIO()
    Image.open(io.BytesIO(jpeg(5))).save(buffer, format="AVIF")
    data = bytearray(buffer.getvalue())
    start = data.index(b"mdat") + 4
    data[start : start + 4] = b"\xff" * 4
    with pytest.raises(RuntimeError), Image.open(io.BytesIO(bytes(data))) as image:
        image.load()
    return bytes(data)


def _zip_members(archive: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(archive) as handle:
        return {name: handle.read(name) for name in handle.namelist()}


def _rewrite_zip(archive: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(archive, "w") as handle:
        for name, data in members.items():
            handle.writestr(name, data)


@pytest.mark.parametrize("error",
                         [RuntimeError("plugin"), struct.error("unpack requires a buffer"), IndexError("tile")])
def test_any_exception_from_image_inspection_is_undecodable(error, monkeypatch):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(image_module.Image, "open", fail)
    reason, detail = check_image(b"GIF89a....")
    assert reason is RejectReason.IMAGE_UNDECODABLE and type(error).__name__ in detail


def test_running_out_of_memory_while_inspecting_an_image_is_not_a_reject(monkeypatch):
    def fail(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(image_module.Image, "open", fail)
    with pytest.raises(MemoryError):
        check_image(b"GIF89a....")


def test_deeply_nested_json_line_is_json_invalid(tmp_path):
    rows = _vlfeedback(tmp_path / "s")
    _rewrite(tmp_path / "s", [rows[0], "[" * 100_000, *rows[1:], '{"id": ' * 50_000])
    manifest = _vlf_build(tmp_path / "s", tmp_path / "o")
    counts, rejects = _outcome(manifest, tmp_path / "o", "vlfeedback", 8)
    assert rejects == {"line 2": "json_invalid", "line 8": "json_invalid"}
    assert counts["rows_used"] == 6


@pytest.mark.parametrize("num_proc", [1, 2])
def test_a_byte_order_mark_starts_json_lines_without_costing_a_row(num_proc, tmp_path, monkeypatch):
    """Only the first of the file's parts starts with the mark: read as `utf-8-sig` reads it."""
    rows = _vlfeedback(tmp_path / "s", n=7)
    rows[3]["prompt"] = "\ufeffWhat is this?"  # the same character inside a line is text, not a mark
    _rewrite(tmp_path / "s", rows, prefix="\ufeff".encode())
    monkeypatch.setattr("critic_data.builders.readers.ROWS_PER_BATCH", 3)
    manifest = _vlf_build(tmp_path / "s", tmp_path / "o", num_proc=num_proc)
    counts, rejects = _outcome(manifest, tmp_path / "o", "vlfeedback", 7)
    assert rejects == {} and counts["rows_used"] == 7


@pytest.mark.slow
@pytest.mark.parametrize("end", [b"\r\n", b"\r"])
def test_json_lines_with_windows_or_old_mac_line_ends_build_the_same_dataset(end, tmp_path, monkeypatch):
    """The same rows, line numbers and rejects as with \\n, across parts (files.py's one rule)."""
    rows = _vlfeedback(tmp_path / "s", n=7)
    lines = [*(json.dumps(row) for row in rows[:3]), '{"id": "cut', "", *(json.dumps(row) for row in rows[3:])]
    monkeypatch.setattr("critic_data.builders.readers.ROWS_PER_BATCH", 3)
    built = {}
    for name, newline in (("unix", b"\n"), ("other", end)):
        (tmp_path / "s" / "vlfeedback_80k.jsonl").write_bytes(newline.join(line.encode() for line in lines) + newline)
        manifest = _vlf_build(tmp_path / "s", tmp_path / name, num_proc=2)
        counts, rejects = _outcome(manifest, tmp_path / name, "vlfeedback", 8)
        assert rejects == {"line 4": "json_invalid"} and counts["rows_used"] == 7
        built[name] = [(tmp_path / name / "rejects.jsonl").read_bytes(),
                       *(path.read_bytes() for path in sorted((tmp_path / name / "data").glob("*.parquet")))]
    assert built["other"] == built["unix"]


@pytest.mark.parametrize("blank", ["\u200b", "\u200c\u200d", " \u2060\n", "\ufeff", "\u200b \t\u200b"])
def test_zero_width_only_responses_are_empty(blank, tmp_path):
    rows = _vlfeedback(tmp_path / "s")
    for completion in rows[1]["completions"][1:]:
        completion["response"] = blank
    rows[2]["prompt"] = "<image>" + blank
    _rewrite(tmp_path / "s", rows)
    manifest = _vlf_build(tmp_path / "s", tmp_path / "o")
    counts, rejects = _outcome(manifest, tmp_path / "o", "vlfeedback", 6)
    assert rejects == {rows[1]["id"]: "empty_response", rows[2]["id"]: "empty_question"}
    assert counts["rows_used"] == 4


def test_zero_width_characters_around_text_are_trimmed_like_whitespace():
    assert clean_response("\u200b A cat. \ufeff") == "A cat."
    assert clean_question("\u2060<image>\nWhat is it?\u200d") == "What is it?"
    assert clean_response("A\u200bcat") == "A\u200bcat"  # inside the text: left as written


def test_text_cleaning_leaves_nothing_str_strip_would_remove():

    every_space = "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())
    assert clean_response(every_space + "x" + every_space) == "x" == clean_question(every_space + "x" + every_space)


# --- RLHF-V (parquet with a JSON `text` column) ---------------------------------------------------

def _rlhf_v(path: Path, n: int = 6, texts: dict | None = None, images: dict | None = None, first: int = 0,
            image_type: pa.DataType | None = None) -> None:
    """One RLHF-V shard of `n` clean rows (`idx` from 5000 + `first`), with `texts` (raw `text`
    values) and `images` (Image struct values) replaced by row index."""
    texts, images = texts or {}, images or {}
    records = [{"image": images.get(i, {"bytes": jpeg(100 + first + i), "path": f"rlhf-v/{first + i}.jpg"}),
                "text": texts.get(i, json.dumps(text)), "idx": 5000 + first + i}
               for i, text in enumerate(rlhf_v_texts(first + n)[first:])]
    schema = None
    if image_type is not None:
        schema = pa.schema([("image", image_type), ("text", pa.string()), ("idx", pa.int64())])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records, schema=schema), path)


def _rlhf_v_build(folder: Path, out: Path, num_proc: int = 1) -> dict:
    return build(BuildOptions(out=out, sources=("rlhf_v",), inputs={"rlhf_v": folder}, num_proc=num_proc))


def test_rlhf_v_text_json_hazards_are_rejects(tmp_path):
    """A lone surrogate escape, nesting past the recursion limit, and a byte-order mark (read)."""
    good = rlhf_v_texts(6)
    _rlhf_v(tmp_path / "s" / "RLHF-V-Dataset.parquet", texts={
        1: json.dumps({**good[1], "chosen": "A dog \ud800."}),
        2: "[" * 100_000,
        3: "\ufeff" + json.dumps(good[3]),
    })
    manifest = _rlhf_v_build(tmp_path / "s", tmp_path / "o")
    counts, rejects = _outcome(manifest, tmp_path / "o", "rlhf_v", 6)
    assert rejects == {"5001": "text_unencodable", "5002": "json_invalid"}
    assert counts["rows_used"] == 4


def test_image_bytes_stored_as_text_or_other_types_are_rejects(tmp_path):
    """A shard whose Image struct holds `bytes` as a string (or `path` as a list): its rows are
    rejects or built, the other shards' rows are built, and nothing crashes."""
    _rlhf_v(tmp_path / "s" / "a.parquet", n=3)
    _rlhf_v(tmp_path / "s" / "b.parquet", n=2, first=3, images={0: {"bytes": "not bytes", "path": "x.jpg"}, 1: None},
            image_type=pa.struct([("bytes", pa.string()), ("path", pa.string())]))
    _rlhf_v(tmp_path / "s" / "c.parquet", n=2, first=5, images={0: {"bytes": jpeg(7), "path": ["a", "b"]}},
            image_type=pa.struct([("bytes", pa.binary()), ("path", pa.list_(pa.string()))]))
    manifest = _rlhf_v_build(tmp_path / "s", tmp_path / "o")
    counts, rejects = _outcome(manifest, tmp_path / "o", "rlhf_v", 7)
    assert rejects == {"5003": "row_malformed", "5004": "image_missing"}
    assert counts["rows_used"] == 5
    written = {row["source_id"]: row["images"][0] for path in (tmp_path / "o" / "data").glob("*.parquet")
               for row in pq.read_table(path).to_pylist()}
    assert written["5005"] == {"bytes": jpeg(7), "path": None}  # a path that is not text names nothing


def test_parquet_image_bytes_over_the_size_cap_are_a_reject(tmp_path, monkeypatch):
    big = _noise_jpeg(3)
    monkeypatch.setattr(files, "MAX_IMAGE_BYTES", len(big) - 1)
    _rlhf_v(tmp_path / "s" / "RLHF-V-Dataset.parquet", images={2: {"bytes": big, "path": "big.jpg"}})
    manifest = _rlhf_v_build(tmp_path / "s", tmp_path / "o")
    _, rejects = _outcome(manifest, tmp_path / "o", "rlhf_v", 6)
    assert rejects == {"5002": "image_file_too_large"}
    assert str(len(big) - 1) in _details(tmp_path / "o")["5002"]


def _noise_jpeg(seed: int, size: tuple[int, int] = (160, 120)) -> bytes:
    """A JPEG of random pixels: far larger than the snapshots' small images."""
    import random

    buffer = io.BytesIO()
    Image.frombytes("RGB", size, random.Random(seed).randbytes(size[0] * size[1] * 3)).save(buffer, format="JPEG",
                                                                                            quality=95)
    assert len(buffer.getvalue()) > 4 * len(jpeg(0))
    return buffer.getvalue()


def _corrupt_page(path: Path, row_group: int, column: str, where: str) -> None:
    """Overwrite bytes of one column chunk of a row group: its page header, or the middle of its data."""
    chunk = next(c for c in (pq.ParquetFile(path).metadata.row_group(row_group).column(i)
                             for i in range(pq.ParquetFile(path).metadata.num_columns)) if c.path_in_schema == column)
    data = bytearray(path.read_bytes())
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    at = start + (2 if where == "header" else chunk.total_compressed_size // 2)
    data[at : at + 16] = b"\xa5" * 16
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("compression", "column", "where", "num_proc"), [
    ("snappy", "prompt", "data", "1"), ("snappy", "prompt", "data", "2"), ("none", "prompt", "header", "2"),
    ("none", "id", "data", "1"),  # uncompressed: the page decodes, to strings that are not UTF-8
    ("zstd", "prompt", "data", "2"),
    # raw image bytes decode to other bytes without complaint: only a page checksum tells
    ("none+checksum", "image.bytes", "data", "1"),
])
@pytest.mark.slow
def test_a_corrupt_parquet_page_is_one_line_naming_the_file(compression, column, where, num_proc, tmp_path):
    write_vlfeedback_parquet(tmp_path / "s", n=20, quirks=False, shards=2)
    shard = tmp_path / "s" / "data" / "train-00001-of-00002.parquet"
    pq.write_table(pq.read_table(shard), shard, compression=compression.removesuffix("+checksum"), row_group_size=5,
                   write_page_checksum=compression.endswith("+checksum"))
    _corrupt_page(shard, 1, column, where)
    result = run_cli("build", "--source", "vlfeedback", "--input", tmp_path / "s", "--out", tmp_path / "o",
                     "--num-proc", num_proc)
    line = one_line_error(result)
    assert str(shard) in line and "re-download" in line
    assert not (tmp_path / "o").exists()


# --- LLaVA-RLHF (one JSON file + --image-root) ----------------------------------------------

def _llava_rlhf(root: Path, change=None) -> list[dict]:
    """The snapshot of tests/snapshots.py (its planted faults at rows 1-4), rows 7+ changed by
    `change(rows, image_root)`."""
    rows = write_llava_rlhf(root / "s", root / "coco" / "train2017", n=12)
    if change:
        change(rows, root / "coco" / "train2017")
        (root / "s" / "llava_7b_v1_preference.json").write_text(json.dumps(rows))
    return rows


def _llava_rlhf_build(root: Path, num_proc: int = 1) -> tuple[dict, dict[str, str]]:
    out = root / "o"
    manifest = build(BuildOptions(out=out, sources=("llava_rlhf",), inputs={"llava_rlhf": root / "s"},
                                  image_root=root / "coco" / "train2017", num_proc=num_proc))
    counts, rejects = _outcome(manifest, out, "llava_rlhf", 12)
    planted = {f"llava-rlhf-{i}": reason for i, reason in LLAVA_RLHF_FAULTS.items()}
    assert {k: v for k, v in rejects.items() if k in planted} == planted
    assert counts["rows_used"] == 12 - len(rejects)
    return counts, {k: v for k, v in rejects.items() if k not in planted}


def test_llava_rlhf_image_names_the_file_system_refuses_are_rejects(tmp_path):
    def change(rows, image_root):
        os.symlink("loop-b.jpg", image_root / "loop-a.jpg")
        os.symlink("loop-a.jpg", image_root / "loop-b.jpg")
        rows[7]["image"] = "loop-a.jpg"
        rows[8]["image"] = "x" * 300 + ".jpg"  # past NAME_MAX
        rows[9]["image"] = "d/" * 2500 + "x.jpg"  # past PATH_MAX
        rows[10]["image"] = "000000300010.jpg\x00.png"
        rows[11]["image"] = "\ud800.jpg"

    _llava_rlhf(tmp_path, change)
    _, rejects = _llava_rlhf_build(tmp_path)
    assert rejects == {"llava-rlhf-7": "image_missing", "llava-rlhf-8": "image_missing",
                       "llava-rlhf-9": "image_missing",
                       "llava-rlhf-10": "image_path_unsafe", "llava-rlhf-11": "image_path_unsafe"}


def test_llava_rlhf_text_hazards_are_rejects(tmp_path):
    def change(rows, _):
        rows[7]["output_1"]["value"] = "A cat \ud800."
        rows[8]["conversations"][0]["value"] = "<image>\nWhat is \udfff?"
        rows[9]["output_2"]["value"] = ["a list", "not text"]
        rows[10]["output_1"]["value"] = "\u200b\u2060"

    _llava_rlhf(tmp_path, change)
    _, rejects = _llava_rlhf_build(tmp_path)
    assert rejects == {"llava-rlhf-7": "text_unencodable", "llava-rlhf-8": "text_unencodable",
                       "llava-rlhf-9": "row_malformed", "llava-rlhf-10": "empty_response"}


def test_llava_rlhf_file_with_a_byte_order_mark_is_read(tmp_path):
    _llava_rlhf(tmp_path)
    path = tmp_path / "s" / "llava_7b_v1_preference.json"
    path.write_bytes("\ufeff".encode() + path.read_bytes())
    _, rejects = _llava_rlhf_build(tmp_path)
    assert rejects == {}


def test_llava_rlhf_file_nested_past_the_recursion_limit_is_one_line(tmp_path):
    _llava_rlhf(tmp_path)
    path = tmp_path / "s" / "llava_7b_v1_preference.json"
    path.write_text("[" * 100_000)
    result = run_cli("build", "--source", "llava_rlhf", "--input", tmp_path / "s", "--image-root",
                  str(tmp_path / "coco" / "train2017"),
                  "--out", str(tmp_path / "o"))
    line = one_line_error(result)
    assert str(path) in line and "re-download" in line


# --- Bounded image reads: size cap and regular files only ------------------------------------

def test_a_zip_member_declared_over_the_cap_is_rejected_before_inflating(tmp_path, monkeypatch):
    rows = _vlfeedback(tmp_path / "s")
    big = _noise_jpeg(1)
    archive = tmp_path / "s" / "merged_images.zip"
    _rewrite_zip(archive, {**_zip_members(archive), f"merged_images/{rows[2]['id']}.jpg": big})
    monkeypatch.setattr(files, "MAX_IMAGE_BYTES", len(big) - 1)
    opened = []
    original_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open",
                        lambda self, name, *a, **k: opened.append(getattr(name, "filename", name))
                        or original_open(self, name, *a, **k))
    manifest = _vlf_build(tmp_path / "s", tmp_path / "o")
    _, rejects = _outcome(manifest, tmp_path / "o", "vlfeedback", 6)
    assert rejects == {rows[2]["id"]: "image_file_too_large"}
    assert f"merged_images/{rows[2]['id']}.jpg" not in opened and len(opened) == 5


def test_a_zip_member_that_inflates_past_its_declared_size_is_read_no_further_than_the_cap(tmp_path, monkeypatch):
    """A member whose headers declare 1,000 bytes but whose data inflates to 2 MB."""
    rows = _vlfeedback(tmp_path / "s")
    archive = tmp_path / "s" / "merged_images.zip"
    name = f"merged_images/{rows[3]['id']}.jpg"
    members = _zip_members(archive)
    with zipfile.ZipFile(archive, "w") as handle:
        for member, data in members.items():
            if member == name:
                data = jpeg(3) + bytes(2_000_000)
            handle.writestr(member, data, compress_type=zipfile.ZIP_DEFLATED if member == name else zipfile.ZIP_STORED)
    with zipfile.ZipFile(archive) as handle:
        info = handle.getinfo(name)
    data = bytearray(archive.read_bytes())
    declared = struct.pack("<I", info.file_size)
    # local header, central directory
    for at in (info.header_offset + 22, data.rindex(declared, 0, data.rindex(name.encode()))):
        assert data[at : at + 4] == declared
        data[at : at + 4] = struct.pack("<I", 1000)
    archive.write_bytes(bytes(data))
    monkeypatch.setattr(files, "MAX_IMAGE_BYTES", 500_000)
    asked = []
    original_read = zipfile.ZipExtFile.read
    monkeypatch.setattr(zipfile.ZipExtFile, "read", lambda self, n=-1: asked.append(n) or original_read(self, n))
    manifest = _vlf_build(tmp_path / "s", tmp_path / "o")
    _, rejects = _outcome(manifest, tmp_path / "o", "vlfeedback", 6)
    assert rejects[rows[3]["id"]] in ("image_undecodable", "image_file_too_large") and len(rejects) == 1
    assert asked and all(0 <= n <= 500_001 for n in asked)


def _unzip(folder: Path) -> Path:
    """The VLFeedback snapshot with `merged_images/` unzipped in place of the archive."""
    with zipfile.ZipFile(folder / "merged_images.zip") as archive:
        archive.extractall(folder)
    (folder / "merged_images.zip").unlink()
    return folder / "merged_images"


def test_folder_images_over_the_cap_are_rejected_unread(tmp_path, monkeypatch):
    rows = _vlfeedback(tmp_path / "s")
    images = _unzip(tmp_path / "s")
    big = _noise_jpeg(2)
    (images / f"{rows[4]['id']}.jpg").write_bytes(big)
    monkeypatch.setattr(files, "MAX_IMAGE_BYTES", len(big) - 1)
    manifest = _vlf_build(tmp_path / "s", tmp_path / "o")
    _, rejects = _outcome(manifest, tmp_path / "o", "vlfeedback", 6)
    assert rejects == {rows[4]["id"]: "image_file_too_large"}

    def change(rows, image_root):
        (image_root / rows[7]["image"]).write_bytes(big)

    _llava_rlhf(tmp_path / "r", change)
    _, rejects = _llava_rlhf_build(tmp_path / "r")
    assert rejects == {"llava-rlhf-7": "image_file_too_large"}


def _not_regular(folder: Path, names: list[str]) -> None:
    """A FIFO, a link to /dev/zero and a directory, under the names given, in `folder`."""
    for name in names:
        (folder / name).unlink(missing_ok=True)
    os.mkfifo(folder / names[0])
    os.symlink("/dev/zero", folder / names[1])
    (folder / names[2]).mkdir()


@pytest.mark.slow
def test_only_regular_files_are_read_from_merged_images(tmp_path):
    rows = _vlfeedback(tmp_path / "s")
    images = _unzip(tmp_path / "s")
    _not_regular(images, [f"{rows[i]['id']}.jpg" for i in (1, 2, 3)])
    result = run_cli("build", "--source", "vlfeedback", "--input", tmp_path / "s", "--out", tmp_path / "o",
                     "--num-proc", "1", timeout=60)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "o" / "build.json").read_text())
    _, rejects = _outcome(manifest, tmp_path / "o", "vlfeedback", 6)
    assert rejects == {rows[i]["id"]: "image_missing" for i in (1, 2, 3)}
    assert all("not a regular file" in _details(tmp_path / "o")[rows[i]["id"]] for i in (1, 2, 3))


def test_only_regular_files_are_read_from_the_image_root(tmp_path):
    _llava_rlhf(tmp_path, lambda rows, image_root: _not_regular(image_root, [rows[i]["image"] for i in (7, 8, 9)]))
    _, rejects = _llava_rlhf_build(tmp_path)
    # the link leads out of the image root: refused before anything is opened
    assert rejects == {"llava-rlhf-7": "image_missing", "llava-rlhf-8": "image_path_unsafe",
                       "llava-rlhf-9": "image_missing"}
    assert all("not a regular file" in _details(tmp_path / "o")[f"llava-rlhf-{i}"] for i in (7, 9))


def test_a_parquet_shard_that_is_not_a_regular_file_is_one_line(tmp_path):
    _rlhf_v(tmp_path / "s" / "RLHF-V-Dataset.parquet")
    os.mkfifo(tmp_path / "s" / "RLHF-V-Extra.parquet")
    result = run_cli("build", "--source", "rlhf_v", "--input", tmp_path / "s", "--out", tmp_path / "o", timeout=60)
    assert "RLHF-V-Extra.parquet is not a regular file" in one_line_error(result)


# --- Ids, numbers and structs that used to end a build ------------------------------------

def _edit_parquet(path: Path, change) -> None:
    rows = pq.read_table(path).to_pylist()
    change(rows)
    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.mark.slow
def test_an_id_of_only_whitespace_is_no_id(tmp_path):
    """A blank id is a missing one: VLFeedback, whose id names the row's image, rejects the row
    (`row_malformed`); the other sources name the row by its place in the input, as they do a
    row without an id. No output row has a blank `source_id` (validate_columns refuses one)."""
    from tests.snapshots import write_llava_critic

    rows = _vlfeedback(tmp_path / "v")
    rows[1]["id"] = " \t"
    _rewrite(tmp_path / "v", rows)
    manifest = _vlf_build(tmp_path / "v", tmp_path / "vo")
    assert _outcome(manifest, tmp_path / "vo", "vlfeedback", 6)[1] == {"line 2": "row_malformed"}

    _rlhf_v(tmp_path / "r" / "RLHF-V-Dataset.parquet")
    _edit_parquet(tmp_path / "r" / "RLHF-V-Dataset.parquet", lambda t: [r.update(idx=str(r["idx"])) for r in t]
                  and t[0].update(idx="\t"))
    write_llava_critic(tmp_path / "c", shards=1)
    _edit_parquet(tmp_path / "c" / "pairwise" / "train-00000-of-00001.parquet", lambda t: t[0].update(id="  "))
    rows = _llava_rlhf(tmp_path / "l")
    rows[0]["id"] = "\n"
    (tmp_path / "l" / "s" / "llava_7b_v1_preference.json").write_text(json.dumps(rows))
    for name, folder, position in (("rlhf_v", tmp_path / "r", "RLHF-V-Dataset.parquet:0"),
                                   ("llava_critic", tmp_path / "c", "train-00000-of-00001.parquet:0"),
                                   ("llava_rlhf", tmp_path / "l" / "s", "item 0")):
        out = tmp_path / f"{name}-out"
        build(BuildOptions(out=out, sources=(name,), inputs={name: folder},
                           image_root=tmp_path / "l" / "coco" / "train2017"))
        source_ids = {row["source_id"] for path in (out / "data").glob("*.parquet")
                      for row in pq.read_table(path).to_pylist()}
        assert position in source_ids and not any(not i.strip() for i in source_ids)


BIG = "9" * 5000  # past Python's 4300-digit limit on int(): json.loads raises ValueError, no JSONDecodeError


def test_an_integer_past_python_s_digit_limit_is_json_invalid(tmp_path):
    rows = _vlfeedback(tmp_path / "v")
    _rewrite(tmp_path / "v", [*rows[:2], '{"id": "big", "n": ' + BIG + "}", *rows[3:]])
    manifest = _vlf_build(tmp_path / "v", tmp_path / "vo")
    assert _outcome(manifest, tmp_path / "vo", "vlfeedback", 6)[1] == {"line 3": "json_invalid"}
    assert "4300" in _details(tmp_path / "vo")["line 3"]

    good = rlhf_v_texts(6)
    _rlhf_v(tmp_path / "r" / "RLHF-V-Dataset.parquet", texts={2: json.dumps(good[2])[:-1] + ', "n": ' + BIG + "}"})
    manifest = _rlhf_v_build(tmp_path / "r", tmp_path / "ro")
    assert _outcome(manifest, tmp_path / "ro", "rlhf_v", 6)[1] == {"5002": "json_invalid"}


def test_a_llava_rlhf_file_with_an_integer_past_the_digit_limit_is_one_line(tmp_path):
    _llava_rlhf(tmp_path)
    path = tmp_path / "s" / "llava_7b_v1_preference.json"
    path.write_text(path.read_text()[:-1] + ', {"id": ' + BIG + "}]")
    result = run_cli("build", "--source", "llava_rlhf", "--input", tmp_path / "s", "--image-root",
                  str(tmp_path / "coco" / "train2017"),
                  "--out", str(tmp_path / "o"))
    line = one_line_error(result)
    assert str(path) in line and "not valid JSON" in line


def _patch_member(archive: Path, name: str, change) -> None:
    """Edit the bytes of one member's local header (at `local`) and central directory entry (at `central`)."""
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as handle:
        local = handle.getinfo(name).header_offset
    central = data.index(b"PK\x01\x02")
    while data[central + 46 : central + 46 + len(name)] != name.encode():
        central = data.index(b"PK\x01\x02", central + 4)
    change(data, local, central)
    archive.write_bytes(bytes(data))


def _encrypted(data, local, central):
    data[local + 6] |= 1
    data[central + 8] |= 1


def _method(number):
    def change(data, local, central):
        data[local + 8 : local + 10] = data[central + 10 : central + 12] = struct.pack("<H", number)
    return change


def _size_lie(data, local, central):
    data[central + 20 : central + 28] = struct.pack("<II", 1_000_000, 1_000_000)  # more than the data holds


@pytest.mark.parametrize("damage", [_encrypted, _method(9), _method(14), _method(99), _size_lie],
                         ids=["encrypted", "deflate64", "lzma-on-stored-data", "unknown-method",
                              "declared-size-past-the-data"])
def test_any_damage_to_an_archive_member_is_undecodable(damage, tmp_path):
    """zipfile raises RuntimeError (encrypted), NotImplementedError (a compression method it
    lacks), LZMAError, EOFError (a declared size past the data): each is that row's reject."""
    rows = _vlfeedback(tmp_path / "s")
    _patch_member(tmp_path / "s" / "merged_images.zip", f"merged_images/{rows[2]['id']}.jpg", damage)
    manifest = _vlf_build(tmp_path / "s", tmp_path / "o")
    assert _outcome(manifest, tmp_path / "o", "vlfeedback", 6)[1] == {rows[2]["id"]: "image_undecodable"}
    assert f"merged_images/{rows[2]['id']}.jpg" in _details(tmp_path / "o")[rows[2]["id"]]


def test_an_image_struct_without_a_path_field_gives_rows_without_file_names(tmp_path):
    """`struct<bytes: binary>` (no `path`): the images are read, their names are null."""
    from tests.snapshots import write_llava_critic

    _rlhf_v(tmp_path / "r" / "RLHF-V-Dataset.parquet", image_type=pa.struct([("bytes", pa.binary())]),
            images={i: {"bytes": jpeg(100 + i)} for i in range(6)})
    write_llava_critic(tmp_path / "c", shards=1)
    path = tmp_path / "c" / "pairwise" / "train-00000-of-00001.parquet"
    table = pq.read_table(path)
    images = table["image"].combine_chunks()
    pq.write_table(table.set_column(table.schema.get_field_index("image"), "image",
                                    pa.StructArray.from_arrays([images.field("bytes")], names=["bytes"])), path)
    for name, folder, rows in (("rlhf_v", tmp_path / "r", 6), ("llava_critic", tmp_path / "c", 12)):
        out = tmp_path / f"{name}-out"
        manifest = build(BuildOptions(out=out, sources=(name,), inputs={name: folder}))
        counts, _ = _outcome(manifest, out, name, rows)
        images = [image for p in (out / "data").glob("*.parquet") for row in pq.read_table(p).to_pylist()
                  for image in row["images"]]
        assert len(images) == counts["pairs_kept"] > 0 and all(image["path"] is None and image["bytes"]
                                                               for image in images)


@pytest.mark.slow
def test_reject_details_hold_nothing_that_changes_from_run_to_run(tmp_path):
    """PIL names the stream it could not identify by its memory address; the detail leaves it out,
    so two builds of one snapshot give the same rejects.jsonl, byte for byte."""
    _rlhf_v(tmp_path / "s" / "RLHF-V-Dataset.parquet",
            images={3: {"bytes": b'<svg xmlns="http://www.w3.org/2000/svg"/>', "path": "x.jpg"}})
    for out in ("a", "b"):
        result = run_cli("build", "--source", "rlhf_v", "--input", tmp_path / "s", "--out", tmp_path / out,
                         "--num-proc", "1")
        assert result.returncode == 0, result.stderr
    detail = _details(tmp_path / "a")["5003"]
    assert detail.startswith("UnidentifiedImageError") and "0x" not in detail
    assert (tmp_path / "a" / "rejects.jsonl").read_bytes() == (tmp_path / "b" / "rejects.jsonl").read_bytes()


# --- Animated images: every frame --------------------------------------------------------

def _animation(kind: str, frames: int = 4, size: tuple[int, int] = (16, 16)) -> bytes:
    pictures = [Image.new("RGB", size, (i * 40, 255 - i * 40, 7 * i)) for i in range(frames)]
    buffer = io.BytesIO()
    pictures[0].save(buffer, format=kind, save_all=True, append_images=pictures[1:], duration=50)
    return buffer.getvalue()


def _gif_cut_after_frame(data: bytes, frames: int) -> bytes:
    """The GIF's first `frames` frames, then nothing (no trailer): cut where the next frame's
    graphic control extension starts (PIL writes one per frame of an animation)."""
    starts = [i for i in range(len(data)) if data.startswith(b"!\xf9\x04", i)]
    return data[: starts[frames]]


def _apng_with_a_damaged_last_frame(data: bytes) -> bytes:
    """An APNG whose last frame's compressed data is changed, its chunk CRC made right again:
    every chunk passes its CRC, and the last frame does not decode."""
    import zlib

    start = data.rindex(b"fdAT") - 4
    length = struct.unpack(">I", data[start : start + 4])[0]
    body = bytearray(data[start + 4 : start + 8 + length])  # type, sequence number, zlib data
    body[12:] = bytes(b ^ 0x5A for b in body[12:])
    return data[: start + 4] + bytes(body) + struct.pack(">I", zlib.crc32(body)) + data[start + 12 + length :]


@pytest.mark.parametrize("level", ["structure", "decode"])
def test_an_animation_cut_short_is_undecodable_at_both_levels(level):
    gif = _animation("GIF")
    assert check_image(gif, level=level) is None
    assert check_image(gif[: len(gif) // 2], level=level)[0] == RejectReason.IMAGE_UNDECODABLE  # inside a later frame
    cut = _gif_cut_after_frame(gif, 2)  # between two frames: it decodes, but has no trailer
    assert check_image(cut, level=level) == (RejectReason.IMAGE_UNDECODABLE,
                                             "GIF data ends before its trailer (truncated)")
    png = _animation("PNG")
    assert check_image(png, level=level) is None
    assert check_image(png[: len(png) - 20], level=level)[0] == RejectReason.IMAGE_UNDECODABLE


def test_every_frame_of_an_animated_png_is_decoded_at_the_decode_level():
    """Structure checks an APNG's chunk CRCs through IEND; decode also decodes every frame."""
    damaged = _apng_with_a_damaged_last_frame(_animation("PNG"))
    assert check_image(damaged, level="structure") is None
    assert check_image(damaged, level="decode")[0] == RejectReason.IMAGE_UNDECODABLE


@pytest.mark.parametrize("kind", ["GIF", "PNG", "WEBP"])
def test_an_animation_s_pixels_are_all_its_frames(kind):
    data = _animation(kind, frames=4, size=(16, 16))
    assert check_image(data, max_pixels=4 * 16 * 16) is None
    assert check_image(data, max_pixels=4 * 16 * 16 - 1) == (RejectReason.IMAGE_TOO_LARGE,
                                                             "4 frames of 16x16 exceed 1023 pixels")


# --- Pairs per row, and images per id ------------------------------------------------------

def test_a_row_pairs_at_most_its_first_64_completions(tmp_path):
    """`--pairs-per-prompt all` on a row of 200 completions would offer 19,900 pairs; the row
    pairs its first 64 (2,016 pairs) and the other 136 are counted as a note."""
    from critic_data.builders.vlfeedback import MAX_COMPLETIONS

    rows = _vlfeedback(tmp_path / "s", n=2)
    template = rows[0]["completions"][0]
    rows[0]["completions"] = [json.loads(json.dumps(template)) for _ in range(200)]
    for number, completion in enumerate(rows[0]["completions"]):
        completion["response"] = f"Answer {number}."
        _rate(completion, "5" if number == 0 else "3")  # one clearly better, the rest tie
    _rewrite(tmp_path / "s", rows)
    manifest = _vlf_build(tmp_path / "s", tmp_path / "o", pairs_per_prompt="all")
    counts, _ = _outcome(manifest, tmp_path / "o", "vlfeedback", 2)
    assert MAX_COMPLETIONS == 64
    assert manifest["sources"]["vlfeedback"]["notes"]["completions_over_cap"] == 136
    row_0 = 64 * 63 // 2
    assert counts["pairs_formed"] == row_0 + 6  # the second row's four completions form 6
    assert counts["pairs_filtered"]["tie_dropped"] >= 63 * 62 // 2


@pytest.mark.parametrize("layout", ["folder", "zip"])
def test_two_image_files_for_one_id_are_ambiguous(layout, tmp_path):
    """`x.jpg` and `x.png` for one id: which one the row shows is unknown (a folder lists them
    in any order), so the row is rejected rather than built from a guess."""
    rows = _vlfeedback(tmp_path / "s")
    archive = tmp_path / "s" / "merged_images.zip"
    if layout == "zip":
        _rewrite_zip(archive, {**_zip_members(archive), f"merged_images/{rows[1]['id']}.png": jpeg(77)})
    else:
        (_unzip(tmp_path / "s") / f"{rows[1]['id']}.png").write_bytes(jpeg(77))
    manifest = _vlf_build(tmp_path / "s", tmp_path / "o")
    assert _outcome(manifest, tmp_path / "o", "vlfeedback", 6)[1] == {rows[1]["id"]: "image_ambiguous"}
    assert f"{rows[1]['id']}.jpg" in _details(tmp_path / "o")[rows[1]["id"]]


# --- Input files that are not regular or cannot be read ------------------------------------

@pytest.mark.parametrize("kind", ["fifo", "link to /dev/zero", "directory"])
# the file, or the lone *.json read instead
@pytest.mark.parametrize("name", ["llava_7b_v1_preference.json", "other.json"])
def test_a_llava_rlhf_file_that_is_not_regular_is_one_line(kind, name, tmp_path):
    (tmp_path / "coco").mkdir()
    (tmp_path / "s").mkdir()
    path = tmp_path / "s" / name
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        os.symlink("/dev/zero", path)
    result = run_cli("build", "--source", "llava_rlhf", "--input", tmp_path / "s", "--image-root", tmp_path / "coco",
                     "--out", tmp_path / "o", timeout=60)
    assert f"{path} is not a regular file" in one_line_error(result)


def test_a_llava_rlhf_file_over_the_size_cap_is_refused(tmp_path, monkeypatch):
    from critic_data.builders import llava_rlhf

    _llava_rlhf(tmp_path)
    path = tmp_path / "s" / "llava_7b_v1_preference.json"
    monkeypatch.setattr(llava_rlhf, "MAX_FILE_BYTES", path.stat().st_size - 1)
    with pytest.raises(UserError, match="is over"):
        _llava_rlhf_build(tmp_path)


@pytest.mark.parametrize("which", ["vlfeedback_80k.jsonl", "llava_7b_v1_preference.json"])
def test_an_input_file_that_cannot_be_read_is_one_line(which, tmp_path):
    """A regular file whose reads fail (EIO here: /proc/self/mem at offset 0; a file without read
    permission takes the same path) ends the build in one line naming it."""
    if which == "llava_7b_v1_preference.json":
        _llava_rlhf(tmp_path)
        args = ["--source", "llava_rlhf", "--image-root", str(tmp_path / "coco" / "train2017")]
    else:
        _vlfeedback(tmp_path / "s")
        args = ["--source", "vlfeedback"]
    path = tmp_path / "s" / which
    path.unlink()
    os.symlink("/proc/self/mem", path)
    line = one_line_error(run_cli("build", *args, "--input", tmp_path / "s", "--out", tmp_path / "o", timeout=60))
    assert line.startswith(f"error: cannot read {path}") and "Input/output error" in line


def _vlfeedback_parquet_of(folder: Path, completions: list, completions_type: pa.DataType) -> None:
    """A VLFeedback parquet snapshot whose rows hold `completions`, typed `completions_type`."""
    rows = [{"id": f"r{i}", "prompt": "What is this?", "completions": c,
             "image": {"bytes": jpeg(i), "path": f"r{i}.jpg"}}
            for i, c in enumerate(completions)]
    schema = pa.schema([("id", pa.string()), ("prompt", pa.string()), ("completions", completions_type),
                        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())]))])
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema), folder / "data" / "train-00000-of-00001.parquet")


def _rated(rating) -> dict:
    return {aspect: {"Rating": rating} for aspect in ASPECTS}


_RATINGS = pa.struct([(aspect, pa.struct([("Rating", pa.string())])) for aspect in ASPECTS])


def test_a_parquet_row_with_ratings_and_no_responses_is_rejected_as_json_lines_rejects_it(tmp_path):
    """`response: null` beside two rated completions: their responses are empty, so the row is
    `empty_response`, as the same row read from JSON Lines is (a batch holding it is paired row
    by row)."""
    good = {"response": ["A cat.", "A dog."], "annotations": [_rated("5"), _rated("1")]}
    completions = [good, {"response": None, "annotations": [_rated("5"), _rated("1")]}, good]
    _vlfeedback_parquet_of(tmp_path / "s", completions,
                           pa.struct([("response", pa.list_(pa.string())), ("annotations", pa.list_(_RATINGS))]))
    manifest = _vlf_build(tmp_path / "s", tmp_path / "o")
    rejects = [json.loads(line) for line in (tmp_path / "o" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["source_id"], r["reason"]) for r in rejects] == [("r1", "empty_response")]
    assert manifest["sources"]["vlfeedback"]["counts"]["pairs_kept"] == 2


@pytest.mark.parametrize("list_type", [pa.list_view, lambda t: pa.list_(t, 2), pa.large_list])
def test_completions_stored_as_other_list_types_are_paired_alike(list_type, tmp_path):
    """Parquet keeps fixed-size lists, list views and large lists as written: the completions are
    read whatever list type holds them (the batch pairing takes offsets lists; others are read
    row by row), and give the pairs of the Hub's own layout."""
    completions = [{"response": ["A cat.", "A dog."], "annotations": [_rated("5"), _rated("1")]}] * 3
    for name, make in (("hub", pa.list_), ("other", list_type)):
        _vlfeedback_parquet_of(tmp_path / name, completions,
                               pa.struct([("response", make(pa.string())), ("annotations", make(_RATINGS))]))
        _vlf_build(tmp_path / name, tmp_path / f"{name}-out")
    assert _data_rows(tmp_path / "other-out") == _data_rows(tmp_path / "hub-out")
    assert len(_data_rows(tmp_path / "hub-out")) == 3


def test_a_null_annotation_is_unrated_in_the_batch_as_row_by_row():
    """A null annotation entry whose struct child still holds a number (an in-memory table can):
    unrated in the batch pairing from the table's columns, as in the rows read as Python objects
    (`_rows_paired`)."""
    from critic_data.builders.vlfeedback import _paired, _rows_paired

    ratings = pa.struct([(aspect, pa.struct([("Rating", pa.int64())])) for aspect in ASPECTS])
    kind = pa.struct([("response", pa.list_(pa.string())), ("annotations", pa.list_(ratings))])
    table = pa.table({"completions": pa.array([{"response": ["a", "b"], "annotations": [None, None]},
                                               {"response": ["a", "b"], "annotations": [_rated(5), _rated(1)]}], kind)})
    options = BuildOptions(out=Path("unused"))
    _, paired = _paired(table, options)
    assert paired == _rows_paired(table["completions"].to_pylist(), options)
    assert paired[0] == (2, RejectReason.RATING_UNPARSABLE)


def _data_rows(out: Path) -> list[dict]:
    return [row for path in sorted((out / "data").glob("*.parquet")) for row in pq.read_table(path).to_pylist()]


def _rlhf_v_rows(folder: Path, rows: list[tuple]) -> None:
    """An RLHF-V snapshot of (idx, image, question[, chosen, rejected]) rows; the responses are the same
    two when not given."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = [dict(zip(("question", "chosen", "rejected"), (*row[2:], "A red bus.", "A cat.")[:3])) for row in rows]
    pq.write_table(pa.Table.from_pylist([
        {"ds_name": "RLHF-V", "image": {"bytes": row[1], "path": None}, "text": json.dumps(text), "origin_dataset": "x",
         "origin_split": "{}", "idx": row[0], "image_path": ""} for row, text in zip(rows, texts)]),
        folder / "RLHF-V-Dataset.parquet")


def _ids(out: Path) -> list[str]:
    return [i for path in sorted((out / "data").glob("*.parquet"))
            for i in pq.read_table(path, columns=["id"])["id"].to_pylist()]


@pytest.mark.slow
@pytest.mark.parametrize("num_proc", [1, 2])
def test_rows_sharing_a_source_id_and_responses_get_ids_unique_in_the_dataset(num_proc, tmp_path, monkeypatch):
    """Forty rows with one source id and the same responses, each with another image (and some with
    another question): forty pairs, forty ids (`eval --benchmark built` keys rows by id), the same
    whatever the worker count. The other rows keep their ids, and one of the forty the id each has alone."""
    monkeypatch.setattr("critic_data.builders.readers.ROWS_PER_BATCH", 7)
    shared = [(7, jpeg(i), "What is shown?") for i in range(30)] + [(7, jpeg(0), f"What is shown {i}?")
                                                                    for i in range(10)]
    others = [(100 + i, jpeg(1000 + i), "What is shown?") for i in range(5)]
    for name, rows in (("all", others[:2] + shared + others[2:]), ("alone", others[:2] + shared[:1] + others[2:])):
        _rlhf_v_rows(tmp_path / name, rows)
        build(BuildOptions(out=tmp_path / f"{name}-out", sources=("rlhf_v",), inputs={"rlhf_v": tmp_path / name},
                           test_size=0.3, num_proc=num_proc))
    ids = _ids(tmp_path / "all-out")
    assert len(ids) == 45 and len(set(ids)) == 45
    assert set(_ids(tmp_path / "alone-out")) < set(ids)
    # ids are as stable as the rest of the data: a build with another worker count writes the same bytes
    build(BuildOptions(out=tmp_path / "again", sources=("rlhf_v",), inputs={"rlhf_v": tmp_path / "all"}, test_size=0.3,
                       num_proc=3 - num_proc))
    assert [p.read_bytes() for p in sorted((tmp_path / "again" / "data").glob("*"))] == [
        p.read_bytes() for p in sorted((tmp_path / "all-out" / "data").glob("*"))]


def test_image_placeholders_leave_every_text_column_and_the_easyr1_question_holds_one(tmp_path):
    """`<image>` in a response reached response_1/2, the TRL prompt, and the easyr1 question, which the
    EasyR1 fork splits at every `<image>`: two placeholders for one image. It is cleaned from
    responses as from questions; a response it was all of is empty, two it told apart are identical."""
    rows = [(0, jpeg(0), "<image>\nWhat is shown?", "<image>\nA red bus.", "A cat <image> on a mat<ima<image>ge>."),
            (1, jpeg(1), "What is shown?<image>", "A bus.", "<image>"),
            (2, jpeg(2), "What is shown?", "A bus.<image>", "A bus."),
            (3, jpeg(3), "How is it written?", "With <img>, <Image> or <image 1>.", "With a pen.")]  # not placeholders
    _rlhf_v_rows(tmp_path / "s", rows)
    for layout in ("trl", "easyr1"):
        out = tmp_path / layout
        manifest = build(BuildOptions(out=out, sources=("rlhf_v",), inputs={"rlhf_v": tmp_path / "s"}, format=layout,
                                      test_size=0.0))
        _, rejects = _outcome(manifest, out, "rlhf_v", 4)
        assert rejects == {"1": "empty_response", "2": "identical_responses"}
        table = pq.read_table(out / "data" / "train-00000-of-00001.parquet").to_pylist()
        if layout == "easyr1":
            assert [row["question"].count("<image>") for row in table] == [1, 1]
            assert all(row["question"].startswith("<image>") for row in table)
            continue
        responses = {row["source_id"]: {row["response_1"], row["response_2"]} for row in table}
        assert responses == {"0": {"A red bus.", "A cat on a mat."},
                             "3": {"With <img>, <Image> or <image 1>.", "With a pen."}}
        assert not any("<image>" in json.dumps(row["prompt"]) + row["question"] for row in table)
