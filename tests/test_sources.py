"""RLHF-V, LLaVA-RLHF and LLaVA-Critic-113k builders, and multi-source builds."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from critic_data.builders.llava_critic import parse_judge_prompt, parse_verdict
from critic_data.builders.options import BuildOptions
from critic_data.builders.pipeline import build
from critic_data.cards import render_dataset_card
from critic_data.schemas import EASYR1_FEATURES
from tests.snapshots import (
    CRITIC_DUPLICATE_ROW,
    CRITIC_TIE_ROW,
    CRITIC_UNPARSABLE_ROW,
    LLAVA_RLHF_FAULTS,
    LLAVA_RLHF_MULTITURN,
    LLAVA_RLHF_NESTED,
    RLHF_V_FAULTS,
    critic_prompt,
    jpeg,
    write_llava_critic,
    write_llava_rlhf,
    write_rlhf_v,
    write_vlfeedback_jsonl,
)


def _rows(out: Path, split: str = "*") -> list[dict]:
    return [row for path in sorted((out / "data").glob(f"{split}-*.parquet")) for row in pq.read_table(path).to_pylist()]


def _rejects(out: Path) -> dict[str, str]:
    return {r["source_id"]: r["reason"] for r in map(json.loads, (out / "rejects.jsonl").read_text().splitlines())}


def _accounted(manifest: dict, name: str) -> dict:
    counts = manifest["sources"][name]["counts"]
    assert counts["rows_read"] == counts["rows_used"] + counts["rows_rejected"]
    assert counts["pairs_formed"] == counts["pairs_kept"] + sum(counts["pairs_filtered"].values()) + counts["duplicates_dropped"]
    return counts


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory):
    root = tmp_path_factory.mktemp("snapshots")
    rlhf_v = write_rlhf_v(root / "rlhf_v", n=12)
    write_llava_rlhf(root / "llava_rlhf", root / "coco" / "train2017", n=12)
    duplicate = {**rlhf_v[0], "image": jpeg(100)}
    critic = write_llava_critic(root / "llava_critic", n=12, duplicate_of=duplicate)
    write_vlfeedback_jsonl(root / "vlfeedback", n=16)
    return root, rlhf_v, critic


def test_rlhf_v_prefers_the_correction_and_rejects_faults(snapshots, tmp_path):
    root, texts, _ = snapshots
    manifest = build(BuildOptions(out=tmp_path / "o", sources=("rlhf_v",), inputs={"rlhf_v": root / "rlhf_v"}))
    counts = _accounted(manifest, "rlhf_v")
    assert counts["rows_read"] == 12 and counts["rows_rejected"] == len(RLHF_V_FAULTS)
    assert _rejects(tmp_path / "o") == {str(5000 + i): reason for i, reason in RLHF_V_FAULTS.items()}
    rows = _rows(tmp_path / "o")
    assert len(rows) == 12 - len(RLHF_V_FAULTS)
    for row in rows:
        text = texts[int(row["source_id"]) - 5000]
        chosen = row[f"response_{row['answer']}"]
        assert chosen == text["chosen"] and row["margin"] is None
        assert "<image>" not in row["question"]


def test_llava_rlhf_renders_context_and_guards_the_image_root(snapshots, tmp_path):
    root, _, _ = snapshots
    options = BuildOptions(out=tmp_path / "o", sources=("llava_rlhf",), inputs={"llava_rlhf": root / "llava_rlhf"},
                           image_root=root / "coco" / "train2017")
    manifest = build(options)
    _accounted(manifest, "llava_rlhf")
    assert _rejects(tmp_path / "o") == {f"llava-rlhf-{i}": reason for i, reason in LLAVA_RLHF_FAULTS.items()}
    rows = {row["source_id"]: row for row in _rows(tmp_path / "o")}
    assert f"llava-rlhf-{LLAVA_RLHF_NESTED}" in rows  # conversation wrapped in an extra list is read
    multiturn = rows[f"llava-rlhf-{LLAVA_RLHF_MULTITURN}"]["question"]
    assert multiturn == "User: What animal is this?\nAssistant: It is a cat.\nUser: What colour is its fur?"
    original = json.loads((root / "llava_rlhf" / "llava_7b_v1_preference.json").read_text())
    for source_id, row in rows.items():
        source = original[int(source_id.rsplit("-", 1)[1])]
        assert row[f"response_{row['answer']}"] == source[f"output_{source['preference']}"]["value"]
        assert row["images"][0]["bytes"] == (root / "coco" / "train2017" / source["image"]).read_bytes()
    assert all(row["images"][0]["bytes"] != jpeg(999) for row in rows.values())


def test_llava_rlhf_needs_an_image_root(snapshots, tmp_path):
    result = subprocess.run([sys.executable, "-m", "critic_data.cli", "build", "--source", "llava_rlhf", "--input",
                             str(snapshots[0] / "llava_rlhf"), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "needs --image-root" in result.stderr


def test_llava_critic_keeps_only_question_responses_and_verdict(snapshots, tmp_path):
    root, _, expected = snapshots
    manifest = build(BuildOptions(out=tmp_path / "o", sources=("llava_critic",), inputs={"llava_critic": root / "llava_critic"}))
    counts = _accounted(manifest, "llava_critic")
    assert _rejects(tmp_path / "o") == {f"critic_{CRITIC_UNPARSABLE_ROW}": "verdict_unparsable"}
    assert counts["pairs_filtered"] == {"tie_dropped": 1}
    rows = {row["source_id"]: row for row in _rows(tmp_path / "o")}
    assert len(rows) == 10
    for source_id, row in rows.items():
        truth = expected[int(source_id.split("_")[1])]
        assert row["question"] == truth["question"].replace("<image>\n", "")
        assert {row["response_1"], row["response_2"]} == {truth["first"], truth["second"]}
        better = truth["first"] if truth["label"] == "1" else truth["second"]
        assert row[f"response_{row['answer']}"] == better
    for path in (tmp_path / "o").rglob("*"):
        if path.is_file():
            assert b"CRITERIA-SECRET" not in path.read_bytes() and b"JUSTIFICATION-SECRET" not in path.read_bytes()


def test_llava_critic_ties_follow_keep_ties(snapshots, tmp_path):
    build(BuildOptions(out=tmp_path / "o", sources=("llava_critic",), inputs={"llava_critic": snapshots[0] / "llava_critic"}, keep_ties=5))
    ties = [row for row in _rows(tmp_path / "o") if row["answer"] == "tie"]
    assert [row["source_id"] for row in ties] == [f"critic_{CRITIC_TIE_ROW}"]


@pytest.mark.parametrize("template", [0, 1, 2])
def test_judge_prompt_parsing_every_label_style(template):
    question, first, second = "How many cats? [2]", "Two [maybe three] cats.", "One cat."
    assert parse_judge_prompt(critic_prompt(question, first, second, template)) == (question, first, second)


@pytest.mark.parametrize(
    ("text", "label"),
    [("...The better response: [first]", "1"), ("The better response: second.", "2"), ("The better response: [1]", "1"),
     ("the better response is: 2", "2"), ("The better response: [A]", "1"), ("Overall, the better response: B", "2"),
     ("The first response is better at first, but the better response: [second]", "2"),
     ("Response B is clearly better.", "2"), ("Both responses are equally good.", "tie"), ("No idea.", None),
     ("The better response: [first] ... on reflection, the better response: [second]", "2")],
)
def test_verdict_parsing(text, label):
    assert parse_verdict(text) == label


def test_all_sources_in_one_build_drop_cross_source_duplicates(snapshots, tmp_path):
    root, rlhf_v, _ = snapshots
    args = ["--source", "all", "--image-root", str(root / "coco" / "train2017"), "--out", str(tmp_path / "o"), "--test-size", "0.3"]
    for name in ("vlfeedback", "rlhf_v", "llava_rlhf", "llava_critic"):
        args += ["--input", f"{name}={root / name}"]
    result = subprocess.run([sys.executable, "-m", "critic_data.cli", "build", *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "o" / "build.json").read_text())
    assert list(manifest["sources"]) == ["vlfeedback", "rlhf_v", "llava_rlhf", "llava_critic"]
    for name in manifest["sources"]:
        _accounted(manifest, name)
    assert manifest["sources"]["llava_critic"]["counts"]["duplicates_dropped"] == 1
    rows = _rows(tmp_path / "o")
    assert f"critic_{CRITIC_DUPLICATE_ROW}" not in {r["source_id"] for r in rows if r["source"] == "llava_critic"}
    assert sum(m["counts"]["pairs_kept"] for m in manifest["sources"].values()) == len(rows)
    for split in ("train", "test"):
        by_source = Counter((r["source"], r["answer"]) for r in _rows(tmp_path / "o", split))
        for name in manifest["sources"]:
            assert abs(by_source[(name, "1")] - by_source[(name, "2")]) <= 1, (split, name, by_source)
    card = (tmp_path / "o" / "README.md").read_text()
    assert "license: cc-by-nc-4.0" in card  # the most restrictive source wins
    for hub_repo in ("MMInstruction/VLFeedback", "openbmb/RLHF-V-Dataset", "zhiqings/LLaVA-Human-Preference-10K", "lmms-lab/llava-critic-113k"):
        assert hub_repo in card
    assert "RLHF-V: Towards Trustworthy MLLMs" in card and "Aligning Large Multimodal Models" in card
    assert card.count("@article{xiong2024llavacritic") == 1 and "@article{wang2025llavacriticr1" in card


def test_easyr1_format_is_the_flat_reference_layout(snapshots, tmp_path):
    from datasets import load_dataset

    manifest = build(BuildOptions(out=tmp_path / "o", sources=("rlhf_v",), inputs={"rlhf_v": snapshots[0] / "rlhf_v"}, format="easyr1"))
    assert manifest["format"] == "easyr1"
    dataset = load_dataset(str(tmp_path / "o"))
    assert manifest["splits"]["test"]["rows"] == 0 and set(dataset) == {"train"}  # 7 rows: no test group drawn
    assert dataset["train"].features == EASYR1_FEATURES
    row = dataset["train"][0]
    assert row["question"].startswith("<image>You are shown an image") and row["answer"] in ("1", "2")
    assert "\\boxed{1}" in row["question"]
    card = render_dataset_card(manifest)
    assert "--format easyr1" in card and "response_1" not in card


def test_input_without_source_name_is_refused_for_several_sources(tmp_path):
    result = subprocess.run([sys.executable, "-m", "critic_data.cli", "build", "--source", "vlfeedback,rlhf_v",
                             "--input", str(tmp_path), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert result.returncode == 2 and "--input SOURCE=DIR" in result.stderr and "Traceback" not in result.stderr


turn = st.fixed_dictionaries({"from": st.sampled_from(["human", "gpt", "system", 3]), "value": st.one_of(st.text(max_size=40), st.none())})
critic_row = st.fixed_dictionaries({
    "id": st.one_of(st.text(max_size=5), st.none()),
    "source": st.just("x"),
    "conversations": st.one_of(st.lists(turn, max_size=3), st.lists(st.fixed_dictionaries({
        "from": st.sampled_from(["human", "gpt"]),
        "value": st.sampled_from([critic_prompt("Q?", "a", "b", 0), critic_prompt("Q?", "a", "a", 1), "The better response: [2]",
                                  "equally good", "Question: only", critic_prompt("", "a", "b", 2)])}), max_size=3)),
    "image": st.one_of(st.none(), st.just({"bytes": jpeg(1), "path": None}), st.just({"bytes": b"junk", "path": "x.jpg"})),
})


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(rows=st.lists(critic_row, min_size=1, max_size=8))
def test_llava_critic_never_loses_a_row(rows, tmp_path_factory):
    import pyarrow as pa

    folder = tmp_path_factory.mktemp("critic-prop")
    (folder / "pairwise").mkdir()
    table = pa.Table.from_pylist(rows, schema=pa.schema([("id", pa.string()), ("source", pa.string()),
                                                         ("conversations", pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
                                                         ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())]))])) \
        if all(all(isinstance(t["from"], str) for t in r["conversations"]) for r in rows) else None
    if table is None:
        return
    pq.write_table(table, folder / "pairwise" / "train-00000-of-00001.parquet")
    manifest = build(BuildOptions(out=folder / "o", sources=("llava_critic",), inputs={"llava_critic": folder}, keep_ties=1))
    counts = _accounted(manifest, "llava_critic")
    assert counts["rows_read"] == len(rows)
    assert len((folder / "o" / "rejects.jsonl").read_text().splitlines()) == counts["rows_rejected"]
