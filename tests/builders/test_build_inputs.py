"""The build's file-level inputs and options, hostile: the build finishes with every
row accounted for, or stops in one line (exit 2, no traceback) with `--out` as it was.

Each test plants one hazard the other hostile tests leave out: a parquet image column of
another type than the Image struct, a worker count past what Python can start, an aspect
named twice, an input file written to while the build reads it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from critic_data import UserError
from critic_data.builders import parallel, readers
from critic_data.builders.options import BuildOptions
from critic_data.builders.pipeline import build
from tests.cli import run_cli
from tests.snapshots import write_llava_critic, write_rlhf_v, write_vlfeedback_jsonl, write_vlfeedback_parquet

# About rows and rejects, not the card: builds here skip drawing its charts (conftest.charts_not_drawn).
pytestmark = pytest.mark.usefixtures("charts_not_drawn")


def _accounted(manifest: dict, out: Path, name: str) -> dict:
    """The source's counts, after checking that every row read is used or rejected once."""
    counts = manifest["sources"][name]["counts"]
    assert counts["rows_read"] == counts["rows_used"] + counts["rows_rejected"]
    assert len((out / "rejects.jsonl").read_text().splitlines()) == counts["rows_rejected"]
    return counts


def _data(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "data").iterdir())}


def _tree(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


# --- a parquet image column that is not an Image struct ----------------------------------------

def _not_an_image_struct(kind: str, column: pa.Array) -> pa.Array:
    rows = len(column)
    return {
        "plain bytes": lambda: pc.struct_field(column, "bytes"),
        "text": lambda: pa.array(["x.jpg"] * rows),
        "a number": lambda: pa.array(range(rows)),
        "a struct without bytes": lambda: pa.StructArray.from_arrays([pa.array(["x.jpg"] * rows)], names=["path"]),
        "a struct of numbers": lambda: pa.StructArray.from_arrays([pa.array(range(rows)), pa.array(["x.jpg"] * rows)],
                                                                   names=["bytes", "path"]),
        "a list of images": lambda: pa.ListArray.from_arrays(pa.array(range(rows + 1), pa.int32()), column),
        "all nulls": lambda: pa.nulls(rows),
    }[kind]()


def _shards(name: str, folder: Path) -> list[Path]:
    if name == "vlfeedback":
        write_vlfeedback_parquet(folder, n=12, quirks=False)
        return sorted((folder / "data").glob("*.parquet"))
    if name == "rlhf_v":
        write_rlhf_v(folder, n=12)
        first = folder / "RLHF-V-Dataset.parquet"
        shutil.copy(first, folder / "RLHF-V-Dataset-2.parquet")  # two shards: the first stays as it is
        return sorted(folder.glob("*.parquet"))
    write_llava_critic(folder, n=12)
    return sorted((folder / "pairwise").glob("*.parquet"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vlfeedback", "rlhf_v", "llava_critic"])
@pytest.mark.parametrize("kind", ["plain bytes", "text", "a number", "a struct without bytes", "a struct of numbers",
                                  "a list of images", "all nulls"])
def test_an_image_column_that_is_not_an_image_struct_is_a_reject_per_row(kind, name, tmp_path):
    """Before: an AttributeError, ArrowInvalid or ArrowNotImplementedError traceback from reading
    the shard's image column as an Image struct. Now each of that shard's rows is a reject (no
    image, or image bytes of the wrong type) and the other shards' rows are built as before."""
    folder = tmp_path / "snapshot"
    shards = _shards(name, folder)
    table = pq.read_table(shards[-1])
    hostile = _not_an_image_struct(kind, table["image"].combine_chunks())
    pq.write_table(table.set_column(table.schema.get_field_index("image"), "image", hostile), shards[-1])
    out = tmp_path / "out"
    counts = _accounted(build(BuildOptions(out=out, sources=(name,), inputs={name: folder})), out, name)
    shards[-1].unlink()  # the same snapshot without that shard
    reference = build(BuildOptions(out=tmp_path / "reference", sources=(name,), inputs={name: folder}))
    expected = reference["sources"][name]["counts"]
    assert counts["rows_read"] == expected["rows_read"] + table.num_rows
    assert counts["rows_rejected"] == expected["rows_rejected"] + table.num_rows
    assert counts["rows_used"] == expected["rows_used"] and _data(out) == _data(tmp_path / "reference")


def test_an_image_column_of_another_type_is_one_line_from_the_cli_never_a_traceback(tmp_path):
    write_rlhf_v(tmp_path / "s", n=12)
    path = tmp_path / "s" / "RLHF-V-Dataset.parquet"
    table = pq.read_table(path)
    pq.write_table(table.set_column(table.schema.get_field_index("image"), "image",
                                    pc.struct_field(table["image"].combine_chunks(), "bytes")), path)
    result = run_cli("build", "--source", "rlhf_v", "--input", tmp_path / "s", "--out", tmp_path / "o",
                     "--num-proc", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "no rows kept" in result.stderr and "image_missing" in result.stderr
    assert not (tmp_path / "o").exists()


# --- --num-proc past the parts ----------------------------------------------------------------

@pytest.fixture(scope="module")
def three_parts(tmp_path_factory) -> Path:
    """A JSON Lines snapshot of three parts (ROWS_PER_BATCH lines each)."""
    folder = tmp_path_factory.mktemp("parts") / "vlfeedback"
    write_vlfeedback_jsonl(folder, n=2 * readers.ROWS_PER_BATCH + 500, quirks=False)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("num_proc", ["99999999999999999999", "3000000000"])
def test_a_num_proc_past_what_python_can_start_builds_like_one_process(num_proc, three_parts, tmp_path):
    """Before: Python's process pool was asked for that many workers and ended in an
    OverflowError traceback (a semaphore of that size); 10,000 would fork 10,000 processes for
    three parts. Now no more workers than parts start, and the data is that of --num-proc 1."""
    build = ("build", "--source", "vlfeedback", "--input", three_parts)
    one = run_cli(*build, "--out", tmp_path / "one", "--num-proc", "1")
    assert one.returncode == 0, one.stderr
    many = run_cli(*build, "--out", tmp_path / "many", "--num-proc", num_proc)
    assert many.returncode == 0 and "Traceback" not in many.stderr, many.stderr
    assert _data(tmp_path / "many") == _data(tmp_path / "one")


@pytest.mark.slow
def test_no_more_workers_start_than_there_are_parts(three_parts, tmp_path, monkeypatch):
    started = []
    pool = parallel.ProcessPoolExecutor

    def counted(workers, *args, **kwargs):
        started.append(workers)
        # never fork them all (that ran a test machine out of memory)
        assert workers <= 3, f"{workers} workers for 3 parts"
        return pool(workers, *args, **kwargs)

    monkeypatch.setattr(parallel, "ProcessPoolExecutor", counted)
    build(BuildOptions(out=tmp_path / "o", inputs={"vlfeedback": three_parts}, num_proc=10_000))
    assert started == [3]


# --- --aspects naming one aspect twice -----------------------------------------------------------

@pytest.mark.slow
def test_an_aspect_named_twice_counts_once(three_parts, tmp_path):
    """Before: `--aspects Helpfulness --aspects Helpfulness --aspects "Visual Faithfulness"`
    weighed Helpfulness double in the mean, and kept other pairs than naming each once. Now an
    aspect counts once, as a source named twice is built once."""
    twice = build(BuildOptions(out=tmp_path / "twice", inputs={"vlfeedback": three_parts},
                               aspects=("Helpfulness", "Helpfulness", "Visual Faithfulness")))
    once = build(BuildOptions(out=tmp_path / "once", inputs={"vlfeedback": three_parts},
                              aspects=("Helpfulness", "Visual Faithfulness")))
    assert twice["options"]["aspects"] == once["options"]["aspects"] == ["Helpfulness", "Visual Faithfulness"]
    assert _data(tmp_path / "twice") == _data(tmp_path / "once")
    assert BuildOptions(out=tmp_path / "x", aspects="Helpfulness,Helpfulness").aspects == ("Helpfulness",)


# --- an input that changes while the build reads it ----------------------------------------------

def _append_a_row(path: Path) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b"".join(lines))  # one row more, every later byte shifted


def _replace_shard(path: Path) -> None:
    table = pq.read_table(path)
    pq.write_table(table.slice(1), path.with_suffix(".new"))
    path.with_suffix(".new").replace(path)


@pytest.mark.parametrize("layout", ["jsonl", "parquet"])
def test_an_input_written_to_while_the_build_reads_it_is_one_line_and_keeps_the_old_output(layout, tmp_path,
                                                                                           monkeypatch):
    """Before: a JSON Lines file written to after the build cut it into byte ranges (or a parquet
    shard replaced after its row groups were listed) was read half old, half new (rows lost,
    doubled or cut mid-line into rejects) and build.json fingerprinted the old file. Now the build
    stops in one line and the old --out stays."""
    folder = tmp_path / "snapshot"
    if layout == "jsonl":
        write_vlfeedback_jsonl(folder, n=30, quirks=False)
        target, change, reader = folder / "vlfeedback_80k.jsonl", _append_a_row, readers.JsonLinesReader
    else:
        write_vlfeedback_parquet(folder, n=30, quirks=False)
        target, change, reader = sorted((folder / "data").glob("*.parquet"))[-1], _replace_shard, readers.ParquetReader
    out = tmp_path / "out"
    build(BuildOptions(out=out, inputs={"vlfeedback": folder}, seed=1))
    before = _tree(out)
    read_part = reader.read_part
    changed = []

    def read_then_change(self, part):
        if not changed:
            changed.append(change(target))
        yield from read_part(self, part)

    monkeypatch.setattr(reader, "read_part", read_then_change)
    monkeypatch.setattr(readers, "ROWS_PER_BATCH", 8)  # several parts: the change lands between them
    with pytest.raises(UserError, match=f"{target.name} changed while the build read it"):
        build(BuildOptions(out=out, inputs={"vlfeedback": folder}, overwrite=True))
    assert changed and _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "snapshot"]  # no staging folder left


def test_a_macos_metadata_file_beside_the_shards_is_named_as_such(tmp_path):
    """macOS leaves `._name` (AppleDouble) beside each file copied to a foreign disk; `data/*.parquet`
    matches them. Before: "cannot read ... as parquet; re-download that file", which does not help."""
    write_vlfeedback_parquet(tmp_path / "vlf")
    (tmp_path / "vlf" / "data" / "._train-00000-of-00002.parquet").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 78)
    done = run_cli("build", "--source", "vlfeedback", "--input", tmp_path / "vlf", "--out", tmp_path / "out")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "is a macOS metadata file (._*), not parquet; delete the ._* files in" in done.stderr
    assert not (tmp_path / "out").exists()
