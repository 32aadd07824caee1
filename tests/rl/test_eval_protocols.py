"""`critic-data eval --protocol paper`: the official critic-eval scripts' requests, and the official
scorers' arithmetic, checked on the scripted server of tests/serve.py (fast: no model runs).

The official texts below are copied here by hand from si0wang/LLaVA-Critic-R1@6fd42d1
(eval_llama32v/model_vlreward_llama32v.py:15, :58-76, :121; model_mmrlhf_llama32v.py:15-19,
:63-81, :148), so that a change to the tool's copy fails a test. The MM-RLHF and VL-RewardBench
tables are worked out by hand from yfzhang114/MM-RLHF@7c8af1d llava/eval/cal_performance_mmreweard_bench.py
and EvolvingLMMs-Lab/lmms-eval@75571cf lmms_eval/tasks/vl_rewardbench/utils.py:113-127, :148.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from critic_data import UserError
from critic_data.rl.evaluate import EvalOptions, paper_verdict, run_eval, score, vlrb_category
from critic_data.rl.records import Judgement
from tests.cli import run_cli
from tests.serve import Reply, completion, fake_server, prompt_of

MODEL = "fake-model"
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
OFFICIAL_PROMPT = ''' You are a highly capable multimodal AI assistant tasked with evaluating answers to visual \
questions. Please analyze the following image and question, then determine which of the two provided answers is better.

Question: {question}

Answer 1: {answer1}

Answer 2: {answer2}

Please evaluate both answers based on the following criteria:
1. Accuracy: How well does the answer align with the visual information in the image?
2. Completeness: Does the answer fully address all aspects of the question?
3. Clarity: Is the answer easy to understand and well-articulated?
4. Relevance: Does the answer directly relate to the question and the image?

After your evaluation, please:
1. Explain your reasoning for each criterion.
2. Provide an overall judgment on which answer is better (Answer 1 or Answer 2). For example: Overall Judgment: \
Answer X is better.

Your response should be structured and detailed, demonstrating your understanding of both the visual and textual \
elements of the task.'''
INSTRUCT_PROMPT = (r"You FIRST think about the reasoning process as an internal monologue and then provide the final "
                   r"answer. The reasoning process MUST BE enclosed within <think> </think> tags. The final answer "
                   r"MUST BE put in \boxed{}.")


def png(size, colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def chats(server) -> list[dict]:
    return [body for path, body in server.requests if path.endswith("/chat/completions")]


def images_of(request) -> list[Image.Image]:
    """The images of a chat request, decoded from their data URLs."""
    urls = [part["image_url"]["url"] for part in request["messages"][-1]["content"] if part["type"] == "image_url"]
    return [Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) for url in urls]


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def judge_by_marker(request) -> Reply:
    """Names the answer holding CHOSEN, or REJECTED when the question says WRONG; in the official wording."""
    text = prompt_of(request)
    chosen_first = text.index("CHOSEN") < text.index("REJECTED")
    right = "1" if chosen_first else "2"
    verdict = right if "WRONG" not in text else {"1": "2", "2": "1"}[right]
    return completion(f"<think>compare</think> Overall Judgment: Answer {verdict} is better. "
                      f"\\boxed{{Answer {verdict}}}")


# --- VL-RewardBench ------------------------------------------------------------------------------

def write_vlrb(root, rows):
    """rows: (id, image struct) ; responses CHOSEN-k / REJECTED-k, the first preferred."""
    table = [{"id": item_id, "query": f"What is {{x}} in picture {k}?", "response": [f"CHOSEN-{k}.", f"REJECTED-{k}."],
              "image": image, "human_ranking": [0, 1], "query_source": "anything"}
             for k, (item_id, image) in enumerate(rows)]
    (root / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(table), root / "data" / "test-00000-of-00001.parquet")
    return root


def test_paper_protocol_sends_the_official_request_on_vl_rewardbench(tmp_path):
    """System turn, the official prompt verbatim (leading space; the instruction appended with no
    separator, as `--is-thinking` does), one image part resized to the scripts' pixel bounds,
    max_tokens 4096; an image under 28 px is skipped and counted, as the script skips it."""
    root = write_vlrb(tmp_path / "vlrb", [
        ("RLAIF-V-Dataset_1", {"bytes": png((100, 60)), "path": "a.png"}),  # under 224*224 px: scaled up
        ("mathverse_2", {"bytes": png((2000, 1500)), "path": "b.png"}),  # over 1280*28*28 px: scaled down
        ("wildvision-battle-3", {"bytes": png((40, 20)), "path": "c.png"}),  # 20 px high: skipped
    ])
    with fake_server(judge_by_marker) as server:
        summary = run_eval(EvalOptions(base_url=server.url, model=MODEL, benchmark="vl-rewardbench", input=str(root),
                                       out=tmp_path / "run", protocol="paper"))
        requests = chats(server)
    assert summary["skipped"] == {"image_under_28px": 1}
    assert summary["protocol"] == "paper" and summary["thinking"] is True
    assert summary["n"] == 2 and summary["accuracy"] == 1.0
    records = {r["id"]: r for r in lines(tmp_path / "run" / "results.jsonl")}
    assert len(requests) == 2
    sizes = {}
    for request in requests:
        assert request["messages"][0] == SYSTEM and len(request["messages"]) == 2
        assert request["max_tokens"] == 4096 and request["temperature"] == 0
        parts = request["messages"][1]["content"]
        assert [p["type"] for p in parts] == ["image_url", "text"]
        k = int(re.search(r"picture (\d)", parts[1]["text"]).group(1))
        item_id = ["RLAIF-V-Dataset_1", "mathverse_2"][k]
        answers = [f"CHOSEN-{k}.", f"REJECTED-{k}."]
        if records[item_id]["presented"] == [2, 1]:
            answers.reverse()
        question = f"What is {{x}} in picture {k}?"
        assert parts[1]["text"] == OFFICIAL_PROMPT.format(question=question, answer1=answers[0],
                                                          answer2=answers[1]) + INSTRUCT_PROMPT
        [image] = images_of(request)
        sizes[item_id] = image.size
    # Qwen's smart_resize into [224*224, 1280*28*28] pixels, sides multiples of 28 (worked out by hand)
    assert sizes == {"RLAIF-V-Dataset_1": (308, 196), "mathverse_2": (1148, 840)}
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["protocol"] == "paper" and run["thinking"] is True and run["max_tokens"] == 4096


def test_an_image_qwen_cannot_take_fails_alone(tmp_path):
    root = write_vlrb(tmp_path / "vlrb", [("mathverse_1", {"bytes": png((6100, 30)), "path": "a.png"}),
                                          ("mathverse_2", {"bytes": png((300, 300)), "path": "b.png"})])
    with fake_server(judge_by_marker) as server:
        summary = run_eval(EvalOptions(base_url=server.url, model=MODEL, benchmark="vl-rewardbench", input=str(root),
                                       out=tmp_path / "run", protocol="paper"))
    assert summary["n"] == 1 and summary["failed"] == 1
    assert summary["first_failure"] == ("mathverse_1: the image is 6100x30 pixels, an aspect ratio over 200, "
                                        "which Qwen2-VL's processors refuse")


@pytest.mark.slow
def test_no_thinking_and_max_tokens_through_the_cli(tmp_path):
    root = write_vlrb(tmp_path / "vlrb", [("mmmu_pro_1", {"bytes": png((300, 300)), "path": "a.png"})])
    with fake_server(judge_by_marker) as server:
        done = run_cli("eval", "--base-url", server.url, "--model", MODEL, "--benchmark", "vl-rewardbench", "--input",
                       str(root), "--out", str(tmp_path / "run"), "--protocol", "paper", "--no-thinking",
                       "--max-tokens", "321")
        [request] = chats(server)
    assert done.returncode == 0, done.stderr
    text = request["messages"][1]["content"][1]["text"]
    assert text.endswith("elements of the task.") and "FIRST think" not in text
    assert request["max_tokens"] == 321 and request["messages"][0] == SYSTEM
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["protocol"] == "paper" and summary["thinking"] is False


def test_the_default_protocol_keeps_the_trained_template(tmp_path):
    root = write_vlrb(tmp_path / "vlrb", [("mmmu_pro_1", {"bytes": png((300, 300)), "path": "a.png"})])
    with fake_server(lambda request: completion("\\boxed{1}")) as server:
        summary = run_eval(EvalOptions(base_url=server.url, model=MODEL, benchmark="vl-rewardbench", input=str(root),
                                       out=tmp_path / "run"))
        [request] = chats(server)
    assert summary["protocol"] == "critic-data" and request["max_tokens"] == 2048
    assert [m["role"] for m in request["messages"]] == ["user"]  # no system turn: the model's default, as trained
    assert "[Response 1]" in prompt_of(request) and images_of(request)[0].size == (300, 300)  # sent as stored


@pytest.mark.parametrize("text, verdict", [
    ("<think>x</think> \\boxed{1}", "1"),
    ("<think>x</think> \\boxed{Answer 2}", "2"),
    ("\\boxed{\\text{Answer 1}}.", "1"),
    ("Overall Judgment: Answer 2 is better.", "2"),
    ("**Overall Judgment:** Answer 1 is the better one.", "1"),
    ("Answer 2 is slightly better", "2"),
    ("At first Answer 1 is better... Overall Judgment: Answer 2 is better", "2"),  # the last phrase
    ("\\boxed{2} although Answer 1 is better in style", "2"),  # the box first
    ("\\boxed{tie}; Overall Judgment: Answer 1 is better", "1"),  # a box that names no answer: the phrase
    ("Answer 3 is better", None),
    ("I cannot decide.", None),
    ("", None),
])
def test_paper_verdicts_are_read_from_the_last_box_then_the_official_phrase(text, verdict):
    assert paper_verdict(text) == verdict


@pytest.mark.parametrize("item_id, category", [
    ("RLAIF-V-Dataset_12", "hallucination"), ("RLHF-V-Dataset_3", "hallucination"),
    ("hallucination_pair-7", "hallucination"), ("mathverse_5", "reasoning"), ("mmmu_pro_2", "reasoning"),
    ("wildvision-battle-9", "general"), ("VLFeedback-4", "general"),
    ("LRVInstruction-8", "general"),  # not in lmms-eval's table: its fallback
    ("something_new-1", "general"), ("", "general"),
])
def test_vl_rewardbench_categories_follow_lmms_eval(item_id, category):
    assert vlrb_category(item_id) == category


def test_vl_rewardbench_macro_is_the_mean_over_the_categories_present():
    def record(category, correct):
        return Judgement(f"{category}{correct}", "1", (1, 2), "1" if correct else "2", {"category": category})
    records = [record("general", True), record("general", False), record("reasoning", True)]
    metrics = score(records, "vl-rewardbench")
    assert {name: (c["n"], c["accuracy"]) for name, c in metrics["categories"].items()} == {
        "general": (2, 0.5), "reasoning": (1, 1.0)}
    assert metrics["macro_accuracy"] == pytest.approx(0.75)  # lmms-eval averages the categories that occur


def test_paper_protocol_refuses_a_built_dataset(built_dataset, tmp_path):
    done = run_cli("eval", "--base-url", "http://127.0.0.1:9/v1", "--model", MODEL, "--benchmark", "built", "--input",
                   str(built_dataset), "--out", str(tmp_path / "run"), "--protocol", "paper")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "--protocol paper" in done.stderr and "vl-rewardbench" in done.stderr
    with pytest.raises(UserError, match="--protocol"):
        EvalOptions(base_url="", model="", benchmark="vl-rewardbench", input=".", out=tmp_path, protocol="papers")


def test_resume_under_another_protocol_is_refused(tmp_path):
    root = write_vlrb(tmp_path / "vlrb", [("mmmu_pro_1", {"bytes": png((300, 300)), "path": "a.png"}),
                                          ("mmmu_pro_2", {"bytes": png((300, 300)), "path": "b.png"})])
    with fake_server(judge_by_marker) as server:
        run_eval(EvalOptions(base_url=server.url, model=MODEL, benchmark="vl-rewardbench", input=str(root),
                             out=tmp_path / "run", protocol="paper", limit=1))
        with pytest.raises(UserError, match='--protocol was "paper", now "critic-data"'):
            run_eval(EvalOptions(base_url=server.url, model=MODEL, benchmark="vl-rewardbench", input=str(root),
                                 out=tmp_path / "run", resume=True, max_tokens=4096))
        with pytest.raises(UserError, match="--thinking was true, now false"):
            run_eval(EvalOptions(base_url=server.url, model=MODEL, benchmark="vl-rewardbench", input=str(root),
                                 out=tmp_path / "run", resume=True, protocol="paper", thinking=False))


# --- MM-RLHF-RewardBench -------------------------------------------------------------------------

# (id, image path or frame folder, the judge answers wrongly); worked out by hand below.
MMRLHF_TABLE = [
    ("m1", "mcq/1.png", False), ("m1", "mcq/2.png", False), ("m2", "mcq/3.png", True),
    ("l1", "long/1.png", False), ("l1", "long/2.png", True),
    ("s1", "short/1.png", False),
    ("x1", "safety/1.png", False), ("x1", "short/2.png", False),
    ("v1", "video/clip", False),
    ("o1", "other/1.png", True),
]
FRAMES = 40


def write_mmrlhf(root, table=MMRLHF_TABLE):
    images = root / "images"
    lines_ = []
    for k, (group, path, wrong) in enumerate(table):
        row = {"id": group, "prompt": f"Question {k}{' WRONG' if wrong else ''}?", "chosen": f"CHOSEN-{k}.",
               "rejected": f"REJECTED-{k}.", "chosen_reason": "SECRET", "rejected_reason": "SECRET"}
        if path.startswith("video/"):
            frames = [f"{path}/frame_{i:03d}.png" for i in range(FRAMES)]
            for i, frame in enumerate(frames):
                (images / frame).parent.mkdir(parents=True, exist_ok=True)
                (images / frame).write_bytes(png((64, 48), (5 * i, 0, 0)))  # a frame's index in its red level
            row["video"] = frames
        else:
            (images / path).parent.mkdir(parents=True, exist_ok=True)
            (images / path).write_bytes(png((300, 300)))
            row["image"] = path
        lines_.append(json.dumps(row) + "\n")
    (root / "mm_reward_bench.jsonl").write_text("".join(lines_))
    return root


@pytest.mark.slow
def test_mm_rlhf_paper_protocol_scores_every_row_as_the_official_scorer(tmp_path):
    """Accuracy over rows, Acc+ over ids, per category with the official denominators (worked out
    by hand): x1 has a safety row and a short row and is all right, so it counts for `short` only
    in the numerators (the first keyword), but in both denominators, as the official scorer counts."""
    root = write_mmrlhf(tmp_path / "mmrlhf")
    with fake_server(judge_by_marker) as server:
        summary = run_eval(EvalOptions(base_url=server.url, model=MODEL, benchmark="mm-rlhf", input=str(root),
                                       out=tmp_path / "run", protocol="paper"))
        requests = chats(server)
    assert summary["skipped"] == {} and summary["n"] == 10 and summary["failed"] == 0
    assert summary["acc"] == pytest.approx(7 / 10)
    assert summary["acc_plus"] == pytest.approx(4 / 7) and summary["ids"] == 7
    assert {name: {key: c[key] for key in ("n", "accuracy", "acc_plus", "ids")}
            for name, c in summary["categories"].items()} == {
        "mcq": {"n": 3, "accuracy": pytest.approx(2 / 3), "acc_plus": 0.5, "ids": 2},
        "long": {"n": 2, "accuracy": 0.5, "acc_plus": 0.0, "ids": 1},
        "short": {"n": 2, "accuracy": 1.0, "acc_plus": 1.0, "ids": 2},
        "safety": {"n": 1, "accuracy": 1.0, "acc_plus": 0.0, "ids": 1},
        "video": {"n": 1, "accuracy": 1.0, "acc_plus": 1.0, "ids": 1},
    }
    assert all(r["max_tokens"] == 2048 and r["messages"][0] == SYSTEM for r in requests)
    [video] = [r for r in requests if len(images_of(r)) > 1]
    frames = images_of(video)
    # up to 32 frames, sampled uniformly as np.linspace(0, n - 1, 32, dtype=int) picks them
    assert [f.getpixel((0, 0))[0] for f in frames] == [5 * (i * (FRAMES - 1) // 31) for i in range(32)]
    assert {f.size for f in frames} == {(56, 56)}  # smart_resize within the frame bounds
    assert "SECRET" not in (tmp_path / "run" / "results.jsonl").read_text()


def test_mm_rlhf_default_protocol_still_skips_video_rows(tmp_path):
    root = write_mmrlhf(tmp_path / "mmrlhf")
    with fake_server(lambda request: completion("\\boxed{1}")) as server:
        summary = run_eval(EvalOptions(base_url=server.url, model=MODEL, benchmark="mm-rlhf", input=str(root),
                                       out=tmp_path / "run"))
    assert summary["skipped"] == {"video": 1} and summary["n"] == 9
    assert "video" not in summary["categories"] and summary["categories"]["mcq"]["n"] == 3


def test_mm_rlhf_scorer_on_a_known_table():
    def record(group, k, correct, keywords):
        return Judgement(f"{group}#{k}", "1", (1, 2), "1" if correct else None, {"group": group, "keywords": keywords})
    records = [record("a", 0, True, ["long", "video"]), record("a", 1, True, []),
               record("b", 0, False, ["video"]), record("c", 0, True, ["video"])]
    metrics = score(records, "mm-rlhf")
    assert metrics["acc"] == 0.75 and metrics["acc_plus"] == pytest.approx(2 / 3)
    # a row counts in its first category; an all-right id in the first category any of its rows names
    assert {name: {key: c[key] for key in ("n", "accuracy", "acc_plus", "ids")}
            for name, c in metrics["categories"].items()} == {
        "long": {"n": 1, "accuracy": 1.0, "acc_plus": 1.0, "ids": 1},
        "video": {"n": 2, "accuracy": 0.5, "acc_plus": pytest.approx(1 / 3), "ids": 3}}


# --- image paths stay inside the snapshot, read bounded -------------------------------------------

def test_benchmark_image_paths_outside_the_snapshot_are_skipped_never_read(tmp_path, monkeypatch):
    import critic_data.files as images

    outside = tmp_path / "outside.png"
    outside.write_bytes(png((300, 300), (1, 2, 3)))
    root = tmp_path / "mmrlhf"
    (root / "images").mkdir(parents=True)
    (root / "images" / "ok.png").write_bytes(png((300, 300)))
    (root / "images" / "big.png").write_bytes(png((300, 300)) + b"\0" * 5000)
    os.mkfifo(root / "images" / "fifo.png")
    (root / "images" / "clip").mkdir()
    (root / "images" / "clip" / "f0.png").write_bytes(png((64, 48)))
    rows = [("ok", "ok.png"), ("parent", "../outside.png"), ("deep", "images/../../outside.png"),
            ("absolute", str(outside)), ("fifo", "fifo.png"), ("big", "big.png")]
    lines_ = [{"id": i, "image": path, "prompt": "Q?", "chosen": "CHOSEN.", "rejected": "REJECTED."}
              for i, path in rows]
    lines_.append({"id": "video", "video": ["clip/f0.png", "../../outside.png"], "prompt": "Q?", "chosen": "CHOSEN.",
                   "rejected": "REJECTED."})
    (root / "mm_reward_bench.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines_))
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", len(png((300, 300))) + 100)
    with fake_server(judge_by_marker) as server:
        summary = run_eval(EvalOptions(base_url=server.url, model=MODEL, benchmark="mm-rlhf", input=str(root),
                                       out=tmp_path / "run", protocol="paper", timeout=10))
        requests = chats(server)
    assert summary["skipped"] == {"image_path_unsafe": 4, "image_missing": 1, "image_file_too_large": 1}
    assert summary["n"] == 1 and len(requests) == 1
    assert images_of(requests[0])[0].getpixel((0, 0)) != (1, 2, 3)


def test_vl_rewardbench_image_paths_outside_the_snapshot_are_skipped(tmp_path):
    (tmp_path / "outside.png").write_bytes(png((300, 300)))
    root = tmp_path / "vlrb"
    root.mkdir()
    (root / "inside.png").write_bytes(png((300, 300)))
    write_vlrb(root, [("mathverse_1", {"bytes": None, "path": "inside.png"}),
                      ("mathverse_2", {"bytes": None, "path": "../outside.png"}),
                      ("mathverse_3", {"bytes": None, "path": str(tmp_path / "outside.png")})])
    with fake_server(judge_by_marker) as server:
        summary = run_eval(EvalOptions(base_url=server.url, model=MODEL, benchmark="vl-rewardbench", input=str(root),
                                       out=tmp_path / "run"))
    assert summary["skipped"] == {"image_path_unsafe": 2} and summary["n"] == 1


# --- --prompt-style: the benchmarks in the template the critic was trained on --------------------

@pytest.mark.slow
def test_prompt_style_llava_critic_renders_the_benchmarks_with_its_template(tmp_path):
    """A critic trained on `build --prompt-style llava-critic` rows is judged in that template (before:
    always pairwise-v2's [Question] / [Response 1] body); the style is recorded in summary.json."""
    from critic_data.schemas.prompts import render_critic_prompt

    root = write_vlrb(tmp_path / "vlrb", [("mmmu_pro_1", {"bytes": png((300, 300)), "path": "a.png"})])
    mmrlhf = write_mmrlhf(tmp_path / "mmrlhf")
    with fake_server(lambda request: completion("\\boxed{1}")) as server:
        done = run_cli("eval", "--base-url", server.url, "--model", MODEL, "--benchmark", "vl-rewardbench", "--input",
                       str(root), "--out", str(tmp_path / "run"), "--prompt-style", "llava-critic")
        assert done.returncode == 0, done.stderr
        [request] = chats(server)
        run_eval(EvalOptions(base_url=server.url, model=MODEL, benchmark="mm-rlhf", input=str(mmrlhf),
                             out=tmp_path / "mm", prompt_style="llava-critic"))
        mm_requests = chats(server)[1:]
    [record] = lines(tmp_path / "run" / "results.jsonl")
    first, second = (["CHOSEN-0.", "REJECTED-0."][i - 1] for i in record["presented"])
    assert prompt_of(request) == render_critic_prompt("llava-critic-v1", "What is {x} in picture 0?", first, second)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["prompt_style"] == "llava-critic"
    assert len(mm_requests) == 9 and all("The first response: [" in prompt_of(r) and "[Response 1]" not in prompt_of(r)
                                         for r in mm_requests)
    assert json.loads((tmp_path / "mm" / "summary.json").read_text())["prompt_style"] == "llava-critic"


def test_a_resume_under_another_prompt_style_is_refused(tmp_path):
    root = write_vlrb(tmp_path / "vlrb", [("mmmu_pro_1", {"bytes": png((300, 300)), "path": "a.png"}),
                                          ("mmmu_pro_2", {"bytes": png((300, 300)), "path": "b.png"})])
    with fake_server(lambda request: completion("\\boxed{1}")) as server:
        summary = run_eval(EvalOptions(base_url=server.url, model=MODEL, benchmark="vl-rewardbench", input=str(root),
                                       out=tmp_path / "run", limit=1))
        assert summary["prompt_style"] == "critic-data"  # the default, recorded
        with pytest.raises(UserError, match='--prompt-style was "critic-data", now "llava-critic"'):
            run_eval(EvalOptions(base_url=server.url, model=MODEL, benchmark="vl-rewardbench", input=str(root),
                                 out=tmp_path / "run", resume=True, prompt_style="llava-critic"))


@pytest.mark.parametrize("args, message", [
    (["--benchmark", "built", "--input", "BUILT"], "--prompt-style applies to vl-rewardbench and mm-rlhf"),
    (["--benchmark", "vl-rewardbench", "--input", ".", "--protocol", "paper"],
     "--prompt-style applies to --protocol critic-data"),
])
@pytest.mark.slow
def test_prompt_style_where_it_does_not_apply_is_one_line(built_dataset, tmp_path, args, message):
    args = [str(built_dataset) if arg == "BUILT" else arg for arg in args]
    done = run_cli("eval", "--base-url", "http://127.0.0.1:9/v1", "--model", MODEL, "--out", str(tmp_path / "run"),
                   "--prompt-style", "llava-critic", *args)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: ") and message in done.stderr and "Traceback" not in done.stderr
    with pytest.raises(UserError, match="--prompt-style 'llava' is not known; choose from critic-data, llava-critic"):
        EvalOptions(base_url="", model="", benchmark="vl-rewardbench", input=".", out=tmp_path, prompt_style="llava")
