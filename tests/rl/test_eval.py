"""`critic-data eval` against a live `transformers serve` with the tiny Qwen2.5-VL, on all three
benchmarks (miniature, format-exact snapshots built here), plus the scoring rules on known inputs.

The tiny random model never writes a clean \\boxed{}, so live runs check what can be checked for
real: counts, files, orders, resume, skips, and that every number in the summary follows from
the results file; the metric arithmetic is checked on hand-made results.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import openai  # noqa: F401 - imported now: the timed requests below must not pay for its import
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from critic_data import UserError
from critic_data.rl.evaluate import EvalOptions, load_items, presentations, run_eval, score
from critic_data.rl.records import Judgement, expected_verdict
from critic_data.rl.rewards import boxed_verdict
from tests.cli import SECRET_KEY, run_cli
from tests.rl.runs import (
    MODEL,
    judge_all_first,
    lines,
    options,
    png_bomb,
    refused_in_one_line,
    write_mmrlhf,
)
from tests.serve import Reply, completion, fake_server, free_port, prompt_of, served_model
from tests.snapshots import jpeg

MAX_TOKENS = "4"  # garbage either way; each token costs ~40 ms on this CPU and the server runs one request at a time

# (id, query_source, human_ranking, category) of the miniature VL-RewardBench, ids spelled as the
# benchmark spells them; categories as lmms-eval assigns them from the id (LRVInstruction is not in
# its table: general). One row has an unusable ranking.
VLRB_ROWS = [
    ("wildvision-battle-0", "WildVision", [0, 1], "general"), ("VLFeedback-1", "vlfeedback", [1, 0], "general"),
    ("hallucination_pair-2", "POVID", [1, 0], "hallucination"),
    ("RLAIF-V-Dataset_3", "RLAIF-V", [0, 1], "hallucination"), ("RLHF-V-Dataset_4", "RLHF-V", [1, 0], "hallucination"),
    ("mmmu_pro_5", "MMMU-Pro", [0, 1], "reasoning"), ("mathverse_6", "MathVerse", [1, 0], "reasoning"),
    ("LRVInstruction-7", "LRVInstruction", [0, 1], "general"),
    ("mathverse_8", "MathVerse", [0, 0], None),
]


@pytest.fixture(scope="module")
def server(tiny_qwen_dir, tmp_path_factory):
    with served_model(tiny_qwen_dir, tmp_path_factory.mktemp("serve-eval")) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def vlrb_snapshot(tmp_path_factory):
    """MMInstruction/VL-RewardBench as downloaded: data/test-00000-of-00001.parquet, image as a struct."""
    root = tmp_path_factory.mktemp("vlrb")
    rows = []
    for i, (item_id, query_source, ranking, _) in enumerate(VLRB_ROWS):
        rows.append({
            "id": item_id, "query": f"What is in picture {i}?",
            "response": [f"A first answer {i}.", f"A second answer {i}."],
            "image": {"bytes": jpeg(100 + i), "path": f"{i}.jpg"}, "human_ranking": ranking,
            "models": ["model-a", "model-b"], "judge": "human", "rationale": "SECRET-RATIONALE",
            "query_source": query_source, "meta": "{}", "human_error_analysis": ["existence"], "ground_truth": "",
        })
    (root / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), root / "data" / "test-00000-of-00001.parquet")
    return root


@pytest.fixture(scope="module")
def mmrlhf_snapshot(tmp_path_factory):
    """yifanzhang114/MM-RLHF-RewardBench: mm_reward_bench.jsonl + images/; ids shared; one video row."""
    root = tmp_path_factory.mktemp("mmrlhf")
    (root / "images").mkdir()
    lines = []
    for k, group in enumerate(["a", "a", "b", "c", "c", "c"]):
        (root / "images" / f"{k}.jpg").write_bytes(jpeg(200 + k))
        # both spellings of the relative path are accepted: "images/k.jpg" and "k.jpg"
        image = f"images/{k}.jpg" if k % 2 else f"{k}.jpg"
        lines.append({"id": group, "image": image, "prompt": f"Describe picture {k}.", "chosen": f"Good {k}.",
                      "rejected": f"Bad {k}.", "chosen_reason": "SECRET", "rejected_reason": "SECRET"})
    lines.insert(2, {"id": "v", "video": "videos/v.mp4", "prompt": "What happens?", "chosen": "x", "rejected": "y"})
    (root / "mm_reward_bench.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _check_consistent(records, summary):
    """Every number in the summary follows from the results file."""
    assert summary["n"] == len(records)
    assert summary["accuracy"] == pytest.approx(sum(r["correct"] for r in records) / len(records))
    assert summary["unparsed_rate"] == pytest.approx(sum(r["verdict"] is None for r in records) / len(records))
    for r in records:
        assert r["verdict"] == boxed_verdict(r["completion"])
        assert r["expected"] == expected_verdict(r["label"], tuple(r["presented"]))
        assert r["correct"] == (r["verdict"] == r["expected"])
        assert isinstance(r["completion"], str)


# --- live: the three benchmarks -----------------------------------------------------------------

@pytest.mark.slow
def test_built_both_orders_through_the_cli(server, built_dataset, tmp_path):
    base_url, model = server
    out = tmp_path / "run"
    done = run_cli("eval", "--base-url", base_url, "--model", model, "--benchmark", "built", "--input",
                   str(built_dataset),
                   "--limit", "3", "--both-orders", "--max-tokens", MAX_TOKENS, "--concurrency", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    records = _lines(out / "results.jsonl")
    summary = json.loads((out / "summary.json").read_text())
    assert len(records) == 6 and summary["items"] == 3
    assert Counter(tuple(r["presented"]) for r in records) == {(1, 2): 3, (2, 1): 3}
    assert {r["label"] for r in records} <= {"1", "2"}
    _check_consistent(records, summary)
    # consistent: both orders name the same source response (exact values: test_both_orders_scores_a_known_judge)
    picked: dict[str, list] = {}
    for r in records:
        picked.setdefault(r["id"], []).append(r["presented"][int(r["verdict"]) - 1] if r["verdict"] in ("1", "2")
                                              else None)
    assert summary["position_consistency"] == pytest.approx(
        sum(a is not None and a == b for a, b in picked.values()) / 3)
    assert "accuracy" in done.stderr and "position consistency" in done.stderr  # the table
    everything = done.stdout + done.stderr + (out / "results.jsonl").read_text() + (out / "summary.json").read_text()
    assert SECRET_KEY not in everything


@pytest.mark.slow
def test_built_order_is_a_seeded_coin_per_item(server, built_dataset, tmp_path):
    base_url, model = server
    options = EvalOptions(base_url=base_url, model=model, benchmark="built", input=str(built_dataset), out=tmp_path,
                          limit=8, max_tokens=int(MAX_TOKENS), concurrency=4)
    summary = run_eval(options)
    records = _lines(tmp_path / "results.jsonl")
    assert summary["items"] == len(records) == len({r["id"] for r in records}) == 8
    presented = {r["id"]: tuple(r["presented"]) for r in records}
    assert set(presented.values()) == {(1, 2), (2, 1)}  # both orders occur
    # the order is the documented coin of (seed, item id), not an accident of completion order ...
    _, items = load_items(options, Counter())
    items = list(items)
    assert {item.id: presentations(item, 0, False)[0] for item in items} == presented
    # ... and another seed deals another assignment
    assert {item.id: presentations(item, 1, False)[0] for item in items} != presented
    assert [presentations(item, 0, True) for item in items[:1]] == [[(1, 2), (2, 1)]]


@pytest.mark.slow
def test_vl_rewardbench_categories_and_macro(server, vlrb_snapshot, tmp_path):
    base_url, model = server
    summary = run_eval(EvalOptions(base_url=base_url, model=model, benchmark="vl-rewardbench", input=str(vlrb_snapshot),
                                   out=tmp_path, max_tokens=int(MAX_TOKENS), concurrency=3))
    records = _lines(tmp_path / "results.jsonl")
    usable = [row for row in VLRB_ROWS if row[3]]
    assert summary["skipped"] == {"ranking_unusable": 1}
    assert len(records) == len(usable)
    assert {r["id"]: (r["category"], r["query_source"]) for r in records} == {i: (c, q) for i, q, _, c in usable}
    # human_ranking [0, 1] means the first response is preferred
    assert {r["id"]: r["label"] for r in records} == {i: "1" if rank == [0, 1] else "2" for i, _, rank, _ in usable}
    assert {name: group["n"] for name, group in summary["categories"].items()} == \
        {"general": 3, "hallucination": 3, "reasoning": 2}
    _check_consistent(records, summary)
    per_category = [summary["categories"][c]["accuracy"] for c in ("general", "hallucination", "reasoning")]
    assert summary["macro_accuracy"] == pytest.approx(sum(per_category) / 3)
    assert "SECRET-RATIONALE" not in (tmp_path / "results.jsonl").read_text()


@pytest.mark.slow
def test_mm_rlhf_pairs_ids_and_video_skip(server, mmrlhf_snapshot, tmp_path):
    base_url, model = server
    summary = run_eval(EvalOptions(base_url=base_url, model=model, benchmark="mm-rlhf", input=str(mmrlhf_snapshot),
                                   out=tmp_path, max_tokens=int(MAX_TOKENS)))
    records = _lines(tmp_path / "results.jsonl")
    assert summary["skipped"] == {"video": 1}
    assert sorted(r["id"] for r in records) == ["a#0", "a#1", "b#0", "c#0", "c#1", "c#2"]
    assert all(r["label"] == "1" for r in records)  # `chosen` is response 1 in source order
    assert summary["ids"] == 3 and summary["acc"] == summary["accuracy"]
    groups = {g: all(r["correct"] for r in records if r["group"] == g) for g in "abc"}
    assert summary["acc_plus"] == pytest.approx(sum(groups.values()) / 3)
    _check_consistent(records, summary)


# --- live: resume and failure paths ---------------------------------------------------------------

@pytest.mark.slow
def test_interrupted_run_resumes_where_it_stopped(server, built_dataset, tmp_path):
    base_url, model = server
    out = tmp_path / "run"
    args = ["eval", "--base-url", base_url, "--model", model, "--benchmark", "built", "--input", str(built_dataset),
            "--limit", "6", "--max-tokens", MAX_TOKENS, "--concurrency", "1", "--out", str(out)]
    process = subprocess.Popen([sys.executable, "-m", "critic_data.cli", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 60
    while not (results.exists() and len(results.read_text().splitlines()) >= 2):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be interrupted"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130 and "--resume" in stderr and "Traceback" not in stderr
    before = results.read_text()
    with results.open("a") as handle:  # as if the process had died in the middle of a write
        handle.write('{"id": "half-writ')
    kept = len(before.splitlines())

    again = run_cli(*args)
    assert again.returncode == 2 and "--resume" in again.stderr  # no silent overwrite

    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    after = results.read_text()
    assert after.startswith(before)  # finished items were kept, not redone
    records = _lines(results)
    summary = json.loads((out / "summary.json").read_text())
    assert len(records) == len({r["id"] for r in records}) == summary["items"] > kept
    _check_consistent(records, summary)


@pytest.mark.slow
def test_endpoint_down_is_one_line_and_quick(built_dataset, tmp_path):
    started = time.monotonic()
    done = run_cli("eval", "--base-url", f"http://127.0.0.1:{free_port()}/v1", "--model", "m", "--benchmark", "built",
                   "--input", str(built_dataset), "--out", str(tmp_path / "run"))
    assert done.returncode == 2
    assert time.monotonic() - started < 20
    assert done.stderr.strip().startswith("error: cannot reach the OpenAI-compatible server")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert SECRET_KEY not in done.stdout + done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("listed, refusal, message", [
    # servers that list nothing (some builds of transformers serve) and refuse the model per request ...
    ((), Reply(b'{"detail": "model not-this-one is not loaded"}', status=400),
     "error: every request failed (2); first: "),
    ((), Reply(b'{"error": {"message": "The model `not-this-one` does not exist."}}', status=404),
     "answered 404 (The model `not-this-one` does not exist.); check --model"),
    # ... and servers that list what they serve (vllm serve; transformers serve pinned to one model)
    (("served-model",), None, "does not serve model 'not-this-one'; it serves served-model"),
])
@pytest.mark.slow
def test_a_model_the_server_does_not_serve_ends_in_one_line(built_dataset, tmp_path, listed, refusal, message):
    """On scripted servers: what a live server lists depends on its version and cache, not on this test."""
    with fake_server(lambda request: refusal, models=listed) as server:
        done = run_cli("eval", "--base-url", server.url, "--model", "not-this-one", "--benchmark", "built",
                       "--input", str(built_dataset), "--limit", "2", "--out", str(tmp_path / "run"))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert message in done.stderr and "not-this-one" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "run" / "results.jsonl").exists()


@pytest.mark.slow
def test_both_orders_scores_a_known_judge(tmp_path):
    """A scripted judge whose verdicts are known: steady (names the chosen response in either order),
    biased (always "1"), mute (no verdict). Two steady, one biased, one mute, each judged both ways."""
    root = tmp_path / "snapshot"
    (root / "images").mkdir(parents=True)
    kinds = ["steady", "biased", "steady", "mute"]
    rows = []
    for k, kind in enumerate(kinds):
        (root / "images" / f"{k}.jpg").write_bytes(jpeg(500 + k))
        rows.append({"id": f"g{k}", "image": f"images/{k}.jpg", "prompt": f"{kind} question?",
                     "chosen": f"CHOSEN-{k}.", "rejected": f"REJECTED-{k}."})
    (root / "mm_reward_bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def judge(request):
        text = prompt_of(request)
        if "mute" in text:
            return completion("I cannot tell.")
        if "biased" in text:
            return completion("\\boxed{1}")
        return completion("\\boxed{1}" if text.index("CHOSEN") < text.index("REJECTED") else "\\boxed{2}")

    with fake_server(judge) as server:
        summary = run_eval(EvalOptions(base_url=server.url, model="fake-model", benchmark="mm-rlhf", input=str(root),
                                       out=tmp_path / "run", both_orders=True))
    assert summary["n"] == 8 and summary["items"] == 4
    assert summary["accuracy"] == 5 / 8  # steady 4 of 4, biased 1 of 2, mute 0 of 2
    assert summary["unparsed_rate"] == 2 / 8
    assert summary["position_consistency"] == 2 / 4  # the steady ones
    assert summary["both_orders_correct"] == 2 / 4
    assert summary["acc_plus"] == 2 / 4 and summary["ids"] == 4


@pytest.mark.parametrize("benchmark, make_input, message", [
    ("vl-rewardbench", lambda tmp: tmp / "missing", "hf download MMInstruction/VL-RewardBench"),
    ("mm-rlhf", lambda tmp: tmp, "mm_reward_bench.jsonl"),
    ("built", lambda tmp: tmp, "data/test-*.parquet"),
    ("built", lambda tmp: "not a path or repo", "not a Hub dataset id"),
    ("imagenet", lambda tmp: tmp, "choose from built, vl-rewardbench, mm-rlhf"),
])
def test_input_mistakes_are_user_errors(tmp_path, benchmark, make_input, message):
    with pytest.raises(UserError, match=message.replace("*", r"\*")):
        load_items(EvalOptions(base_url="", model="", benchmark=benchmark, input=str(make_input(tmp_path)),
                               out=tmp_path / "o"), Counter())


@pytest.mark.slow
def test_a_hub_id_that_cannot_be_loaded_is_one_line(tmp_path):
    done = run_cli("eval", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--benchmark", "built",
                   "--input", "someone/nothing-here", "--out", str(tmp_path / "run"),
                   env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "could not load someone/nothing-here" in done.stderr and "pass a local dataset folder" in done.stderr


# --- the scoring rules on known inputs --------------------------------------------------------------

def _record(item, label, presented, verdict, **extra) -> Judgement:
    return Judgement(item, label, presented, verdict, extra)


def test_expected_verdict_follows_the_presented_order():
    assert expected_verdict("1", (1, 2)) == "1" and expected_verdict("1", (2, 1)) == "2"
    assert expected_verdict("2", (1, 2)) == "2" and expected_verdict("2", (2, 1)) == "1"
    assert expected_verdict("tie", (2, 1)) == "tie"


def test_vl_rewardbench_scores_and_macro_accuracy():
    records = (
        [_record(f"g{i}", "1", (1, 2), "1", category="general") for i in range(3)]  # general 3/3
        + [_record(f"h{i}", "2", (2, 1), "1" if i < 1 else "2", category="hallucination") for i in range(4)]  # 1/4
        # 1/2
        + [_record("r0", "1", (1, 2), None, category="reasoning"),
           _record("r1", "2", (1, 2), "2", category="reasoning")]
    )
    metrics = score(records, "vl-rewardbench")
    assert metrics["n"] == 9 and metrics["accuracy"] == pytest.approx(5 / 9)
    assert metrics["unparsed_rate"] == pytest.approx(1 / 9)
    hallucination = metrics["categories"]["hallucination"]
    assert (hallucination["n"], hallucination["accuracy"]) == (4, 0.25)
    assert metrics["macro_accuracy"] == pytest.approx((1 + 0.25 + 0.5) / 3)


def test_mm_rlhf_acc_plus_counts_an_id_only_when_all_its_pairs_are_right():
    records = [_record("a#0", "1", (1, 2), "1", group="a"), _record("a#1", "1", (2, 1), "2", group="a"),
               _record("b#0", "1", (1, 2), "1", group="b"), _record("b#1", "1", (1, 2), "2", group="b"),
               _record("c#0", "1", (2, 1), None, group="c")]
    metrics = score(records, "mm-rlhf")
    assert metrics["acc"] == pytest.approx(3 / 5)
    assert metrics["acc_plus"] == pytest.approx(1 / 3) and metrics["ids"] == 3


def test_position_consistency_compares_the_response_each_order_picks():
    records = [
        _record("x", "1", (1, 2), "1"), _record("x", "1", (2, 1), "2"),  # picks response 1 both times: consistent
        _record("y", "1", (1, 2), "1"), _record("y", "1", (2, 1), "1"),  # always position 1: inconsistent
        _record("z", "2", (1, 2), None), _record("z", "2", (2, 1), None),  # unparsed is never consistent
    ]
    metrics = score(records, "built")
    assert metrics["items"] == 3
    assert metrics["position_consistency"] == pytest.approx(1 / 3)
    assert metrics["both_orders_correct"] == pytest.approx(1 / 3)


@pytest.mark.slow
def test_progress_shows_items_done_and_running_accuracy(server, built_dataset, tmp_path):
    import io

    from rich.console import Console
    from rich.progress import Progress

    base_url, model = server
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    with Progress(console=console) as progress:
        summary = run_eval(EvalOptions(base_url=base_url, model=model, benchmark="built", input=str(built_dataset),
                                       out=tmp_path, limit=2, max_tokens=int(MAX_TOKENS)), progress=progress)
    [task] = progress.tasks
    assert task.completed == task.total == 2
    assert f"acc {summary['accuracy']:.3f}" in task.description and "failed 0" in task.description


@pytest.mark.slow
def test_a_refused_item_is_counted_left_out_and_retried_on_resume(server, tmp_path):
    base_url, model = server
    root = tmp_path / "snapshot"
    (root / "images").mkdir(parents=True)
    rows = []
    for k in range(3):
        (root / "images" / f"{k}.jpg").write_bytes(b"not an image" if k == 1 else jpeg(400 + k))
        rows.append({"id": f"g{k}", "image": f"images/{k}.jpg", "prompt": "Q?", "chosen": "A.", "rejected": "B."})
    (root / "mm_reward_bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ("eval", "--base-url", base_url, "--model", model, "--benchmark", "mm-rlhf", "--input", str(root),
            "--out", str(tmp_path / "run"), "--max-tokens", MAX_TOKENS)
    done = run_cli(*args)
    assert done.returncode == 1  # the run finished, but not every item is in the results
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 request failed") and "g1#0" in last and "--resume" in last
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["failed"] == 1 and summary["first_failure"].startswith("g1#0:")
    assert sorted(r["id"] for r in _lines(tmp_path / "run" / "results.jsonl")) == ["g0#0", "g2#0"]
    (root / "images" / "1.jpg").write_bytes(jpeg(401))  # fixed; a resumed run asks again for that item only
    done = run_cli(*args, "--resume")
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["failed"] == 0 and summary["n"] == 3
    assert [r["id"] for r in _lines(tmp_path / "run" / "results.jsonl")][-1] == "g1#0"


@pytest.mark.slow
def test_built_from_a_hub_id(server, built_dataset, tmp_path):
    """Published with `critic-data push` to the local Hub of tests/hub_server.py, evaluated by its id."""
    from tests.hub_server import LocalHub, client_env

    base_url, model = server
    hub = LocalHub(tmp_path / "hub", tokens={"hf_test_write": "write"}).start()
    try:
        env = client_env(tmp_path, hub.url, "hf_test_write")
        pushed = run_cli("push", built_dataset, "--repo-id", "critic/eval-set", environ=env, timeout=120)
        assert pushed.returncode == 0, pushed.stderr
        done = run_cli("eval", "--base-url", base_url, "--model", model, "--benchmark", "built", "--input",
                       "critic/eval-set", "--limit", "3", "--max-tokens", MAX_TOKENS, "--out", tmp_path / "run",
                       environ=env, timeout=120)
        assert done.returncode == 0, done.stderr
    finally:
        hub.stop()
    records = _lines(tmp_path / "run" / "results.jsonl")
    _, local = load_items(EvalOptions(base_url="", model="", benchmark="built", input=str(built_dataset),
                                      out=tmp_path, limit=3), Counter())
    assert {r["id"]: (r["label"], tuple(r["presented"])) for r in records} == \
        {item.id: (item.label, presentations(item, 0, False)[0]) for item in local}


@pytest.fixture
def strict_server():
    """A server that checks the key and lists one model, as `vllm serve --api-key K` does; only /v1/models is needed."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def do_GET(self):
            ok = self.headers.get("Authorization") == "Bearer right-key"
            body = json.dumps({"object": "list", "data": [{"id": "served-model", "object": "model"}]} if ok
                              else {"error": {"message": "Unauthorized"}}).encode()
            self.send_response(200 if ok else 401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/v1"
    httpd.shutdown()


@pytest.mark.slow
def test_a_refused_key_and_an_unserved_model_are_one_line(strict_server, built_dataset, tmp_path):
    args = ["eval", "--base-url", strict_server, "--benchmark", "built", "--input", str(built_dataset)]
    refused = run_cli(*args, "--model", "served-model", "--out", str(tmp_path / "a"))
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "refused the API key (401); set OPENAI_API_KEY" in refused.stderr and SECRET_KEY not in refused.stderr
    unserved = run_cli(*args, "--model", "other", "--out", str(tmp_path / "b"), env={"OPENAI_API_KEY": "right-key"})
    assert unserved.returncode == 2 and "does not serve model 'other'; it serves served-model" in unserved.stderr
    assert "right-key" not in unserved.stderr


# --- comparable numbers: unparsed verdicts scored both ways, every accuracy with its interval ------

def test_unparsed_verdicts_count_as_wrong_and_as_half_credit():
    """`accuracy` counts an unparsed verdict wrong, as LLaVA-Critic-R1's scripts do; lmms-eval's
    VL-RewardBench scorer answers it with a coin over "1" / "2", whose expected score is 1/2 (and 0
    on a tie label, which the coin never names): `accuracy_unparsed_half`, per category and macro too."""
    records = [
        _record("g0", "1", (1, 2), "1", category="general"), _record("g1", "1", (1, 2), None, category="general"),
        _record("h0", "2", (2, 1), None, category="hallucination"),
        _record("h1", "2", (1, 2), "1", category="hallucination"),
        _record("r0", "tie", (1, 2), None, category="reasoning"), _record("r1", "1", (2, 1), "2", category="reasoning"),
    ]
    metrics = score(records, "vl-rewardbench")
    assert metrics["accuracy"] == pytest.approx(2 / 6) and metrics["accuracy_unparsed_half"] == pytest.approx(3 / 6)
    assert {name: (c["accuracy"], c["accuracy_unparsed_half"]) for name, c in metrics["categories"].items()} == {
        "general": (0.5, 0.75), "hallucination": (0.0, 0.25), "reasoning": (0.5, 0.5)}
    assert metrics["macro_accuracy"] == pytest.approx((0.5 + 0.0 + 0.5) / 3)
    assert metrics["macro_accuracy_unparsed_half"] == pytest.approx((0.75 + 0.25 + 0.5) / 3)
    mm = score([_record("a#0", "1", (1, 2), None, group="a", keywords=["mcq"]),
                _record("b#0", "1", (2, 1), "2", group="b", keywords=["mcq"])], "mm-rlhf")
    assert (mm["acc"], mm["accuracy_unparsed_half"], mm["categories"]["mcq"]["accuracy_unparsed_half"]) == (0.5, 0.75,
                                                                                                            0.75)


def test_the_wilson_interval_solves_its_defining_equation():
    """Wilson's bounds are the proportions p at which the observed one lies 1.96 standard errors
    away: (observed - p)^2 = z^2 p (1 - p) / n. Known values: 8 of 10 gives 49.0-94.3%, 0 of 10 gives 0-27.8%."""
    from critic_data.rl.metrics import Z_95, wilson_interval

    assert wilson_interval(0.8, 10) == pytest.approx([0.4902, 0.9433], abs=5e-5)
    assert wilson_interval(0.0, 10) == pytest.approx([0.0, 0.2775], abs=5e-5)
    for observed, n in [(0.8, 10), (0.5, 3), (0.0, 7), (1.0, 1), (0.37, 1000), (2.5 / 6, 6)]:
        low, high = wilson_interval(observed, n)
        assert 0 <= low <= observed <= high <= 1
        for bound in (low, high):
            assert (observed - bound) ** 2 == pytest.approx(Z_95 ** 2 * bound * (1 - bound) / n, abs=1e-12)
    assert wilson_interval(0.5, 0) is None


def test_every_accuracy_in_the_summary_carries_its_interval():
    from critic_data.rl.metrics import wilson_interval

    records = ([_record(f"g{i}", "1", (1, 2), "1" if i < 3 else None, category="general") for i in range(5)]
               + [_record(f"h{i}", "2", (1, 2), "2" if i < 1 else "1", category="hallucination") for i in range(4)])
    metrics = score(records, "vl-rewardbench")
    assert metrics["ci_method"] == "wilson"
    for figures, n in [(metrics, 9), (metrics["categories"]["general"], 5), (metrics["categories"]["hallucination"],
                                                                             4)]:
        for key in ("accuracy", "accuracy_unparsed_half"):
            assert figures[f"{key}_ci95"] == pytest.approx(wilson_interval(figures[key], n))
    # the macro mean's interval combines the categories' (MOVER): wider than none of them alone
    general, hallucination = metrics["categories"]["general"], metrics["categories"]["hallucination"]
    below = ((general["accuracy"] - general["accuracy_ci95"][0]) ** 2
             + (hallucination["accuracy"] - hallucination["accuracy_ci95"][0]) ** 2) ** 0.5 / 2
    above = ((general["accuracy_ci95"][1] - general["accuracy"]) ** 2
             + (hallucination["accuracy_ci95"][1] - hallucination["accuracy"]) ** 2) ** 0.5 / 2
    assert metrics["macro_accuracy_ci95"] == pytest.approx([metrics["macro_accuracy"] - below,
                                                            metrics["macro_accuracy"] + above])
    low, high = metrics["macro_accuracy_unparsed_half_ci95"]
    assert low < metrics["macro_accuracy_unparsed_half"] < high
    twice = [_record("a#0", "1", (1, 2), "1", group="a", keywords=["mcq"]),
             _record("a#0", "1", (2, 1), "2", group="a", keywords=["mcq"]),
             _record("b#0", "1", (1, 2), "1", group="b", keywords=["mcq"]),
             _record("b#0", "1", (2, 1), "1", group="b", keywords=["mcq"]),
             _record("b#1", "1", (1, 2), "1", group="b", keywords=["long"])]
    mm = score(twice, "mm-rlhf")
    assert mm["acc_ci95"] == mm["accuracy_ci95"] == pytest.approx(wilson_interval(4 / 5, 5))
    assert mm["acc_plus_ci95"] == pytest.approx(wilson_interval(1 / 2, 2))  # over ids
    assert mm["categories"]["mcq"]["acc_plus_ci95"] == pytest.approx(wilson_interval(1 / 2, 2))
    assert mm["both_orders_correct_ci95"] == pytest.approx(wilson_interval(1 / 2, 2))  # over items judged twice


@pytest.mark.slow
def test_the_summary_and_its_table_report_both_scorings_with_intervals(vlrb_snapshot, tmp_path):
    """Through the command: a judge that gives no verdict on two of the eight items."""
    def judge(request):
        text = prompt_of(request)
        return completion("I cannot tell." if "picture 2?" in text or "picture 5?" in text else "\\boxed{1}")

    with fake_server(judge) as server:
        done = run_cli("eval", "--base-url", server.url, "--model", "fake-model", "--benchmark", "vl-rewardbench",
                       "--input", str(vlrb_snapshot), "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    records = _lines(tmp_path / "run" / "results.jsonl")
    assert summary["n"] == 8 and summary["unparsed_rate"] == 2 / 8
    assert summary["accuracy_unparsed_half"] == pytest.approx(sum(r["correct"] for r in records) / 8 + 0.5 * 2 / 8)
    assert summary["ci_method"] == "wilson" and summary["prompt_style"] == "critic-data"
    table = " ".join(done.stderr.split())
    for label in ("accuracy %", "accuracy % (unparsed = 1/2)", "macro accuracy %", "macro accuracy % (unparsed = 1/2)"):
        assert label in table
    from critic_data.rl.client import percent

    assert percent(summary["accuracy"], summary["accuracy_ci95"]) in table
    assert percent(summary["macro_accuracy_unparsed_half"], summary["macro_accuracy_unparsed_half_ci95"]) in table


# --- an item whose image cannot be read fails, not the run ---------------------------------------

def encoded(kind: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 10, 10)).save(buffer, kind)
    return buffer.getvalue()


def damaged_tail(data: bytes) -> bytes:
    """The header intact, the last bytes of the coded picture flipped."""
    return data[:-10] + bytes(b ^ 0x5A for b in data[-10:])


BAD_IMAGES = {
    "a decompression bomb (over twice the pixel limit)": png_bomb(20_000, 10_000),
    "a decompression bomb (over the pixel limit)": png_bomb(11_000, 11_000),
    "a corrupt AVIF": damaged_tail(encoded("AVIF")),
    "a corrupt JPEG 2000": damaged_tail(encoded("JPEG2000")),
    "a JPEG cut short": jpeg(5)[:300],
}


def test_an_item_whose_image_cannot_be_decoded_fails_alone(tmp_path):
    rows = [("Q?", jpeg(1))] + [(f"Q {k}?", image) for k, image in enumerate(BAD_IMAGES.values())]
    snapshot = write_mmrlhf(tmp_path / "in", rows)
    with fake_server(judge_all_first) as server:
        summary = run_eval(options(server.url, snapshot, tmp_path / "run"))
    assert summary["failed"] == len(BAD_IMAGES)
    assert [r["id"] for r in lines(tmp_path / "run" / "results.jsonl")] == ["g0#0"]
    assert sum(path.endswith("/chat/completions") for path, _ in server.requests) == 1  # the bad images were never sent
    assert "the image cannot be decoded" in summary["first_failure"]


@pytest.mark.slow
@pytest.mark.parametrize("bomb", [png_bomb(20_000, 10_000), png_bomb(11_000, 11_000)])
def test_a_decompression_bomb_is_one_failed_item_through_the_cli(tmp_path, bomb):
    snapshot = write_mmrlhf(tmp_path / "in", [("Q?", jpeg(1)), ("Q?", bomb)])
    with fake_server(judge_all_first) as server:
        done = run_cli("eval", "--base-url", server.url, "--model", MODEL, "--benchmark", "mm-rlhf", "--input",
                       str(snapshot), "--out", str(tmp_path / "run"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "warnings.warn" not in done.stderr  # Pillow's warning is the item's failure, not a stray line
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 request failed") and "g1#0: the image cannot be decoded" in last
    assert "could be decompression bomb" in last


# --- rows of a benchmark that cannot be read are skipped, with a reason -------------------------

def test_malformed_benchmark_rows_are_skipped_with_a_reason(tmp_path):
    folder = write_mmrlhf(tmp_path / "in", [("Fine?", jpeg(1))])
    good = json.loads((folder / "mm_reward_bench.jsonl").read_text())
    bad = [
        b'{"id": "u", "image": "images/0.img", "prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n',  # Latin-1
        json.dumps({**good, "id": "s", "prompt": "odd \ud800"}).encode() + b"\n",  # a lone surrogate
        json.dumps({**good, "id": "l", "prompt": ["a", "list"]}).encode() + b"\n",
        json.dumps({**good, "id": "n", "chosen": 3}).encode() + b"\n",
        b"[" * 100_000 + b"\n",  # deeper than Python's recursion limit
        b'{"id": "x", "prompt": \n',
    ]
    with (folder / "mm_reward_bench.jsonl").open("ab") as handle:
        handle.write(b"".join(bad))
    with fake_server(judge_all_first) as server:
        summary = run_eval(options(server.url, folder, tmp_path / "run"))
    assert summary["skipped"] == {"not_utf8": 2, "row_malformed": 4}
    assert summary["n"] == 1 and summary["failed"] == 0


def test_malformed_vl_rewardbench_rows_are_skipped_with_a_reason(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    def row(k, **changes):
        return {"id": f"wildvision_{k}", "query": f"Q{k}?", "response": ["a", "b"], "human_ranking": [0, 1],
                "image": {"bytes": jpeg(k), "path": f"{k}.jpg"}, "query_source": "WildVision", **changes}

    rows = [row(0), row(1, query=None), row(2, human_ranking=[0, 1, 2]), row(3, image={"bytes": None, "path": None})]
    (tmp_path / "in" / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in" / "data" / "test-00000-of-00001.parquet")
    with fake_server(judge_all_first) as server:
        summary = run_eval(EvalOptions(base_url=server.url, model=MODEL, benchmark="vl-rewardbench",
                                       input=str(tmp_path / "in"), out=tmp_path / "run"))
    assert summary["skipped"] == {"row_malformed": 1, "ranking_unusable": 1, "image_missing": 1}
    assert summary["n"] == 1


def test_built_rows_that_break_the_schema_are_skipped_and_an_easyr1_build_is_one_line(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from critic_data.rl.evaluate import load_items

    def row(k, **changes):
        return {"id": f"r{k}", "images": [{"bytes": jpeg(k), "path": None}], "question": "Q?", "response_1": "a",
                "response_2": "b", "answer": "1", **changes}

    (tmp_path / "trl" / "data").mkdir(parents=True)
    rows = [row(0), row(1, answer="maybe"), row(2, question=None), row(3, images=[])]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "trl" / "data" / "test-00000-of-00001.parquet")
    skipped = Counter()
    _, items = load_items(EvalOptions(base_url="", model="", benchmark="built", input=str(tmp_path / "trl"),
                                      out=tmp_path / "o"), skipped)
    assert [item.id for item in items] == ["r0"] and skipped == {"row_malformed": 2, "image_missing": 1}
    # a source that is not text could be written to results.jsonl but never read back by --resume
    (tmp_path / "numbered" / "data").mkdir(parents=True)
    numbered = tmp_path / "numbered" / "data" / "test-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist([row(0, source=7)]), numbered)
    skipped = Counter()
    _, items = load_items(EvalOptions(base_url="", model="", benchmark="built", input=str(tmp_path / "numbered"),
                                      out=tmp_path / "o"), skipped)
    assert list(items) == [] and skipped == {"row_malformed": 1}

    (tmp_path / "easyr1" / "data").mkdir(parents=True)
    flat = [{k: v for k, v in row(0).items() if k not in ("response_1", "response_2")}]
    pq.write_table(pa.Table.from_pylist(flat), tmp_path / "easyr1" / "data" / "test-00000-of-00001.parquet")
    _, items = load_items(EvalOptions(base_url="", model="", benchmark="built", input=str(tmp_path / "easyr1"),
                                      out=tmp_path / "o"), Counter())
    with pytest.raises(UserError, match="built with --format easyr1"):
        list(items)


@pytest.mark.slow
def test_a_damaged_benchmark_parquet_is_one_line(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "in" / "data").mkdir(parents=True)
    path = tmp_path / "in" / "data" / "test-00000-of-00001.parquet"
    rows = [{"id": f"w{k}", "query": "Q?" * 50, "response": ["a" * 40, "b" * 40], "human_ranking": [0, 1],
             "image": {"bytes": jpeg(k), "path": None}, "query_source": "WildVision"} for k in range(8)]
    pq.write_table(pa.Table.from_pylist(rows), path, compression="snappy")
    data = bytearray(path.read_bytes())
    for i in range(8, len(data) // 2):  # the data pages; the footer at the end stays intact
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    with fake_server(judge_all_first) as server:
        done = run_cli("eval", "--base-url", server.url, "--model", MODEL, "--benchmark", "vl-rewardbench",
                       "--input", str(tmp_path / "in"), "--out", str(tmp_path / "run"))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "test-00000-of-00001.parquet cannot be read" in done.stderr and "download" in done.stderr


# --- eval: benchmark snapshots with odd shards and rows --------------------------------------------

def vlrb_row(k, **changes):
    return {"id": f"wildvision_{k}", "query": f"Q{k}?", "response": ["a", "b"], "human_ranking": [0, 1],
            "image": {"bytes": jpeg(k), "path": f"{k}.jpg"}, "query_source": "WildVision", **changes}


def write_vlrb_snapshot(folder, shards):
    (folder / "data").mkdir(parents=True)
    for name, rows in shards.items():
        pq.write_table(pa.Table.from_pylist(rows), folder / "data" / name)
    return folder


def vlrb_args(url, snapshot, out, *extra):
    return ("eval", "--base-url", url, "--model", MODEL, "--benchmark", "vl-rewardbench", "--input", str(snapshot),
            "--out", str(out), *extra)


@pytest.mark.slow
def test_a_shard_that_is_a_fifo_is_one_line_never_a_hang(tmp_path):
    """Before: pyarrow opened the FIFO and waited for a writer, for ever."""
    snapshot = write_vlrb_snapshot(tmp_path / "in", {"test-00000-of-00002.parquet": [vlrb_row(0)]})
    os.mkfifo(snapshot / "data" / "test-00001-of-00002.parquet")
    with fake_server(judge_all_first) as server:
        try:
            done = run_cli(*vlrb_args(server.url, snapshot, tmp_path / "run"), timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("eval hung on a FIFO shard")
    line = refused_in_one_line(done)
    assert "test-00001-of-00002.parquet is not a regular file" in line and "download the benchmark again" in line


@pytest.mark.slow
def test_a_split_that_looks_like_a_glob_is_read_as_named(tmp_path):
    """Before: --split 't*' read the test and the train shards together, and said nothing."""
    snapshot = write_vlrb_snapshot(tmp_path / "in", {"test-00000-of-00001.parquet": [vlrb_row(0)],
                                               "train-00000-of-00001.parquet": [vlrb_row(1), vlrb_row(2)]})
    with fake_server(judge_all_first) as server:
        done = run_cli(*vlrb_args(server.url, snapshot, tmp_path / "run", "--split", "t*"))
        assert "holds no data/t*-*.parquet" in refused_in_one_line(done)
        assert not any(path.endswith("/chat/completions") for path, _ in server.requests)


def test_rows_that_repeat_an_id_are_skipped_and_counted(tmp_path):
    """Before: a repeated id was judged twice and scored as one item judged in both orders (a
    position consistency on a single-order run), and a --resume dropped the second row unsaid."""
    rows = [vlrb_row(0), vlrb_row(0, response=["c", "d"]), vlrb_row(1)]
    snapshot = write_vlrb_snapshot(tmp_path / "in", {"test-00000-of-00001.parquet": rows})
    with fake_server(judge_all_first) as server:
        summary = run_eval(EvalOptions(base_url=server.url, model=MODEL, benchmark="vl-rewardbench",
                                       input=str(snapshot), out=tmp_path / "run"))
    assert summary["skipped"] == {"duplicate_id": 1}
    assert summary["n"] == summary["items"] == 2 and "position_consistency" not in summary
    assert sorted(r["id"] for r in lines(tmp_path / "run" / "results.jsonl")) == ["wildvision_0", "wildvision_1"]


def test_responses_that_are_not_a_list_are_skipped(tmp_path):
    """Before: a response column holding the string "ab" was judged as the two answers "a" and "b"."""
    snapshot = write_vlrb_snapshot(tmp_path / "in", {"test-00000-of-00002.parquet": [vlrb_row(0, response="ab")],
                                               "test-00001-of-00002.parquet": [vlrb_row(1)]})
    with fake_server(judge_all_first) as server:
        summary = run_eval(EvalOptions(base_url=server.url, model=MODEL, benchmark="vl-rewardbench",
                                       input=str(snapshot), out=tmp_path / "run"))
    assert summary["skipped"] == {"responses_malformed": 1} and summary["n"] == 1
    assert [r["id"] for r in lines(tmp_path / "run" / "results.jsonl")] == ["wildvision_1"]
