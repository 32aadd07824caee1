"""Benchmark decontamination (builders/decontaminate.py) on benchmark snapshots written to disk in
both layouts eval reads, whose items copy some training rows (tests/benchmark_snapshots.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from critic_data import UserError
from critic_data.builders.decontaminate import (
    BENCHMARKS,
    CONTAMINATED,
    IMAGE_ONLY,
    Decontamination,
    TrainingPair,
    load_benchmark,
    question_key,
)
from critic_data.builders.duplicates import normalize_text, thumbnail
from critic_data.builders.keys import image_digest
from critic_data.builders.text import clean_question
from critic_data.rl.evaluate import benchmark_items
from tests.benchmark_snapshots import contamination_case, full_width, write_mm_rlhf, write_vl_rewardbench
from tests.hub_server import LocalHub, client_env

WRITERS = {"vl-rewardbench": write_vl_rewardbench, "mm-rlhf": write_mm_rlhf}


@pytest.fixture(scope="module")
def case():
    return contamination_case()


@pytest.fixture(scope="module")
def snapshots(case, tmp_path_factory):
    return {name: write(tmp_path_factory.mktemp(name), case.items) for name, write in WRITERS.items()}


def _item_id(name: str, item_id: str) -> str:
    return f"{item_id}#0" if name == "mm-rlhf" else item_id  # eval numbers MM-RLHF's rows within their id


def _expected(case, name: str, near_image_only: bool) -> dict:
    expected = {**case.expected, **(case.near_image_only if near_image_only else {})}
    return {row: (kind, _item_id(name, item_id)) for row, (kind, item_id) in expected.items()}


@pytest.mark.parametrize("near_image_only", [False, True], ids=["exact-image-only", "near-image-only"])
@pytest.mark.parametrize("name", list(WRITERS))
def test_exactly_the_copies_are_matched(case, snapshots, name, near_image_only):
    """Re-encoded and resized copies with re-spaced, re-cased, full-width or `<image>`-led questions are
    contaminated; the same image under another question is an image-only match (by identical bytes,
    and by near-duplicate when asked); a shared question over another image, and unrelated items, are clean."""
    index = load_benchmark(name, snapshots[name], benchmark_items, near_image_only)
    found = {}
    for row, (question, image) in enumerate(case.training):
        if (match := index.match(TrainingPair(question, image))) is not None:
            assert match.benchmark == name
            found[row] = (match.kind, match.item_id)
    assert found == _expected(case, name, near_image_only)


def test_counts_and_drops(case, snapshots):
    """Each row's pairs are counted under its verdict; contaminated ones are dropped, image-only ones
    only when asked; build.json's record says how many, with the rule and where the items came from."""
    for drop_image_only in (False, True):
        index = load_benchmark("vl-rewardbench", snapshots["vl-rewardbench"], benchmark_items)
        decontamination = Decontamination([index], drop_image_only=drop_image_only)
        dropped = {row for row, (question, image) in enumerate(case.training)
                   if decontamination.check(TrainingPair(question, image), pairs=3) is not None}
        contaminated = {row for row, (kind, _) in case.expected.items() if kind == CONTAMINATED}
        image_only = {row for row, (kind, _) in case.expected.items() if kind == IMAGE_ONLY}
        assert dropped == (contaminated | image_only if drop_image_only else contaminated)
        record = decontamination.record()["vl-rewardbench"]
        assert record["pairs_contaminated"] == 3 * len(contaminated)
        assert record["pairs_image_only"] == 3 * len(image_only)
        assert (record["items_contaminated"], record["items_image_only"]) == (len(contaminated), len(image_only))
        assert record["items"] == len(case.items) - case.damaged
        assert record["items_skipped"] == {"image_undecodable": case.damaged}  # skipped and counted, not an error
        assert record["image_only_dropped"] is drop_image_only and "NFKC" in record["rule"]
        assert record["origin"]["kind"] == "local"
        assert [f["path"] for f in record["origin"]["files"]] == ["data/test-00000-of-00001.parquet"]


def test_several_benchmarks_count_apart(case, snapshots):
    """A pair matched in two benchmarks counts in both, and is dropped once (the first benchmark's match)."""
    decontamination = Decontamination([load_benchmark(name, snapshots[name], benchmark_items) for name in WRITERS])
    question, image = case.training[0]
    assert decontamination.check(TrainingPair(question, image)).benchmark == "vl-rewardbench"
    assert [record["pairs_contaminated"] for record in decontamination.record().values()] == [1, 1]


