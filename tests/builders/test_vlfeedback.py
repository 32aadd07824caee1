"""The VLFeedback builder end to end: both Hub layouts, accounting, determinism, balance, leaks."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from critic_data.builders import SOURCES
from critic_data.builders.options import BuildOptions
from critic_data.builders.pipeline import build
from critic_data.schemas import FEATURES
from tests.cli import run_cli
from tests.snapshots import (
    CORRUPT_IMAGE_ROW,
    MISSING_IMAGE_ROW,
    jpeg,
    write_vlfeedback_jsonl,
    write_vlfeedback_parquet,
)

# About rows and rejects, not the card: builds here skip drawing its charts (conftest.charts_not_drawn).
pytestmark = pytest.mark.usefixtures("charts_not_drawn")


def _rows(out: Path, split: str | None = None) -> list[dict]:
    pattern = f"{split}-*.parquet" if split else "*.parquet"
    return [row for path in sorted((out / "data").glob(pattern)) for row in pq.read_table(path).to_pylist()]


def _build(snapshot: Path, out: Path, **options) -> dict:
    return build(BuildOptions(out=out, inputs={"vlfeedback": snapshot}, **options))


@pytest.fixture(scope="module")
def jsonl_snapshot(tmp_path_factory) -> tuple[Path, list[dict]]:
    folder = tmp_path_factory.mktemp("vlf-jsonl")
    return folder, write_vlfeedback_jsonl(folder, n=40, seed=1)


@pytest.fixture(scope="module")
def parquet_snapshot(tmp_path_factory) -> tuple[Path, list[dict]]:
    folder = tmp_path_factory.mktemp("vlf-parquet")
    return folder, write_vlfeedback_parquet(folder, n=40, seed=1, shards=3)


@pytest.fixture(scope="module")
def built(jsonl_snapshot, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("out") / "vlf"
    return out, _build(jsonl_snapshot[0], out, test_size=0.25)


def test_every_input_row_is_accounted_for(built, jsonl_snapshot):
    out, manifest = built
    counts = manifest["sources"]["vlfeedback"]["counts"]
    lines = (jsonl_snapshot[0] / "vlfeedback_80k.jsonl").read_text().splitlines()
    assert counts["rows_read"] == len(lines) == 41  # 40 rows + one broken line
    assert counts["rows_read"] == counts["rows_used"] + counts["rows_rejected"]
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == counts["rows_rejected"]
    by_id = {r["source_id"]: r["reason"] for r in rejects}
    rows = jsonl_snapshot[1]
    assert by_id[rows[1]["id"]] == "rating_unparsable"
    assert by_id[rows[2]["id"]] == "empty_response"
    assert by_id[rows[MISSING_IMAGE_ROW]["id"]] == "image_missing"
    assert by_id[rows[CORRUPT_IMAGE_ROW]["id"]] == "image_undecodable"
    assert by_id["line 12"] == "json_invalid"
    assert manifest["sources"]["vlfeedback"]["rejects_by_reason"] == dict(Counter(by_id.values()))
    for reject in rejects:
        assert set(reject) == {"source", "source_id", "reason", "detail"} and reject["source"] == "vlfeedback"


def test_pair_accounting_and_margin(built):
    out, manifest = built
    counts = manifest["sources"]["vlfeedback"]["counts"]
    rows = _rows(out)
    assert counts["pairs_kept"] == len(rows) == sum(s["rows"] for s in manifest["splits"].values())
    assert counts["pairs_formed"] == (counts["pairs_kept"] + sum(counts["pairs_filtered"].values())
                                      + counts["duplicates_dropped"])
    # row 7 repeats row 6 under another id: the one duplicate, and the later row is the one dropped
    assert counts["duplicates_dropped"] == 1
    source_ids = {row["source_id"] for row in rows}
    assert "svit-conversation-1006" in source_ids and "LRV-7" not in source_ids
    assert all(row["margin"] > 0.6 for row in rows)
    assert len({row["id"] for row in rows}) == len(rows)
    # max-gap: at most one pair per source row
    assert max(Counter(row["source_id"] for row in rows).values()) == 1


def test_labels_balanced_per_split_and_answer_names_the_better_response(built, jsonl_snapshot):
    out, manifest = built
    scores = {}
    for row in jsonl_snapshot[1]:
        for c in row["completions"]:
            try:
                scores[c["response"].replace("【3†source】", "").strip()] = sum(float(v["Rating"])
                                                                              for v in c["annotations"].values())
            except ValueError:
                pass
    for split in ("train", "test"):
        rows = _rows(out, split)
        labels = Counter(row["answer"] for row in rows)
        assert abs(labels["1"] - labels["2"]) <= 1, (split, labels)
        assert labels == Counter(manifest["sources"]["vlfeedback"]["label_balance"][split])
        for row in rows:
            better, worse = (row["response_1"], row["response_2"]) if row["answer"] == "1" else (row["response_2"],
                                                                                                 row["response_1"])
            assert scores[better] > scores[worse]
    assert _rows(out, "test"), "the fixture should give a non-empty test split"


def test_no_rationale_or_debris_reaches_any_output_file(built):
    out, _ = built
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"RATIONALE-SECRET" not in data, path
            assert "【".encode() not in data, path
    for row in _rows(out):
        assert "<image>" not in row["question"]
        assert row["question"] in row["prompt"][0]["content"][-1]["text"]
    assert any("It is new." in (row["response_1"] + row["response_2"]) for row in _rows(out))


def test_split_groups_by_image_and_question(built):
    out, _ = built
    groups = {split: {(row["images"][0]["bytes"], row["question"]) for row in _rows(out, split)}
              for split in ("train", "test")}
    assert not groups["train"] & groups["test"]


def test_images_keep_their_original_bytes(built, jsonl_snapshot):
    out, _ = built
    originals = {row["id"]: jpeg(i) for i, row in enumerate(jsonl_snapshot[1])}
    for row in _rows(out):
        assert row["images"][0]["bytes"] == originals[row["source_id"]]
        assert row["images"][0]["path"] == f"{row['source_id']}.jpg"


def test_load_dataset_gives_both_splits_with_declared_features(built):
    from datasets import load_dataset

    out, manifest = built
    dataset = load_dataset(str(out))
    assert set(dataset) == {"train", "test"}
    assert dataset["train"].features.to_dict() == FEATURES
    assert len(dataset["train"]) == manifest["splits"]["train"]["rows"]
    assert dataset["train"][0]["images"][0].size == (64, 48)


@pytest.mark.slow
def test_same_seed_is_byte_identical_and_another_seed_reorders(jsonl_snapshot, tmp_path, monkeypatch):
    first = _build(jsonl_snapshot[0], tmp_path / "a", test_size=0.25)
    # the JSON Lines file in parts of 7 lines, read and prepared by two worker processes
    monkeypatch.setattr("critic_data.builders.readers.ROWS_PER_BATCH", 7)
    second = build(BuildOptions(out=tmp_path / "b", inputs={"vlfeedback": jsonl_snapshot[0]}, test_size=0.25,
                                num_proc=2))
    monkeypatch.undo()
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / "data").iterdir())
    assert files_a == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b" / "data").iterdir())
    for name in files_a:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert first["sources"] == second["sources"]
    # rejects name the same lines, in the same order
    assert (tmp_path / "a" / "rejects.jsonl").read_text() == (tmp_path / "b" / "rejects.jsonl").read_text()
    _build(jsonl_snapshot[0], tmp_path / "c", test_size=0.25, seed=1)
    answers = lambda out: {r["id"]: r["answer"] for r in _rows(out)}  # noqa: E731
    a, c = answers(tmp_path / "a"), answers(tmp_path / "c")
    assert a.keys() == c.keys() and a != c


def test_small_shards_roll_over_without_changing_rows(jsonl_snapshot, tmp_path):
    _build(jsonl_snapshot[0], tmp_path / "one", test_size=0.25)
    manifest = _build(jsonl_snapshot[0], tmp_path / "many", test_size=0.25, max_shard_bytes=1)
    shards = manifest["splits"]["train"]["files"]
    assert len(shards) > 1 and shards[-1].endswith(f"-of-{len(shards):05d}.parquet")
    assert _rows(tmp_path / "one") == _rows(tmp_path / "many")


@pytest.mark.slow
def test_parquet_layout_gives_the_same_rows_as_jsonl(parquet_snapshot, built, tmp_path, monkeypatch):
    manifest = _build(parquet_snapshot[0], tmp_path / "pq", test_size=0.25)
    assert manifest["inputs"]["vlfeedback"]["layout"] == "parquet"
    counts = manifest["sources"]["vlfeedback"]["counts"]
    assert counts["rows_read"] == 40 and counts["rows_read"] == counts["rows_used"] + counts["rows_rejected"]
    assert _rows(tmp_path / "pq") == _rows(built[0])
    # runs of two row groups (5 rows each) read and prepared by two worker processes: the same bytes
    monkeypatch.setattr("critic_data.builders.readers.ROWS_PER_BATCH", 10)
    assert len(SOURCES["vlfeedback"].open(parquet_snapshot[0], BuildOptions(out=tmp_path / "x")).parts) > 2
    build(BuildOptions(out=tmp_path / "pq2", inputs={"vlfeedback": parquet_snapshot[0]}, test_size=0.25, num_proc=2))
    monkeypatch.undo()
    for path in sorted((tmp_path / "pq" / "data").iterdir()):
        assert path.read_bytes() == (tmp_path / "pq2" / "data" / path.name).read_bytes()
    # the tables the workers handed over through files are all gone
    assert sorted(p.name for p in (tmp_path / "pq2").iterdir()) == ["README.md", "build.json", "data", "plots",
                                                                    "rejects.jsonl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pq", "pq2"]


def test_pairs_per_prompt_all_and_keep_ties(jsonl_snapshot, built, tmp_path):
    everything = _build(jsonl_snapshot[0], tmp_path / "all", pairs_per_prompt="all")
    assert (everything["sources"]["vlfeedback"]["counts"]["pairs_kept"]
            > built[1]["sources"]["vlfeedback"]["counts"]["pairs_kept"])
    manifest = _build(jsonl_snapshot[0], tmp_path / "ties", keep_ties=2)
    rows = _rows(tmp_path / "ties")
    tied = [row for row in rows if row["answer"] == "tie"]
    assert len(tied) == 2 and all(row["margin"] == 0.0 for row in tied)
    assert manifest["sources"]["vlfeedback"]["label_balance"]["train"].get("tie", 0) + \
        manifest["sources"]["vlfeedback"]["label_balance"]["test"].get("tie", 0) == 2
    assert {row["template"] for row in rows} == {"pairwise-tie-v2"}
    assert "tie if they are equally good" in rows[0]["prompt"][0]["content"][-1]["text"]


@pytest.mark.slow
def test_cli_builds_and_prints_a_summary(jsonl_snapshot, tmp_path):
    result = run_cli("build", "--source", "vlfeedback", "--input", str(jsonl_snapshot[0]), "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    assert "rejected" in result.stderr and "vlfeedback" in result.stderr
    manifest = json.loads((tmp_path / "o" / "build.json").read_text())
    assert manifest["command"][:3] == ["critic-data", "build", "--source"]
    assert (tmp_path / "o" / "README.md").read_text().startswith("---\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "nosuch"], "unknown source nosuch"),
        (["--source", "vlfeedback", "--input", "/does/not/exist"], "is not a folder"),
        (["--source", "vlfeedback", "--input", "EMPTY"], "does not look like a VLFeedback snapshot"),
        (["--source", "vlfeedback", "--input", "BADZIP"], "not a readable zip"),
        (["--source", "vlfeedback", "--input", "SNAPSHOT", "--test-size", "2"], "--test-size must be in [0, 1)"),
        (["--source", "vlfeedback", "--input", "SNAPSHOT", "--out", "TAKEN"], "already exists and is not empty"),
        (["--source", "vlfeedback", "--input", "SNAPSHOT", "--test-size", "nan"],
         "--test-size must be in [0, 1), not nan"),
        (["--source", "vlfeedback", "--input", "SNAPSHOT", "--margin", "nan"],
         "--margin must be a finite number >= 0, not nan"),
        (["--source", "vlfeedback", "--input", "SNAPSHOT", "--margin", "inf"],
         "--margin must be a finite number >= 0, not inf"),
        (["--source", "vlfeedback", "--input", "SNAPSHOT", "--margin", "-1"],
         "--margin must be a finite number >= 0, not -1.0"),
        (["--source", "vlfeedback", "--input", "SNAPSHOT", "--num-proc", "0"], "--num-proc must be at least 1, not 0"),
        (["--source", "vlfeedback", "--input", "SNAPSHOT", "--max-shard-size", "0"],
         "--max-shard-size must be more than 0 bytes, not 0"),
        (["--source", "vlfeedback", "--input", "SNAPSHOT", "--max-shard-size", "0.1b"],
         "--max-shard-size must be more than 0 bytes, not 0"),
        (["--source", "vlfeedback", "--input", "SNAPSHOT", "--max-image-pixels", "0"],
         "--max-image-pixels must be at least 1, not 0"),
        (["--source", "vlfeedback", "--input", "SNAPSHOT", "--keep-ties", "-1"],
         "--keep-ties must be a count >= 0 or 'all', not '-1'"),
        # digits to str.isdigit that int() and float() refuse; a number too long for a float
        (["--source", "vlfeedback", "--input", "SNAPSHOT", "--keep-ties", "²"],
         "--keep-ties must be a count >= 0 or 'all', not '²'"),
        (["--source", "vlfeedback", "--input", "SNAPSHOT", "--max-shard-size", "²mb"],
         "--max-shard-size '²mb' is not a size"),
        (["--source", "vlfeedback", "--input", "SNAPSHOT", "--max-shard-size", "9" * 400 + "GB"],
         "is not a size; write e.g. 500MB"),
        (["--source", "vlfeedback", "--input", "SNAPSHOT", "--input", "EMPTY"],
         "--input given twice for vlfeedback: SNAPSHOT and EMPTY"),
        (["--source", "vlfeedback", "--input", "vlfeedback=SNAPSHOT", "--input", "vlfeedback=EMPTY"],
         "--input given twice for vlfeedback: SNAPSHOT and EMPTY"),
    ],
)
def test_cli_user_errors_are_one_line(args, message, jsonl_snapshot, tmp_path):
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "BADZIP").mkdir()
    (tmp_path / "BADZIP" / "vlfeedback_80k.jsonl").write_text("{}\n")
    (tmp_path / "BADZIP" / "merged_images.zip").write_bytes(b"not a zip")
    (tmp_path / "TAKEN").mkdir()
    (tmp_path / "TAKEN" / "keep.txt").write_text("user data")
    args = [a.replace("SNAPSHOT", str(jsonl_snapshot[0])) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "o")]
    result = run_cli("build", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()  # one line, nothing else
    assert line.startswith("error: ") and message.replace("SNAPSHOT", str(jsonl_snapshot[0])) in line
    assert (tmp_path / "TAKEN" / "keep.txt").read_text() == "user data"
    assert not (tmp_path / "o").exists()


def test_offline_without_input_suggests_input(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = run_cli("build", "--source", "vlfeedback", "--out", str(tmp_path / "o"), env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--input" in result.stderr and "MMInstruction/VLFeedback" in result.stderr


def test_overwrite_replaces_a_previous_build_whole(jsonl_snapshot, tmp_path):
    out = tmp_path / "o"
    _build(jsonl_snapshot[0], out, max_shard_bytes=1)  # a shard per row
    manifest = build(BuildOptions(out=out, inputs={"vlfeedback": jsonl_snapshot[0]}, overwrite=True))
    assert sorted(f"data/{p.name}" for p in (out / "data").iterdir()) == sorted(
        name for split in manifest["splits"].values() for name in split["files"])
    assert json.loads((out / "build.json").read_text()) == manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]  # no staging, set-aside or lock file left


def _link_in_plots(out: Path) -> None:
    (out.parent / "elsewhere.png").write_bytes(b"mine")
    (out / "plots" / "mine.png").symlink_to(out.parent / "elsewhere.png")


@pytest.mark.parametrize("change, refused", [
    (lambda out: None, None),
    (lambda out: (out / "plots" / "notes.txt").write_text("mine"), "plots/notes.txt"),
    (lambda out: (out / "plots" / "drafts").mkdir(), "plots/drafts"),
    (_link_in_plots, "plots/mine.png"),
], ids=["only its charts", "a text file", "a folder", "a link"])
@pytest.mark.slow
def test_overwrite_takes_a_previous_builds_charts_for_its_own_and_nothing_more(change, refused, jsonl_snapshot,
                                                                               tmp_path):
    from critic_data import UserError

    out = tmp_path / "o"
    _build(jsonl_snapshot[0], out, seed=1)
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["label_balance.png", "length_ratio.png", "margins.png"]
    change(out)
    before = sorted((str(p.relative_to(out)), p.is_symlink() or p.is_dir() or p.read_bytes()) for p in out.rglob("*"))
    if refused is None:
        assert build(BuildOptions(out=out, inputs={"vlfeedback": jsonl_snapshot[0]}, overwrite=True))["seed"] == 0
        return
    with pytest.raises(UserError, match=f"--overwrite replaces only a previous critic-data build.*{refused}"):
        build(BuildOptions(out=out, inputs={"vlfeedback": jsonl_snapshot[0]}, overwrite=True))
    assert sorted((str(p.relative_to(out)), p.is_symlink() or p.is_dir() or p.read_bytes())
                  for p in out.rglob("*")) == before


def test_a_shard_replaced_in_place_is_read_afresh(tmp_path):
    """Open shards are reused within a process; a file rewritten at the same path must not be."""
    write_vlfeedback_parquet(tmp_path / "snap", n=20, seed=1, quirks=False, shards=1)
    first = build(BuildOptions(out=tmp_path / "a", inputs={"vlfeedback": tmp_path / "snap"}))
    write_vlfeedback_parquet(tmp_path / "snap", n=30, seed=2, quirks=False, shards=1)
    second = build(BuildOptions(out=tmp_path / "b", inputs={"vlfeedback": tmp_path / "snap"}))
    assert first["sources"]["vlfeedback"]["counts"]["rows_read"] == 20
    assert second["sources"]["vlfeedback"]["counts"]["rows_read"] == 30
    assert {r["source_id"] for r in _rows(tmp_path / "b")} != {r["source_id"] for r in _rows(tmp_path / "a")} or \
        [r["response_1"] for r in _rows(tmp_path / "b")] != [r["response_1"] for r in _rows(tmp_path / "a")]


def test_a_damaged_archive_member_is_a_reject_not_a_crash(tmp_path):
    import zipfile

    rows = write_vlfeedback_jsonl(tmp_path / "snap", n=12, quirks=False)
    archive = tmp_path / "snap" / "merged_images.zip"
    with zipfile.ZipFile(archive) as original:
        members = [(info, original.read(info)) for info in original.infolist()]
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as rewritten:
        for info, data in members:
            rewritten.writestr(info.filename, data, compress_type=zipfile.ZIP_DEFLATED)
    damaged_name = f"merged_images/{rows[3]['id']}.jpg"
    with zipfile.ZipFile(archive) as check:
        info = check.getinfo(damaged_name)
    data = bytearray(archive.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + 10 : start + 20] = bytes(b ^ 0xFF for b in data[start + 10 : start + 20])  # inside its compressed data
    archive.write_bytes(bytes(data))
    manifest = build(BuildOptions(out=tmp_path / "o", inputs={"vlfeedback": tmp_path / "snap"}))
    counts = manifest["sources"]["vlfeedback"]["counts"]
    assert counts["rows_read"] == 12 and counts["rows_rejected"] == 1
    (reject,) = [json.loads(line) for line in (tmp_path / "o" / "rejects.jsonl").read_text().splitlines()]
    assert reject["source_id"] == rows[3]["id"] and reject["reason"] == "image_undecodable"


@pytest.mark.slow
def test_cli_a_source_named_twice_is_built_once_from_its_input(jsonl_snapshot, tmp_path):
    result = run_cli("build", "--source", "vlfeedback,vlfeedback", "--source", "vlfeedback", "--input",
                  str(jsonl_snapshot[0]),
                  "--out", str(tmp_path / "o"), "--max-shard-size", " 1.5 mb ", "--num-proc", "1")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "o" / "build.json").read_text())
    assert manifest["options"]["sources"] == ["vlfeedback"] and manifest["options"]["max_shard_bytes"] == 1_572_864


@pytest.mark.slow
@pytest.mark.parametrize(("test_size", "split", "advice"),
                         [("0.999", "train", "lower --test-size to leave rows for training"),
                         ("0.0001", "test", "raise --test-size for a test split")])
def test_cli_an_empty_split_is_a_warning_with_the_advice_that_fills_it(test_size, split, advice, jsonl_snapshot,
                                                                       tmp_path):
    result = run_cli("build", "--source", "vlfeedback", "--input", str(jsonl_snapshot[0]), "--out", str(tmp_path / "o"),
                  "--test-size", test_size, "--num-proc", "1")
    assert result.returncode == 0, result.stderr
    warning = " ".join(result.stderr[result.stderr.index("warning:"):].split())
    assert warning.startswith(f"warning: the {split} split is empty and was not written; {advice}")
    manifest = json.loads((tmp_path / "o" / "build.json").read_text())
    assert manifest["splits"][split]["rows"] == 0 and sum(s["rows"] for s in manifest["splits"].values()) > 0


def test_cli_a_build_that_keeps_no_row_is_one_line_and_writes_nothing(parquet_snapshot, tmp_path):
    """An RLHF-V build pointed at the VLFeedback download: every row is row_malformed. A folder
    with no data could be neither loaded nor pushed: the build ends in one line, exit 2."""
    result = run_cli("build", "--source", "rlhf_v", "--input", str(parquet_snapshot[0]), "--out", str(tmp_path / "o"),
                  "--num-proc", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line == ("error: no rows kept (rlhf_v: 40 rows read, 40 rejected (row_malformed 40)); check that --input "
                    "holds each source's snapshot, and the options that filter pairs (--margin, --keep-ties); nothing "
                    f"was written to {tmp_path / 'o'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
