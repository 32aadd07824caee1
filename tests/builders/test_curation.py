"""Curation in a build (builders/curation.py), end to end on real files and a real server:
- `--decontaminate`: a VLFeedback snapshot whose rows a benchmark snapshot copies (re-encoded, resized
  images; re-spaced, re-cased, full-width questions; tests/benchmark_snapshots.py) among unrelated items;
  the build drops exactly the copies, counts image-only matches, and its accounting stays exact;
- `--difficulty RUN --pass-rate`: `critic-data difficulty` against a scripted judge whose pass rate per
  row is known (always, half the time, never right: tests/judge_server.py), then a build that keeps
  exactly the middle rows; both filters composed; a run of another dataset refused in one line;
- hostile input: damaged, FIFO and symlinked runs and benchmarks, run.json sample counts that are
  zero, negative or huge, bands out of range, odd Unicode in questions, several sources, the easyr1
  layout, two builds at once from one run.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from critic_data import UserError
from critic_data.builders.curation import Readers
from critic_data.builders.options import BuildOptions
from critic_data.builders.pipeline import build
from critic_data.manifest import read_manifest
from critic_data.rl.difficulty import run_difficulty
from critic_data.rl.evaluate import benchmark_items
from critic_data.rl.options import DifficultyOptions
from critic_data.rl.records import read_difficulty
from tests.benchmark_snapshots import contamination_case, encoded, write_mm_rlhf, write_vl_rewardbench
from tests.cli import one_line_error, run_cli
from tests.judge_server import ScriptedJudge, dataset_plan
from tests.serve import fake_server
from tests.snapshots import vlfeedback_rows

# About rows and rejects, not the card: builds here skip drawing its charts (conftest.charts_not_drawn).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("charts_not_drawn")]
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
                ("mm-copy-13", CASE.training[13][0].upper(), encoded(Image.open(io.BytesIO(CASE.training[13][1])), 55)),
                ("mm-image-8", "What else is in the picture?", CASE.training[8][1])]),
            "root": root}


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
    assert "### Benchmark decontamination" in card and f"`{found['rule']}`" in card
    snapshot = "`local snapshot, its 1 file(s) fingerprinted in build.json`"
    assert f"| vl-rewardbench | {snapshot} | {found['items']} | 8 | 1 | 8 |" in card
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
    line = one_line_error(result)
    assert line.startswith("error: --decontaminate vl-rewardbench: ") and "MMInstruction/VL-RewardBench" in line
    assert "--split" not in line


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
    for published in ("build.json", "README.md"):  # the run's and the benchmark's folders, named as published
        assert str(files["root"]) not in (out / published).read_text()
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


# --- hostile input ---------------------------------------------------------------------------------


def build_cli(files, out, *flags, timeout=120):
    return run_cli("build", "--source", "vlfeedback", "--input", files["snapshot"], "--out", out, "--test-size", "0",
                   "--num-proc", "1", *flags, timeout=timeout)


def edited_run(measured, tmp_path, name="run", **identity_changes) -> Path:
    run = shutil.copytree(measured["run"], tmp_path / name)
    identity = json.loads((run / "run.json").read_text())
    identity.update(identity_changes)
    (run / "run.json").write_text(json.dumps(identity))
    return run


# --- difficulty runs with impossible run.json values ------------------------------------------------

@pytest.mark.slow
def test_a_run_json_of_zero_samples_is_one_line(files, measured, tmp_path):
    run = edited_run(measured, tmp_path, samples=0)
    result = build_cli(files, tmp_path / "o", "--difficulty", run)
    one_line_error(result)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_run_json_of_negative_samples_is_one_line(files, measured, tmp_path):
    run = edited_run(measured, tmp_path, samples=-8)
    result = build_cli(files, tmp_path / "o", "--difficulty", run)
    one_line_error(result)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_run_json_of_a_huge_sample_count_is_one_line_not_a_hang(files, measured, tmp_path):
    run = edited_run(measured, tmp_path, samples=10**12)
    result = build_cli(files, tmp_path / "o", "--difficulty", run, "--pass-rate", "0.1:0.9", timeout=60)
    one_line_error(result)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_inspect_a_run_with_a_nan_reward_weight_prints_valid_json(measured, tmp_path):
    run = shutil.copytree(measured["run"], tmp_path / "nan-run")
    text = (run / "run.json").read_text()
    identity = json.loads(text)
    identity["rewards"] = [[name, float("nan")] for name, _ in identity["rewards"]]
    (run / "run.json").write_text(json.dumps(identity))  # NaN: what Python's json writes and reads
    result = run_cli("inspect", run, "--json", timeout=120)
    if result.returncode == 0:
        json.loads(result.stdout, parse_constant=lambda name: pytest.fail(f"inspect --json printed {name}"))
    else:
        one_line_error(result)


@pytest.mark.slow
def test_a_run_of_only_damaged_lines_is_refused_not_silently_ignored(files, measured, tmp_path):
    # every line of difficulty.jsonl is garbage: the build cannot select anything by pass rate
    run = shutil.copytree(measured["run"], tmp_path / "garbage-run")
    (run / "difficulty.jsonl").write_bytes(b"{\"id\": cut\n\x00\xff\xfe\n[1, 2]\n" * 1000)
    result = build_cli(files, tmp_path / "o", "--difficulty", run)
    assert "difficulty" in one_line_error(result)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_inspect_a_run_of_only_damaged_lines_is_one_line(measured, tmp_path):
    run = shutil.copytree(measured["run"], tmp_path / "garbage-run")
    (run / "difficulty.jsonl").write_bytes(b"{\"id\": cut\n\x00\xff\xfe\n[1, 2]\n")
    assert "holds no row" in one_line_error(run_cli("inspect", run, timeout=120))


# --- decontamination: odd unicode, other formats, several sources ---------------------------------

@pytest.mark.slow
@pytest.mark.parametrize(("training", "benchmark"), [
    ("Is the caf\u00e9 open?", "IS THE CAFE\u0301 OPEN?"),  # NFC against NFD, re-cased
    ("What is in the image?", "\u200bWhat is in the image?\u200b"),  # zero-width around it
    ("\u0645\u0627 \u0647\u0630\u0627\u061f", "\u200f\u0645\u0627  \u0647\u0630\u0627\u061f"),  # RTL mark, re-spaced
    ("Stra\u00dfe?", "STRASSE?"),  # case folding of sharp s
])
def test_odd_unicode_questions_match_their_copies(training, benchmark):
    from critic_data.builders.decontaminate import CONTAMINATED, BenchmarkIndex, TrainingPair
    from tests.benchmark_snapshots import encoded, photo

    image = encoded(photo(3))
    index = BenchmarkIndex("vl-rewardbench", [("b-1", benchmark, image)])
    found = index.match(TrainingPair(training, image))
    assert found is not None and found.kind == CONTAMINATED


@pytest.mark.slow
def test_easyr1_format_drops_the_same_copies_as_trl(files, tmp_path):
    flags = ["--decontaminate", f"vl-rewardbench={files['vl-rewardbench']}", "--image-matches", "near",
             "--drop-image-matches"]
    trl, easyr1 = tmp_path / "trl", tmp_path / "easyr1"
    assert build_cli(files, trl, *flags).returncode == 0
    result = build_cli(files, easyr1, *flags, "--format", "easyr1")
    assert result.returncode == 0, result.stderr
    assert read_manifest(easyr1).sources["vlfeedback"].counts.pairs_filtered == \
        read_manifest(trl).sources["vlfeedback"].counts.pairs_filtered
    assert read_manifest(easyr1).contamination == read_manifest(trl).contamination
    assert_accounting(easyr1)


@pytest.mark.slow
def test_several_sources_with_decontamination_keep_exact_accounting(files, tmp_path):
    from tests.snapshots import write_rlhf_v

    rlhf_v = tmp_path / "rlhf_v"
    write_rlhf_v(rlhf_v)
    out = tmp_path / "o"
    result = run_cli("build", "--source", "vlfeedback,rlhf_v", "--input", f"vlfeedback={files['snapshot']}",
                     "--input", f"rlhf_v={rlhf_v}", "--out", out, "--test-size", "0", "--num-proc", "2",
                     "--decontaminate", f"vl-rewardbench={files['vl-rewardbench']}",
                     "--decontaminate", f"mm-rlhf={files['mm-rlhf']}", "--image-matches", "near", timeout=300)
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(out)
    for name, stats in manifest.sources.items():
        c = stats.counts
        assert c.rows_read == c.rows_used + c.rows_rejected, name
        assert c.pairs_formed == c.pairs_kept + sum(c.pairs_filtered.values()) + c.duplicates_dropped, name
    assert manifest.sources["vlfeedback"].counts.pairs_filtered["contaminated"] == 9
    assert {source_id(row) for row in CONTAMINATED_ROWS}.isdisjoint(
        pq.read_table(sorted((out / "data").glob("*.parquet")), columns=["source_id"])["source_id"].to_pylist())


@pytest.mark.slow
def test_a_benchmark_parquet_that_is_damaged_is_one_line(files, tmp_path):
    bench = shutil.copytree(files["vl-rewardbench"], tmp_path / "vlrb")
    shard = next((bench / "data").glob("test-*.parquet"))
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2] + b"\x00" * 64 + data[-8:])  # footer kept, body cut
    result = build_cli(files, tmp_path / "o", "--decontaminate", f"vl-rewardbench={bench}")
    assert "vl-rewardbench" in one_line_error(result)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_benchmark_shard_that_is_a_symlink_loop_is_one_line(files, tmp_path):
    bench = shutil.copytree(files["vl-rewardbench"], tmp_path / "vlrb")
    loop = bench / "data" / "test-00001-of-00002.parquet"
    loop.symlink_to(loop)
    result = build_cli(files, tmp_path / "o", "--decontaminate", f"vl-rewardbench={bench}", timeout=60)
    one_line_error(result)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_decompression_bomb_in_a_benchmark_is_skipped_and_counted(files, tmp_path):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (12000, 12000)).save(buffer, format="PNG")  # 144 Mpx, a few hundred KB
    items = [*CASE.items, ("bomb-1", CASE.training[0][0], buffer.getvalue())]
    bench = write_vl_rewardbench(tmp_path / "vlrb", items)
    out = tmp_path / "o"
    result = build_cli(files, out, "--decontaminate", f"vl-rewardbench={bench}", "--image-matches", "near",
                       timeout=120)
    assert result.returncode == 0, result.stderr
    found = read_manifest(out).contamination["vl-rewardbench"]
    assert found["items_skipped"].get("image_too_large") == 1
    assert_accounting(out)


# --- --difficulty paths and --pass-rate forms ----------------------------------------------------------

@pytest.mark.slow
def test_a_run_through_a_symlink_selects_as_the_run_does(files, measured, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(measured["run"], target_is_directory=True)
    out = tmp_path / "o"
    result = build_cli(files, out, "--difficulty", link, "--pass-rate", " 0.125 : 0.875 ")
    assert result.returncode == 0, result.stderr
    assert kept_ids(out) == {i for i, rate in measured["rates"].items() if rate == 0.5}
    assert_accounting(out)


@pytest.mark.slow
def test_a_difficulty_run_that_is_a_file_is_one_line(files, tmp_path):
    run = tmp_path / "run.json"
    run.write_text("{}")
    assert "not a run" in one_line_error(build_cli(files, tmp_path / "o", "--difficulty", run))


@pytest.mark.slow
def test_a_difficulty_run_inside_out_is_refused(files, measured, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    shutil.copytree(measured["run"], out / "run")
    result = build_cli(files, out, "--difficulty", out / "run", "--overwrite")
    assert "overlaps" in one_line_error(result)
    assert (out / "run" / "difficulty.jsonl").exists()


@pytest.mark.slow
def test_a_difficulty_jsonl_that_is_a_fifo_is_one_line_not_a_hang(files, measured, tmp_path):
    import os

    run = tmp_path / "fifo-run"
    run.mkdir()
    shutil.copy(measured["run"] / "run.json", run / "run.json")
    os.mkfifo(run / "difficulty.jsonl")
    one_line_error(build_cli(files, tmp_path / "o", "--difficulty", run, timeout=60))
    one_line_error(run_cli("inspect", run, timeout=60))


@pytest.mark.slow
@pytest.mark.parametrize("band", ["nan:1", "1e999:1", "0:inf", "-1e-9:1", "0.2:0.1"])
def test_pass_rates_outside_a_band_are_one_line(files, measured, tmp_path, band):
    one_line_error(build_cli(files, tmp_path / "o", "--difficulty", measured["run"], "--pass-rate", band))
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_negative_zero_bound_is_recorded_as_zero(files, measured, tmp_path):
    out = tmp_path / "o"
    result = build_cli(files, out, "--difficulty", measured["run"], "--pass-rate", "-0:0.5")
    assert result.returncode == 0, result.stderr
    assert read_manifest(out).difficulty["band"] == [0.0, 0.5]
    assert "-0" not in json.dumps(read_manifest(out).difficulty["band"])
    card = (out / "README.md").read_text()  # (its command block keeps the command as it was typed)
    assert "0:0.5 (`--pass-rate`)" in card and "-0:0.5 (`--pass-rate`)" not in card


@pytest.mark.slow
def test_two_builds_at_once_with_the_same_run_both_select_alike(files, measured, tmp_path):
    import subprocess
    import sys

    outs = [tmp_path / "a", tmp_path / "b"]
    procs = [subprocess.Popen([sys.executable, "-m", "critic_data.cli", "build", "--source", "vlfeedback", "--input",
                               str(files["snapshot"]), "--out", str(out), "--test-size", "0", "--num-proc", "1",
                               "--difficulty", str(measured["run"])], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for out in outs]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert kept_ids(outs[0]) == kept_ids(outs[1]) == {i for i, r in measured["rates"].items() if r == 0.5}
    names = sorted(p.name for p in (outs[0] / "data").iterdir())
    assert all((outs[0] / "data" / n).read_bytes() == (outs[1] / "data" / n).read_bytes() for n in names)


@pytest.mark.slow
def test_a_run_measured_on_the_test_split_selects_the_test_rows(files, tmp_path):
    from critic_data.builders.options import BuildOptions
    from critic_data.builders.pipeline import build
    from critic_data.rl.difficulty import run_difficulty
    from critic_data.rl.options import DifficultyOptions
    from tests.builders.test_curation import READERS
    from tests.judge_server import ScriptedJudge, dataset_plan
    from tests.serve import fake_server

    def opts(out, **changes):
        return BuildOptions(out=out, inputs={"vlfeedback": files["snapshot"]}, test_size=0.5, seed=0, num_proc=1,
                            **changes)

    built = tmp_path / "built"
    build(opts(built))
    plan, rates = dataset_plan(built, split="test")
    run = tmp_path / "run"
    with fake_server(ScriptedJudge(plan)) as server:
        run_difficulty(DifficultyOptions(dataset=str(built), base_url=server.url, model="fake-model", out=run,
                                         concurrency=2, timeout=20, split="test"))
    out = tmp_path / "o"
    build(opts(out, difficulty=run, pass_rate=(0.125, 0.875)), readers=READERS)
    test_ids = set(pq.read_table(sorted((out / "data").glob("test-*.parquet")), columns=["id"])["id"].to_pylist())
    assert test_ids == {i for i, r in rates.items() if r == 0.5}
    recorded = read_manifest(out).difficulty
    assert recorded["split"] == "test" and recorded["rows_measured"] == len(rates)
    assert_accounting(out)
