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

from critic_data import UserError
from critic_data.builders.llava_critic import parse_judge_prompt, parse_verdict
from critic_data.builders.options import BuildOptions
from critic_data.builders.pipeline import build
from critic_data.cards.dataset_card import render_dataset_card
from critic_data.hub import source_specs
from critic_data.schemas import EASYR1_FEATURES
from critic_data.schemas.prompts import FORMAT_INSTRUCTION
from tests.cli import run_cli
from tests.snapshots import (
    CRITIC_DUPLICATE_ROW,
    CRITIC_TEMPLATES,
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

# About rows and rejects, not the card: builds here skip drawing its charts (conftest.charts_not_drawn).
pytestmark = pytest.mark.usefixtures("charts_not_drawn")


def _rows(out: Path, split: str = "*") -> list[dict]:
    return [row for path in sorted((out / "data").glob(f"{split}-*.parquet"))
            for row in pq.read_table(path).to_pylist()]


def _rejects(out: Path) -> dict[str, str]:
    return {r["source_id"]: r["reason"] for r in map(json.loads, (out / "rejects.jsonl").read_text().splitlines())}


def _accounted(manifest: dict, name: str) -> dict:
    counts = manifest["sources"][name]["counts"]
    assert counts["rows_read"] == counts["rows_used"] + counts["rows_rejected"]
    assert counts["pairs_formed"] == (counts["pairs_kept"] + sum(counts["pairs_filtered"].values())
                                      + counts["duplicates_dropped"])
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
    result = run_cli("build", "--source", "llava_rlhf", "--input", snapshots[0] / "llava_rlhf", "--out", tmp_path / "o")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "needs --image-root" in result.stderr


def test_llava_critic_keeps_only_question_responses_and_verdict(snapshots, tmp_path):
    root, _, expected = snapshots
    manifest = build(BuildOptions(out=tmp_path / "o", sources=("llava_critic",),
                                  inputs={"llava_critic": root / "llava_critic"}))
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
    build(BuildOptions(out=tmp_path / "o", sources=("llava_critic",),
                       inputs={"llava_critic": snapshots[0] / "llava_critic"}, keep_ties=5))
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


@pytest.mark.parametrize("template", [0, 1, 2])  # The first/second response:, Response 1/2:, Response A/B:
@pytest.mark.parametrize("brackets", [False, True])
@pytest.mark.parametrize("closing",
                         ["\nASSISTANT:", " ASSISTANT:", "\nASSISTANT:\n", "\n\nASSISTANT: ", "\n### Assistant:",
                          "\n<|im_start|>assistant\n"])
def test_judge_prompt_closing_marker_is_not_part_of_the_second_response(template, brackets, closing):
    """The judge template's closing chat marker (`ASSISTANT:`) after the second response is
    dropped in every label style, with or without brackets around the values."""
    instruction, label_1, label_2, _, _ = CRITIC_TEMPLATES[template]
    question, first, second = "How many cats? [2]", "Two cats.", "One cat, sitting."
    wrap = (lambda v: f"[{v}]") if brackets else (lambda v: v)  # noqa: E731
    prompt = (f"<image>\n{instruction}\nQuestion: {wrap(question)}\n{label_1} {wrap(first)}\n{label_2} "
              f"{wrap(second)}{closing}")
    assert parse_judge_prompt(prompt) == (question, first, second)


def test_a_response_ending_in_the_word_assistant_keeps_it():
    _, label_1, label_2, _, _ = CRITIC_TEMPLATES[1]
    prompt = f"Judge.\nQuestion: Who answers?\n{label_1} The user.\n{label_2} Ask the voice assistant\nASSISTANT:"
    assert parse_judge_prompt(prompt) == ("Who answers?", "The user.", "Ask the voice assistant")


# Texts built to make a backtracking pattern try every split of a long run of spaces or blank
# lines; each is parsed in one child process, which must finish every parse within a second.
_HOSTILE_PARSES = r"""
import json, sys, time
from critic_data.builders.llava_critic import parse_judge_prompt, parse_verdict
from critic_data.builders.text import clean_question, clean_response
from tests.snapshots import critic_prompt
N = 100_000
runs = [" " * N, "\n" * N, " \n" * (N // 2), "\n \n" * (N // 3), "\t " * (N // 2)]
texts = [piece + run + end for piece in ("The better response", "better answer is :", "the first response is",
                                        "Response 1", "It is a", "both responses are", "\n#", "\n[",
                                        "The user's question", "ASSISTANT:", "### assistant", " \n", "]\n", "")
         for run in runs for end in ("x", "")]
texts += [critic_prompt("q", "a", "b" + run + "x", template) for run in runs for template in (0, 1, 2)]
texts += ["[" * N, "]\n" * (N // 2), "\n\nPlease compare the responses." * (N // 30), "better " * (N // 7)]
slowest = 0.0
for text in texts:
    for parse in (parse_verdict, parse_judge_prompt, clean_response, clean_question):
        started = time.perf_counter()
        parse(text)
        slowest = max(slowest, time.perf_counter() - started)
print(json.dumps({"texts": len(texts), "slowest": slowest}))
"""


@pytest.mark.slow
def test_hostile_judge_prompts_and_verdicts_parse_in_linear_time():
    """No pattern backtracks over a long run of spaces or blank lines: 100k-character texts parse
    within a second (the patterns were O(n^3) and O(n^4): 600 spaces never finished)."""
    try:
        result = subprocess.run([sys.executable, "-c", _HOSTILE_PARSES], capture_output=True, text=True, timeout=90,
                                cwd=Path(__file__).parents[2])
    except subprocess.TimeoutExpired:
        pytest.fail("parsing hostile judge prompts did not finish in 90 s")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["texts"] > 80 and report["slowest"] < 1.0, report


# An unbracketed second response runs to the end of the judge prompt, where some templates put
# their closing instructions. Only a final paragraph that is an instruction about the responses
# or the judgement is cut; a response's own paragraphs ("Based on ...", "Note ...", "Please ...")
# are kept, wherever they stand.
REAL_SECOND_RESPONSES = [
    "The sign reads STOP.\n\nBased on the shadows, it is late afternoon.\n\nNote that the sign is partly covered.",
    "Two cats.\n\nPlease note the second cat is hidden behind the sofa.",
    "It is a bar chart.\n\nWhich bar is tallest? The one for March.\n\nConsider the scale: it starts at 10.",
    "A kitchen.\n\nBased on the utensils, someone is baking.",
    "Step 1: find the label.\n\nOutput: the label says 42.",
]
TEMPLATE_TRAILERS = [
    CRITIC_TEMPLATES[1][4],
    CRITIC_TEMPLATES[1][4] + "\nASSISTANT:",
    "\n\nPlease evaluate both responses and output your judgement as 'The better response: [1|2]'.",
    "\n\nBased on the criteria above, which response is better?\n\nOutput format: The better response: "
    "[1|2]\nASSISTANT:\n",
    "\n\nYour evaluation should compare the two responses. Note: answer with Response 1 or Response 2.",
]


@pytest.mark.parametrize("second", REAL_SECOND_RESPONSES)
@pytest.mark.parametrize("trailer", ["", "\nASSISTANT:", *TEMPLATE_TRAILERS])
def test_an_unbracketed_second_response_is_kept_whole_and_only_template_trailers_are_cut(second, trailer):
    instruction, label_1, label_2, _, _ = CRITIC_TEMPLATES[1]
    prompt = f"<image>\n{instruction}\nQuestion: How many cats?\n{label_1} Two cats.\n{label_2} {second}{trailer}"
    assert parse_judge_prompt(prompt) == ("How many cats?", "Two cats.", second)


STRAY_BRACKETS = ["see item 1] then 2", "a [b]] c", "ends with ]", "x]\ny]", "[nested] and ] stray"]


@pytest.mark.parametrize("value", STRAY_BRACKETS)
@pytest.mark.parametrize("template", [0, 2])  # the bracketed templates
@pytest.mark.parametrize("slot", [0, 1, 2])  # question, first, second
def test_a_stray_closing_bracket_inside_a_bracketed_value_is_kept(value, template, slot):
    """A bracketed value ends at the last "]" before the next label (or, for the second
    response, before the template's closing marker and instructions), not at the first."""
    values = ["How many cats?", "Two cats.", "One cat."]
    values[slot] = value
    assert parse_judge_prompt(critic_prompt(*values, template)) == tuple(values)
    instruction, label_1, label_2, _, _ = CRITIC_TEMPLATES[template]
    trailer = "\nPlease output your judgement ending with 'The better response: [1|2]'\nASSISTANT:"
    prompt = f"{instruction}\nQuestion: [{values[0]}]\n{label_1} [{values[1]}]\n{label_2} [{values[2]}]{trailer}"
    assert parse_judge_prompt(prompt) == tuple(values)


# Real-looking verdict endings: a clear preference outranks an "equally" elsewhere; a tie
# stated as one stays a tie; the last stated verdict wins.
VERDICT_SENTENCES = [
    ("The first response is better, although both responses are equally fluent.", "1"),
    ("Both responses are equally good at describing the scene, but Response 2 is better at counting.", "2"),
    ("Both responses are equally helpful in tone; however, the second response is clearly better overall.", "2"),
    ("Response A is slightly better, though the two answers are equally accurate.", "1"),
    ("While both responses are equally well written, the better response: [second]", "2"),
    ("The first response is the better one, even if both responses are equally concise.", "1"),
    ("Although both responses are equally valid, Response B is much better in detail.", "2"),
    ("Both responses are equally good.", "tie"),
    ("It's a tie.", "tie"),
    ("Both responses are equally helpful and accurate, so neither stands out.", "tie"),
    ("The two answers are equally good; it is a tie.", "tie"),
    ("Neither response is better than the other: both miss the second cat.", "tie"),
    ("Response 1 is better in fluency, but overall it’s a tie.", "tie"),
    ("It's a tie on fluency, but the second response is better overall.", "2"),
    ("The better response: [tie]", "tie"),
    ("The first response is not better than the second; both have merits.", None),
]


@pytest.mark.parametrize(("text", "label"), VERDICT_SENTENCES)
def test_verdict_sentences_prefer_a_stated_preference_to_an_equally(text, label):
    assert parse_verdict(f"JUSTIFICATION: the image shows two cats on a sofa. {text}") == label


@pytest.mark.slow
def test_all_sources_in_one_build_drop_cross_source_duplicates(snapshots, tmp_path):
    root, rlhf_v, _ = snapshots
    args = ["--source", "all", "--image-root", str(root / "coco" / "train2017"), "--out", str(tmp_path / "o"),
            "--test-size", "0.3"]
    for name in ("vlfeedback", "rlhf_v", "llava_rlhf", "llava_critic"):
        args += ["--input", f"{name}={root / name}"]
    result = run_cli("build", *args)
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
    for hub_repo in ("MMInstruction/VLFeedback", "openbmb/RLHF-V-Dataset", "zhiqings/LLaVA-Human-Preference-10K",
                     "lmms-lab/llava-critic-113k"):
        assert hub_repo in card
    assert "RLHF-V: Towards Trustworthy MLLMs" in card and "Aligning Large Multimodal Models" in card
    assert card.count("@article{xiong2024llavacritic") == 1 and "@article{wang2025llavacriticr1" in card


def test_easyr1_format_is_what_the_official_fork_reads(snapshots, tmp_path):
    """--format easyr1 loads under LLaVA-Critic-R1's EasyR1 data rules unchanged
    (si0wang/LLaVA-Critic-R1@6fd42d1): examples/config.yaml:5-6 read `answer` and the image column
    `image`, examples/qwen2_5_vl_7b_llava_critic_grpo.sh:23 the prompt from `question`; verl/utils/dataset.py
    RLHFDataset loads a local folder with
    load_dataset("parquet", data_dir=..., split="train"), renders the format prompt
    (examples/format_prompt/math_format.jinja) over the prompt, and splits it at `<image>` into an
    image part and text parts (_build_messages)."""
    from datasets import load_dataset
    from jinja2 import Template

    manifest = build(BuildOptions(out=tmp_path / "o", sources=("rlhf_v",), inputs={"rlhf_v": snapshots[0] / "rlhf_v"},
                                  format="easyr1"))
    assert manifest["format"] == "easyr1"
    dataset = load_dataset("parquet", data_dir=str(tmp_path / "o"), split="train")  # as the fork loads a folder
    assert dataset.features.to_dict() == EASYR1_FEATURES
    prompt_key, answer_key, image_key = "question", "answer", "image"
    fork_format = Template("{{ content | trim }} " + FORMAT_INSTRUCTION)
    for row in dataset:
        assert image_key in row and row[image_key].size == (64, 48)  # decoded by datasets, as the fork expects
        assert row[answer_key] in ("1", "2")
        prompt = fork_format.render(content=row[prompt_key])
        parts = []
        for index, content in enumerate(prompt.split("<image>")):  # _build_messages
            if index:
                parts.append({"type": "image"})
            if content:
                parts.append({"type": "text", "text": content})
        assert [p["type"] for p in parts] == ["image", "text"]
        assert parts[1]["text"].count(FORMAT_INSTRUCTION) == 1 and parts[1]["text"].endswith(FORMAT_INSTRUCTION)
        assert "2 if Response 2 is better" in parts[1]["text"]
    card = render_dataset_card(manifest, source_specs(manifest))
    assert "--format easyr1" in card and "response_1" not in card


def test_input_without_source_name_is_refused_for_several_sources(tmp_path):
    result = run_cli("build", "--source", "vlfeedback,rlhf_v", "--input", tmp_path, "--out", tmp_path / "o")
    assert result.returncode == 2 and "--input SOURCE=DIR" in result.stderr and "Traceback" not in result.stderr


# Every example is written and built: a `from` that is not a string cannot be stored in the
# pairwise config's string column, so odd speakers are odd strings.
turn = st.fixed_dictionaries({"from": st.sampled_from(["human", "gpt", "system", "", "HUMAN"]),
                              "value": st.one_of(st.text(max_size=40), st.none())})
critic_row = st.fixed_dictionaries({
    "id": st.one_of(st.text(max_size=5), st.none()),
    "source": st.just("x"),
    "conversations": st.one_of(st.lists(turn, max_size=3), st.lists(st.fixed_dictionaries({
        "from": st.sampled_from(["human", "gpt"]),
        "value": st.sampled_from([critic_prompt("Q?", "a", "b", 0), critic_prompt("Q?", "a", "a", 1),
                                  "The better response: [2]",
                                  "equally good", "Question: only", critic_prompt("", "a", "b", 2),
                                  critic_prompt("Q?", "a", "\u200b", 0),
                                  "The first response is better, though equally fluent."])}),
                                max_size=3)),
    "image": st.one_of(st.none(), st.just({"bytes": jpeg(1), "path": None}),
                       st.just({"bytes": b"junk", "path": "x.jpg"})),
})


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(rows=st.lists(critic_row, min_size=1, max_size=8))
def test_llava_critic_never_loses_a_row(rows, tmp_path_factory):
    import pyarrow as pa

    folder = tmp_path_factory.mktemp("critic-prop")
    (folder / "pairwise").mkdir()
    table = pa.Table.from_pylist(rows, schema=pa.schema([("id", pa.string()), ("source", pa.string()),
                                                         ("conversations",
                                                          pa.list_(pa.struct([("from", pa.string()),
                                                                              ("value", pa.string())]))),
                                                         ("image",
                                                          pa.struct([("bytes", pa.binary()), ("path", pa.string())]))]))
    pq.write_table(table, folder / "pairwise" / "train-00000-of-00001.parquet")
    out = tmp_path_factory.mktemp("critic-prop-out") / "o"  # never inside the input
    try:
        manifest = build(BuildOptions(out=out, sources=("llava_critic",), inputs={"llava_critic": folder}, keep_ties=1))
    except UserError as error:  # no row kept: one line that accounts for every row, and no folder
        assert str(error).startswith(f"no rows kept (llava_critic: {len(rows)} rows read, ") and not out.exists()
        return
    counts = _accounted(manifest, "llava_critic")
    assert counts["rows_read"] == len(rows)
    assert len((out / "rejects.jsonl").read_text().splitlines()) == counts["rows_rejected"]


@pytest.mark.slow
def test_the_official_rl_set_composition_is_one_command(snapshots, tmp_path):
    """README: every pairwise row of LLaVA-Critic-113k, ties kept with the checkable label "tie", in
    LLaVA-Critic's own prompt body; counts by upstream dataset in build.json and the card."""
    root, _, critic = snapshots
    result = run_cli("build", "--source", "llava_critic", "--input", root / "llava_critic", "--keep-ties", "all",
                     "--prompt-style", "llava-critic", "--out", tmp_path / "o")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "o" / "build.json").read_text())
    stats = manifest["sources"]["llava_critic"]
    parsable = sum(row["label"] is not None for row in critic)
    assert stats["counts"]["pairs_kept"] == parsable == 11
    assert sum(split.get("tie", 0) for split in stats["label_balance"].values()) == 1
    assert stats["kept_by_origin"] == {"vlfeedback": parsable}
    assert manifest["template"] == "llava-critic-tie-v1" and manifest["options"]["keep_ties"] == "all"
    rows = _rows(tmp_path / "o")
    assert all(r["prompt"][0]["content"][-1]["text"].startswith("Given an image and a corresponding question")
               for r in rows)
    assert "| vlfeedback | 11 |" in (tmp_path / "o" / "README.md").read_text()