@pytest.mark.parametrize("near_image_only", [False, True], ids=["exact-image-only", "near-image-only"])
def test_what_the_build_knows_gives_the_same_verdicts(case, snapshots, near_image_only):
    """The question's key computed in a worker, the image's digest (the build digests every image)
    and thumbnail (a multi-source build has it) decide as computing them here would; the image's
    bytes, given as a function, are fetched only for the rows whose image must be decoded."""
    index = load_benchmark("mm-rlhf", snapshots["mm-rlhf"], benchmark_items, near_image_only=near_image_only)
    fetched = []
    for row, (question, image) in enumerate(case.training):
        plain = index.match(TrainingPair(question, image))
        known = TrainingPair(image=image, key=question_key(question), digest=image_digest(image),
                             known_thumbnail=thumbnail(image))
        assert index.match(known) == plain
        lazy = TrainingPair(key=question_key(question), digest=image_digest(image),
                            image=lambda row=row, image=image: fetched.append(row) or image)
        assert index.match(lazy) == plain
    # decoded: the rows whose question a benchmark item with a sound image shares (row 10: another image),
    # or with the near-duplicate search every row; none whose bytes a benchmark item holds (rows 5, 8)
    shared_question = {row for row, (kind, _) in case.expected.items() if kind == CONTAMINATED} | {10}
    assert set(fetched) == (set(range(len(case.training))) if near_image_only else shared_question) - {5, 8}


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
       | st.text(alphabet=" \t\n\x0b\x0c\r\x1c\x1fAbZ<>image|", max_size=40))
def test_question_key_is_the_cleaned_normalised_text(text):
    """The ASCII shortcut gives what `clean_question`, then the invisible format characters removed, then NFKC,
    case folding and whitespace collapse give."""
    visible = "".join(c for c in clean_question(text) if unicodedata.category(c) != "Cf")
    assert question_key(text) == normalize_text(visible)


def test_question_key_folds_the_usual_variants():
    plain = question_key("What colour is the car?")
    for variant in ("  what COLOUR\n is the   car? ", full_width("What colour is the car?"),
                    "<image>\nWhat colour is the car?", "What colour is the car?\u3000"):
        assert question_key(variant) == plain
    assert question_key("What colour is the bus?") != plain


def test_a_missing_folder_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"--decontaminate vl-rewardbench=.*no such folder; .*hf download "
                                        r"MMInstruction/VL-RewardBench --repo-type dataset --revision [0-9a-f]{40}"):
        load_benchmark("vl-rewardbench", tmp_path / "missing", benchmark_items)


def test_a_benchmark_without_usable_items_is_one_line(case, tmp_path):
    folder = write_mm_rlhf(tmp_path / "mm", [item for item in case.items if item[0] == "damaged"])
    with pytest.raises(UserError, match=r"holds no usable item \(skipped: \{'image_undecodable': 1\}\)"):
        load_benchmark("mm-rlhf", folder, benchmark_items)


def test_offline_without_a_cached_copy_is_one_line(tmp_path, monkeypatch):
    """Without a path the benchmark is fetched at its pinned revision; offline, with nothing cached, the
    one line says how to download it and how to pass it."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    benchmark = BENCHMARKS["mm-rlhf"]
    with pytest.raises(UserError) as raised:
        load_benchmark("mm-rlhf", None, benchmark_items)
    line = str(raised.value)
    assert "\n" not in line and "--input" not in line and "pass --decontaminate mm-rlhf=DIR" in line
    assert f"hf download {benchmark.repo_id} --repo-type dataset --revision {benchmark.revision}" in line


def repo_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_fetched_from_the_hub_at_the_pinned_revision(case, tmp_path):
    """Without a path the benchmark's files (only those eval reads) are fetched at the pinned commit,
    not at the branch head, which has moved on; build.json records that commit. Run as the build
    runs it: in its own process, HF_ENDPOINT at a local Hub (tests/hub_server.py)."""
    hub = LocalHub(tmp_path / "hub-storage").start()
    try:
        repo = BENCHMARKS["vl-rewardbench"].repo_id
        pinned = hub.put_files("dataset", repo, {**repo_files(write_vl_rewardbench(tmp_path / "v1", case.items)),
                                                 "README.md": b"# VL-RewardBench\n", "extra/notes.txt": b"unread"})
        hub.put_files("dataset", repo, repo_files(write_vl_rewardbench(tmp_path / "v2", case.items[:3])))
        script = ("import json, sys; from critic_data.builders import decontaminate as d; "
                  "from critic_data.rl.evaluate import benchmark_items; "
                  f"d.BENCHMARKS['vl-rewardbench'] = d.Benchmark({repo!r}, {pinned!r}, ('data/test-*.parquet',)); "
                  "index = d.load_benchmark('vl-rewardbench', None, benchmark_items); "
                  "print(json.dumps({'items': len(index.ids), 'origin': index.origin}))")
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                                env=client_env(tmp_path, hub.url))
    finally:
        hub.stop()
    record = json.loads(result.stdout)
    assert record == {"items": len(case.items) - case.damaged,
                      "origin": {"kind": "hub", "repo_id": repo, "revision": pinned, "commit": pinned}}
    fetched = {path.split("/resolve/", 1)[1].split("/", 1)[1] for method, path, _ in hub.requests
               if method == "GET" and "/resolve/" in path}
    assert fetched == {"data/test-00000-of-00001.parquet"}
