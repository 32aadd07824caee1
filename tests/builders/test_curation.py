"""Curation in a build (builders/curation.py), end to end on real files and a real server:
- `--decontaminate`: a VLFeedback snapshot whose rows a benchmark snapshot copies (re-encoded, resized
  images; re-spaced, re-cased, full-width questions; tests/benchmark_snapshots.py) among unrelated items;
  the build drops exactly the copies, counts image-only matches, and its accounting stays exact;
- `--difficulty RUN --pass-rate`: `critic-data difficulty` against a scripted judge whose pass rate per
  row is known (always, half the time, never right: tests/judge_server.py), then a build that keeps
  exactly the middle rows; both filters composed; a run of another dataset refused in one line.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from critic_data import UserError
from critic_data.builders.curation import Readers
from critic_data.builders.options import BuildOptions
from critic_data.builders.pipeline import build
from critic_data.manifest import read_manifest
from critic_data.rl.difficulty import run_difficulty
from critic_data.rl.evaluate import benchmark_items
from critic_data.rl.options import DifficultyOptions
from critic_data.rl.records import read_difficulty
from tests.benchmark_snapshots import contamination_case, write_mm_rlhf, write_vl_rewardbench
from tests.cli import one_line_error, run_cli
from tests.judge_server import ScriptedJudge, dataset_plan
from tests.serve import fake_server
from tests.snapshots import vlfeedback_rows

pytestmark = pytest.mark.slow
READERS = Readers(benchmark_items, read_difficulty)
CASE = contamination_case()
CONTAMINATED_ROWS = [row for row, (kind, _) in CASE.expected.items() if kind == "contaminated"]  # rows 0-7
IMAGE_ONLY_ROWS = [row for row, (kind, _) in CASE.expected.items() if kind == "image_only"]  # row 8


def source_id(row: int) -> str:
    return f"svit-conversation-{1000 + row}"


def write_snapshot(folder: Path) -> Path:
    """VLFeedback as the Hub holds it, one row per training row of the contamination case: its question and
    image, four completions rated so that each row gives exactly one pair (5 against 1)."""
    rows = vlfeedback_rows(len(CASE.training), seed=7, quirks=False)
    for row, (question, _) in zip(rows, CASE.training):
        row["prompt"] = question
        for k, completion in enumerate(row["completions"]):
            for annotation in completion["annotations"].values():
                annotation["Rating"] = "5" if k == 0 else "1"
    folder.mkdir(parents=True)
    (folder / "vlfeedback_80k.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    with zipfile.ZipFile(folder / "merged_images.zip", "w") as archive:
        for row, (_, image) in zip(rows, CASE.training):
            archive.writestr(f"merged_images/{row['id']}.jpg", image)
    return folder


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("curation")
    return {"snapshot": write_snapshot(root / "snapshot"),
            "vl-rewardbench": write_vl_rewardbench(root / "vlrb", CASE.items),
            # MM-RLHF holds one more copy (row 13's, re-encoded, its question re-cased) and row 8's image
            "mm-rlhf": write_mm_rlhf(root / "mmrlhf", [
                ("mm-copy-13", CASE.training[13][0].upper(), _reencoded(CASE.training[13][1])),
                ("mm-image-8", "What else is in the picture?", CASE.training[8][1])]),
            "root": root}


def _reencoded(image: bytes) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(image)).save(buffer, format="JPEG", quality=55)
    return buffer.getvalue()


def kept_source_ids(out: Path) -> set[str]:
    return set(pq.read_table(sorted((out / "data").glob("*.parquet")), columns=["source_id"])["source_id"]
               .to_pylist())


def counts_of(out: Path):
    return read_manifest(out).sources["vlfeedback"].counts


def curated(out: Path) -> dict[str, int]:
    """The pairs dropped by a rule, less `not_widest` (each row's five pairs narrower than its widest)."""
    filtered = dict(counts_of(out).pairs_filtered)
    assert filtered.pop("not_widest") == 5 * len(CASE.training)
    return filtered


def assert_accounting(out: Path) -> None:
    c = counts_of(out)
    assert c.rows_read == c.rows_used + c.rows_rejected
    assert c.pairs_formed == c.pairs_kept + sum(c.pairs_filtered.values()) + c.duplicates_dropped


def options(files, out: Path, **changes) -> BuildOptions:
    return BuildOptions(out=out, inputs={"vlfeedback": files["snapshot"]}, test_size=0.0, seed=0, num_proc=1,
                        **changes)


# --- decontamination ---------------------------------------------------------------------------------

def test_a_decontaminated_build_drops_exactly_the_copies_and_counts_them(files, tmp_path):
    out = tmp_path / "clean"
    result = run_cli("build", "--source", "vlfeedback", "--input", files["snapshot"], "--out", out, "--test-size", "0",
                     "--decontaminate", f"vl-rewardbench={files['vl-rewardbench']}", "--num-proc", "2")
    assert result.returncode == 0, result.stderr
    every = {source_id(row) for row in range(len(CASE.training))}
    assert kept_source_ids(out) == every - {source_id(row) for row in CONTAMINATED_ROWS}
    counts = counts_of(out)
    assert curated(out) == {"contaminated": len(CONTAMINATED_ROWS)} and counts.pairs_kept == 8
    assert_accounting(out)
    found = read_manifest(out).contamination["vl-rewardbench"]
    assert found["pairs_contaminated"] == 8 and found["pairs_image_only"] == 1  # row 8's image, kept
    assert found["items_contaminated"] == 8 and found["image_only_dropped"] is False
    assert found["items"] == len(CASE.items) - CASE.damaged and found["items_skipped"] == {"image_undecodable": 1}
    assert found["origin"]["kind"] == "local" and "question equal after" in found["rule"]
    card = (out / "README.md").read_text()
    assert "### Benchmark decontamination" in card and "| vl-rewardbench |" in card and found["rule"] in card
    assert "This build dropped the pairs whose question and image" in card


def test_image_matches_are_dropped_on_request_and_found_near_on_request(files, tmp_path):
    out = tmp_path / "strict"
    build(options(files, out, decontaminate={"vl-rewardbench": files["vl-rewardbench"]}, drop_image_matches=True,
                  image_matches="near"), readers=READERS)
    # rows 9 and 11: a re-encoded copy of their image under another question, found by the near search
    near = [row for row in CASE.near_image_only]
    assert kept_source_ids(out) == {source_id(row) for row in range(len(CASE.training))} - {
        source_id(row) for row in (*CONTAMINATED_ROWS, *IMAGE_ONLY_ROWS, *near)}
    assert curated(out) == {"contaminated": 8, "image_match": 1 + len(near)}
    assert_accounting(out)


def test_two_benchmarks_each_count_their_own_matches(files, tmp_path):
    out = tmp_path / "both"
    build(options(files, out, decontaminate={"vl-rewardbench": files["vl-rewardbench"], "mm-rlhf": files["mm-rlhf"]}),
          readers=READERS)
    assert curated(out) == {"contaminated": 9}  # rows 0-7 and 13
    recorded = read_manifest(out).contamination
    assert recorded["mm-rlhf"]["pairs_contaminated"] == 1 and recorded["mm-rlhf"]["pairs_image_only"] == 1
    assert recorded["vl-rewardbench"]["pairs_contaminated"] == 8


def test_without_decontamination_the_data_files_are_unchanged(files, tmp_path):
    plain, checked = tmp_path / "plain", tmp_path / "checked"
    build(options(files, plain))
    # a benchmark that holds nothing of these rows: same rows, same bytes
    empty = write_vl_rewardbench(tmp_path / "unrelated", [item for item in CASE.items if item[0].startswith("unrel")])
    build(options(files, checked, decontaminate={"vl-rewardbench": empty}), readers=READERS)
    shards = sorted(p.name for p in (plain / "data").iterdir())
    assert shards == sorted(p.name for p in (checked / "data").iterdir())
    assert all((plain / "data" / name).read_bytes() == (checked / "data" / name).read_bytes() for name in shards)
    assert "contamination" not in json.loads((plain / "build.json").read_text())


@pytest.mark.parametrize(("flags", "message"), [
    (["--decontaminate", "rewardbench-x"], "is not a benchmark critic-data knows"),
    (["--decontaminate", "vl-rewardbench="], "names no folder"),
    (["--decontaminate", "vl-rewardbench=/nonexistent/vlrb"], "no such folder"),
    (["--decontaminate", "mm-rlhf=/nonexistent/a", "--decontaminate", "mm-rlhf=/nonexistent/b"], "names mm-rlhf twice"),
    (["--image-matches", "fuzzy"], "--image-matches must be"),
    (["--pass-rate", "0.1:0.9"], "name the run with --difficulty"),
    (["--difficulty", "/nonexistent/run", "--pass-rate", "0.9:0.1"], "not a band"),
    (["--difficulty", "/nonexistent/run", "--pass-rate", "half"], "is not LOW:HIGH"),
    (["--difficulty", "/nonexistent/run"], "not a run of `critic-data difficulty`"),
])
def test_curation_mistakes_are_one_line(files, tmp_path, flags, message):
    result = run_cli("build", "--source", "vlfeedback", "--input", files["snapshot"], "--out", tmp_path / "o", *flags)
    assert message in one_line_error(result)
    assert not (tmp_path / "o").exists()


def test_an_empty_benchmark_snapshot_is_one_line(files, tmp_path):
    (tmp_path / "empty" / "data").mkdir(parents=True)
    result = run_cli("build", "--source", "vlfeedback", "--input", files["snapshot"], "--out", tmp_path / "o",
                     "--decontaminate", f"vl-rewardbench={tmp_path / 'empty'}")
    assert "vl-rewardbench" in one_line_error(result)


# --- difficulty ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def measured(files) -> dict:
    """The snapshot built plainly, and a difficulty run of its train rows against the scripted judge:
    rows in turn always, half the time and never judged right."""
    built = files["root"] / "measured-build"
    build(options(files, built))
    plan, rates = dataset_plan(built)
    run = files["root"] / "run"
    with fake_server(ScriptedJudge(plan)) as server:
        summary = run_difficulty(DifficultyOptions(dataset=str(built), base_url=server.url, model="fake-model", out=run,
                                                   concurrency=4, timeout=20))
    assert summary["failed"] == 0
    return {"build": built, "run": run, "rates": rates}


def ids_with(rates: dict[str, float], keep) -> set[str]:
    return {row_id for row_id, rate in rates.items() if keep(rate)}


def kept_ids(out: Path) -> set[str]:
    return set(pq.read_table(sorted((out / "data").glob("*.parquet")), columns=["id"])["id"].to_pylist())


def test_a_pass_rate_band_keeps_exactly_the_middle_rows(files, measured, tmp_path):
    out = tmp_path / "middle"
    result = run_cli("build", "--source", "vlfeedback", "--input", files["snapshot"], "--out", out, "--test-size", "0",
                     "--difficulty", measured["run"], "--pass-rate", "0.125:0.875")
    assert result.returncode == 0, result.stderr
    rates = measured["rates"]
    assert kept_ids(out) == ids_with(rates, lambda rate: rate == 0.5)
    easy, hard = len(ids_with(rates, lambda r: r == 1.0)), len(ids_with(rates, lambda r: r == 0.0))
    assert curated(out) == {"too_easy": easy, "too_hard": hard}
    assert_accounting(out)
    recorded = read_manifest(out).difficulty
    assert recorded["band"] == [0.125, 0.875] and recorded["samples"] == 8 and recorded["model"] == "fake-model"
    assert recorded["pairs_too_easy"] == easy and recorded["pairs_too_hard"] == hard
    assert recorded["pairs_unmeasured"] == 0 and recorded["rows_measured"] == len(rates)
    assert recorded["pass_count_histogram"] == [hard, 0, 0, 0, len(rates) - easy - hard, 0, 0, 0, easy]
    card = (out / "README.md").read_text()
    assert "### Difficulty selection" in card and f"| 8 | 1.000 | {easy} | 0 |" in card


def test_the_default_band_drops_the_rows_whose_samples_all_agree(files, measured, tmp_path):
    out = tmp_path / "default"
    build(options(files, out, difficulty=measured["run"]), readers=READERS)
    assert kept_ids(out) == ids_with(measured["rates"], lambda rate: rate == 0.5)
    assert read_manifest(out).difficulty["band"] == [0.125, 0.875]


def test_rows_the_run_did_not_measure_are_kept_and_counted(files, measured, tmp_path):
    # the same build with a test split: the run measured train only, so the test rows are unmeasured
    run = tmp_path / "run"
    partial = tmp_path / "partial-build"
    build(options(files, partial))
    plan, rates = dataset_plan(partial)
    with fake_server(ScriptedJudge(plan)) as server:
        run_difficulty(DifficultyOptions(dataset=str(partial), base_url=server.url, model="fake-model", out=run,
                                         concurrency=4, timeout=20, limit=9))
    measured_rows = read_difficulty(run).rows
    assert len(measured_rows) == 9
    out = tmp_path / "kept"
    build(options(files, out, difficulty=run, pass_rate=(0.125, 0.875)), readers=READERS)
    dropped = {row_id for row_id, row in measured_rows.items() if row.pass_rate in (0.0, 1.0)}
    assert kept_ids(out) == set(rates) - dropped
    assert read_manifest(out).difficulty["pairs_unmeasured"] == len(rates) - 9


def test_decontamination_and_difficulty_compose(files, measured, tmp_path):
    out = tmp_path / "both"
    build(options(files, out, decontaminate={"vl-rewardbench": files["vl-rewardbench"]}, difficulty=measured["run"],
                  pass_rate=(0.125, 0.875)), readers=READERS)
    table = pq.read_table(sorted((measured["build"] / "data").glob("train-*.parquet")), columns=["id", "source_id"])
    contaminated = {row["id"] for row in table.to_pylist()
                    if row["source_id"] in {source_id(row) for row in CONTAMINATED_ROWS}}
    middle = ids_with(measured["rates"], lambda rate: rate == 0.5)
    assert len(contaminated) == 8 and kept_ids(out) == middle - contaminated
    filtered = curated(out)
    assert filtered["contaminated"] == 8  # decided first: a contaminated row is not asked its pass rate
    assert filtered.get("too_easy", 0) + filtered.get("too_hard", 0) == len(measured["rates"]) - 8 - len(
        middle - contaminated)
    assert_accounting(out)


def test_a_run_measured_on_a_build_with_other_options_is_refused_up_front(files, measured, tmp_path):
    result = run_cli("build", "--source", "vlfeedback", "--input", files["snapshot"], "--out", tmp_path / "o",
                     "--test-size", "0", "--margin", "1.5", "--difficulty", measured["run"])
    assert "measured another dataset" in (line := one_line_error(result)) and "option margin" in line
    assert not (tmp_path / "o").exists()


def test_a_run_of_rows_this_build_does_not_form_is_refused(files, measured, tmp_path):
    # a run that names no build (as one of a Hub dataset does) whose rows this build does not all form:
    # refused once the rows are decided, and nothing written
    run = tmp_path / "hub-run"
    run.mkdir()
    identity = json.loads((measured["run"] / "run.json").read_text())
    identity["dataset"] = {"split": "train", "hub_id": "someone/other", "revision": "0" * 40}
    (run / "run.json").write_text(json.dumps(identity))
    lines = (measured["run"] / "difficulty.jsonl").read_text().splitlines()
    other = json.loads(lines[0])
    other["id"] = "vlfeedback-0000000000000000"
    (run / "difficulty.jsonl").write_text("\n".join([*lines[1:], json.dumps(other)]) + "\n")
    with pytest.raises(UserError, match=r"1 of the \d+ rows it measured are not rows of this build"):
        build(options(files, tmp_path / "o", difficulty=run), readers=READERS)
    assert not (tmp_path / "o").exists()


def test_a_run_whose_run_json_is_a_fifo_is_one_line_not_a_hang(files, measured, tmp_path):
    run = tmp_path / "fifo-run"
    run.mkdir()
    shutil.copy(measured["run"] / "difficulty.jsonl", run / "difficulty.jsonl")
    os.mkfifo(run / "run.json")
    result = run_cli("build", "--source", "vlfeedback", "--input", files["snapshot"], "--out", tmp_path / "o",
                     "--difficulty", run, timeout=60)
    assert "run.json is missing or unreadable" in one_line_error(result)


def test_damaged_lines_of_a_run_leave_their_rows_unmeasured_and_kept(files, measured, tmp_path):
    run = shutil.copytree(measured["run"], tmp_path / "damaged-run")
    lines = (run / "difficulty.jsonl").read_text().splitlines()
    damaged = {json.loads(line)["id"] for line in lines[:3]}
    (run / "difficulty.jsonl").write_text("\n".join(["{\"id\": cut sh", "\x00\xff", json.dumps({"id": 7}),
                                                      *lines[3:]]) + "\n")
    out = tmp_path / "o"
    build(options(files, out, difficulty=run), readers=READERS)
    middle = ids_with(measured["rates"], lambda rate: rate == 0.5)
    assert kept_ids(out) == middle | damaged
    assert read_manifest(out).difficulty["pairs_unmeasured"] == 3


@pytest.mark.parametrize("recorded", [5, {"options": None}, {"options": {"seed": [1]}, "inputs": "x"}])
def test_a_run_json_whose_record_of_the_build_is_damaged_is_refused_in_one_line(files, measured, tmp_path, recorded):
    run = shutil.copytree(measured["run"], tmp_path / "edited-run")
    identity = json.loads((run / "run.json").read_text())
    identity["dataset"]["build"] = recorded
    (run / "run.json").write_text(json.dumps(identity))
    with pytest.raises(UserError, match="measured another dataset") as refused:
        build(options(files, tmp_path / "o", difficulty=run), readers=READERS)
    assert "\n" not in str(refused.value)
