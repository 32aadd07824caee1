"""`critic-data best-of-n` against a live `transformers serve` with the tiny Qwen2.5-VL (which ignores
`n`, so every candidate is its own request), and the selection rules with scripted judges.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import re
import time

import pytest

from critic_data import UserError
from critic_data.rl.best_of_n import final_answer, knockout, majority_vote, read_questions, round_robin
from critic_data.rl.client import derive_seed
from critic_data.rl.metrics import pick_summary, round_robin_scores
from critic_data.rl.records import Match, Pick, normalize_answer
from tests.cli import SECRET_KEY, run_cli
from tests.rl.runs import (
    MODEL,
    lines,
    png_bomb,
    question,
    write_question_file,
)
from tests.serve import Reply, completion, fake_server, free_port, prompt_of, served_model
from tests.snapshots import jpeg

MAX_TOKENS = "4"  # each token costs ~40 ms here and the server generates one request at a time


@pytest.fixture(scope="module")
def server(tiny_qwen_dir, tmp_path_factory):
    with served_model(tiny_qwen_dir, tmp_path_factory.mktemp("serve-bon")) as endpoint:
        yield endpoint


def write_questions(folder, rows):
    (folder / "img").mkdir(parents=True, exist_ok=True)
    for k, row in enumerate(rows):
        (folder / row["image"]).write_bytes(jpeg(300 + k))
    path = folder / "questions.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


QUESTIONS = [
    {"id": "q0", "image": "img/0.jpg", "question": "How many objects are there?", "answer": "3"},
    {"id": "q1", "image": "img/1.jpg", "question": "What colour is the main object?", "answer": "Red."},
    {"id": "q2", "image": "img/2.jpg", "question": "Describe the image."},
]


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _check_pick(pick, n):
    assert len(pick["candidates"]) == n
    assert pick["winner"] == pick["candidates"][pick["winner_index"]]
    assert pick["unparsed"] == sum(m["by"] == "coin" for m in pick["matches"])
    for m in pick["matches"]:
        assert m["winner"] in m["shown"]
        assert m["by"] == ("judge" if m["verdict"] in ("1", "2") else "coin")
    assert pick["final_answers"] == [final_answer(c) for c in pick["candidates"]]
    assert pick["majority"] == majority_vote(pick["final_answers"])
    if "answer" in pick:
        gold = normalize_answer(pick["answer"])
        assert pick["pick_correct"] == (pick["final_answers"][pick["winner_index"]] == gold)
        assert pick["first_correct"] == (pick["final_answers"][0] == gold)
        assert pick["any_correct"] == (gold in pick["final_answers"])


# --- live ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_knockout_through_the_cli(server, tmp_path):
    base_url, model = server
    questions = write_questions(tmp_path / "in", QUESTIONS)
    out = tmp_path / "run"
    done = run_cli("best-of-n", "--base-url", base_url, "--model", model, "--input", str(questions), "--n", "4",
                   "--max-tokens", MAX_TOKENS, "--concurrency", "3", "--out", str(out))
    assert done.returncode == 0, done.stderr
    picks = {p["id"]: p for p in _lines(out / "picks.jsonl")}
    assert picks.keys() == {"q0", "q1", "q2"}, json.loads((out / "summary.json").read_text())["first_failure"]
    for pick in picks.values():
        _check_pick(pick, 4)
        assert pick["matches_played"] == 3  # N - 1
        first_round = [set(m["shown"]) for m in pick["matches"][:2]]
        assert first_round == [{0, 1}, {2, 3}]
        assert set(pick["matches"][2]["shown"]) == {pick["matches"][0]["winner"], pick["matches"][1]["winner"]}
        assert pick["winner_index"] == pick["matches"][2]["winner"]
        assert len(set(pick["candidates"])) > 1  # the server ignored `n`: each sample had its own seed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["questions"] == 3 and summary["matches"] == 9 and summary["answered"] == 2
    assert summary["unparsed_judgements"] == sum(p["unparsed"] for p in picks.values())
    answered = [picks["q0"], picks["q1"]]
    assert summary["accuracy"]["best_of_n"] == pytest.approx(sum(p["pick_correct"] for p in answered) / 2)
    assert summary["accuracy"]["majority_vote"] == pytest.approx(sum(p["majority_correct"] for p in answered) / 2)
    assert "best of n acc" in done.stderr and "matches played" in done.stderr
    everything = done.stdout + done.stderr + (out / "picks.jsonl").read_text() + (out / "summary.json").read_text()
    assert SECRET_KEY not in everything


def test_a_control_token_in_a_candidate_cannot_break_the_judge_request(server, monkeypatch):
    """A server that parses reasoning returns content with special tokens kept, so a sampled
    candidate can hold `<|image_pad|>`; put into a judge prompt as text it would count as a
    second image token and the server refuses the request. The rendered prompt leaves it out."""
    from critic_data.rl.client import ChatClient, RequestFailed, data_url
    from critic_data.schemas.prompts import DEFAULT_TEMPLATE, render_critic_prompt

    base_url, model = server
    candidate = "A red<|image_pad|> bike.<|im_end|>"
    prompt = render_critic_prompt(DEFAULT_TEMPLATE, "What is shown?", candidate, "A cat.")
    assert "<|" not in prompt and "A red bike." in prompt

    async def ask(text):
        async with ChatClient(base_url, model, concurrency=1, max_tokens=int(MAX_TOKENS)) as client:
            return await client.chat([data_url(jpeg(350))], text, temperature=0.0, seed=0)

    assert len(asyncio.run(ask(prompt))) == 1
    # What happened to a question before the markers were left out: the server refuses the request
    # (transformers serve 5.24 with a 500, 5.25 with a 400), which fails that question alone ...
    monkeypatch.setattr("critic_data.rl.client.RUN_ATTEMPTS", 1)  # a 5xx would be retried: no need to wait
    with pytest.raises(RequestFailed) as refused:
        asyncio.run(ask(prompt.replace("A red bike.", candidate)))
    assert refused.value.status is not None  # the server's refusal, not an unreadable answer
    assert len(asyncio.run(ask(prompt))) == 1  # ... and the run goes on: the next request is answered


@pytest.mark.slow
def test_round_robin_plays_every_ordered_pair(server, tmp_path):
    base_url, model = server
    questions = write_questions(tmp_path / "in", QUESTIONS[:2])
    out = tmp_path / "run"
    done = run_cli("best-of-n", "--base-url", base_url, "--model", model, "--input", str(questions), "--n", "3",
                   "--strategy", "round-robin", "--max-tokens", MAX_TOKENS, "--out", str(out))
    assert done.returncode == 0, done.stderr
    for pick in _lines(out / "picks.jsonl"):
        _check_pick(pick, 3)
        assert sorted(tuple(m["shown"]) for m in pick["matches"]) == list(itertools.permutations(range(3), 2))
        scores = round_robin_scores(3, Pick.from_json(pick).matches)
        assert pick["scores"] == scores and sum(scores) == 0
        assert scores[pick["winner_index"]] == max(scores)
    assert json.loads((out / "summary.json").read_text())["matches"] == 12


@pytest.mark.slow
def test_resume_skips_questions_already_picked(server, tmp_path):
    base_url, model = server
    out = tmp_path / "run"
    args = ["best-of-n", "--base-url", base_url, "--model", model, "--n", "2", "--max-tokens", MAX_TOKENS, "--out",
            str(out)]
    first = run_cli(*args, "--input", str(write_questions(tmp_path / "a", QUESTIONS[:2])))
    assert first.returncode == 0, first.stderr
    before = (out / "picks.jsonl").read_text()
    grown = write_questions(tmp_path / "a", QUESTIONS)  # the questions file grew by one
    refused = run_cli(*args, "--input", str(grown))
    assert refused.returncode == 2 and "--resume" in refused.stderr
    other = run_cli(*args, "--input", str(write_questions(tmp_path / "b", QUESTIONS)), "--resume")
    assert other.returncode == 2 and "--input was" in other.stderr  # another file is another run
    resumed = run_cli(*args, "--input", str(grown), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    after = (out / "picks.jsonl").read_text()
    assert after.startswith(before)  # the two finished questions were kept, not redone
    assert [p["id"] for p in _lines(out / "picks.jsonl")] == ["q0", "q1", "q2"]
    assert json.loads((out / "summary.json").read_text())["questions"] == 3


@pytest.mark.slow
def test_endpoint_down_is_one_line_and_quick(tmp_path):
    questions = write_questions(tmp_path / "in", QUESTIONS[:1])
    started = time.monotonic()
    done = run_cli("best-of-n", "--base-url", f"http://127.0.0.1:{free_port()}/v1", "--model", "m",
                   "--input", str(questions), "--n", "4", "--out", str(tmp_path / "run"))
    assert done.returncode == 2 and time.monotonic() - started < 20
    assert done.stderr.strip().startswith("error: cannot reach the OpenAI-compatible server")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert SECRET_KEY not in done.stdout + done.stderr


@pytest.mark.parametrize("args, message", [
    (["--n", "1"], "at least 2 candidates"),
    (["--n", "4", "--strategy", "swiss"], "choose from knockout, round-robin"),
    (["--n", "65", "--strategy", "round-robin"], "--n 65 with round-robin: 65 samples + 4160 judgements = 4225 "
                                                 "requests per question, over the limit of 4096; lower --n or use "
                                                 "--strategy knockout"),
    (["--n", "2049"], "--n 2049 with knockout: 2049 samples + 2048 judgements = 4097 requests per question"),
    (["--n", "4", "--timeout", "0"], "--timeout must be a number of seconds above 0"),
    (["--n", "4", "--temperature", "nan"], "--temperature must be a number, 0 or more"),
])
@pytest.mark.slow
def test_bad_options_are_one_line(tmp_path, args, message):
    questions = write_questions(tmp_path / "in", QUESTIONS[:1])
    done = run_cli("best-of-n", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--input", str(questions),
                   "--out", str(tmp_path / "run"), *args)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_the_largest_n_each_strategy_allows():
    from critic_data.rl.options import MAX_REQUESTS_PER_QUESTION, BestOfNOptions, requests_per_question

    for n, strategy in ((64, "round-robin"), (2048, "knockout")):
        BestOfNOptions(base_url="", model="", input="q.jsonl", n=n, out="o", strategy=strategy)
        assert (sum(requests_per_question(n, strategy)) <= MAX_REQUESTS_PER_QUESTION
                < sum(requests_per_question(n + 1, strategy)))


@pytest.mark.parametrize("content, message", [
    ('{"id": "a", "image": "img/0.jpg", "question": "q"}\n{"id": "b", "image": ', ":2 is not valid JSON"),
    ('{"id": "a", "image": "img/0.jpg"}\n', ":1 needs string fields id, image"),
    ('{"id": "a", "image": "img/nope.jpg", "question": "q"}\n', "image img/nope.jpg not found"),
    ('{"id": "a", "image": "img/0.jpg", "question": "q"}\n{"id": "a", "image": "img/0.jpg", "question": "r"}\n',
     "id 'a' appears twice"),
    ("\n", "holds no questions"),
    (b'{"id": "a", "image": "img/0.jpg", "question": "q"}\n{"id": "b", "image": "img/0.jpg", "question": "caf\xe9"}\n',
     r":2 is not valid UTF-8 \(byte 0xe9 at column 51\); save the file as UTF-8"),
    ('{"id": "a", "image": "img/0.jpg", "question": "odd \\ud800"}\n', ":1 holds a lone surrogate"),
    ('{"id": "a", "image": "img/0.jpg", "question": "q", "answer": ["3"]}\n',
     ":1: answer must be a string or a number"),
    ('{"id": true, "image": "img/0.jpg", "question": "q"}\n', ":1 needs string fields id, image"),
    ('{"id": "a", "image": "img/0.jpg", "question": {"text": "q"}}\n', ":1 needs string fields id, image"),
    ("[" * 100_000 + "\n", r":1 is not valid JSON \(nested too deeply\)"),
])
def test_malformed_questions_are_user_errors(tmp_path, content, message):
    path = write_questions(tmp_path, QUESTIONS[:1])
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError, match=message):
        read_questions(path)


@pytest.mark.slow
def test_a_questions_file_that_is_not_utf8_is_one_line(tmp_path):
    path = write_questions(tmp_path / "in", QUESTIONS[:1])
    path.write_bytes(b'{"id": "a", "image": "img/0.jpg", "question": "\xff\xfe"}\n')
    done = run_cli("best-of-n", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--input", str(path), "--n", "2",
                   "--out", str(tmp_path / "run"))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert "questions.jsonl:1 is not valid UTF-8" in done.stderr


def test_a_byte_order_mark_is_read_not_rejected(tmp_path):
    path = write_questions(tmp_path, QUESTIONS[:2])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert [q.id for q in read_questions(path)] == ["q0", "q1"]


# --- a scripted model whose answers are known ----------------------------------------------------------

VALUES = [3, 7, 1, 9]  # the candidates' final answers, in sample order


def by_number(request):
    """Samples \\boxed{3}, \\boxed{7}, ... (it honours `n`, as vllm serve does); as a judge it prefers the larger."""
    text = prompt_of(request)
    if "[Response 1]" in text:
        first, second = (int(v) for v in re.findall(r"\\boxed\{(\d+)\}", text))
        return completion("<think>compare</think> \\boxed{1}" if first > second
                          else "<think>compare</think> \\boxed{2}")
    return completion(*(f"<think>hm</think> \\boxed{{{v}}}" for v in VALUES[: request.get("n", 1)]))


@pytest.mark.slow
@pytest.mark.parametrize("strategy, matches, scores", [("knockout", 3, None), ("round-robin", 12, [-1, 1, -3, 3])])
def test_a_judge_with_known_preferences_picks_the_best_candidate(tmp_path, strategy, matches, scores):
    rows = [{**QUESTIONS[0], "answer": "9"}, {**QUESTIONS[1], "answer": "$7$."}]
    questions = write_questions(tmp_path / "in", rows)
    out = tmp_path / "run"
    with fake_server(by_number) as server:
        done = run_cli("best-of-n", "--base-url", server.url, "--model", "fake-model", "--input", str(questions),
                       "--n", "4", "--strategy", strategy, "--out", str(out))
    assert done.returncode == 0, done.stderr
    # before the first
    assert (f"best-of-4 {strategy}: 2 questions x (1 request for 4 samples + {matches} judgements) = "
            f"{2 * (1 + matches)} requests; {2 * (4 + matches)} if the server ignores n") in done.stderr
    picks = {p["id"]: p for p in _lines(out / "picks.jsonl")}
    for pick in picks.values():
        assert pick["final_answers"] == ["3", "7", "1", "9"]
        assert pick["winner_index"] == 3 and pick["matches_played"] == matches and pick["unparsed"] == 0
        assert pick.get("scores") == scores
    assert (picks["q0"]["pick_correct"], picks["q1"]["pick_correct"]) == (True, False)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accuracy"] == {"best_of_n": 0.5, "first_sample": 0.0, "majority_vote": 0.0, "any_candidate": 1.0}
    assert summary["matches"] == 2 * matches and summary["failed"] == 0


@pytest.mark.slow
def test_a_resume_asks_again_for_a_pick_whose_figures_do_not_follow_from_its_matches(tmp_path):
    """A picks.jsonl line is read back by the one Pick reader: one whose pick is marked right while
    its winner's answer is not the gold one (the old resume rule looked at types only) is set aside,
    and its question asked again, so the summary counts only picks that hold together."""
    rows = [{**QUESTIONS[0], "answer": "9"}, {**QUESTIONS[1], "answer": "$7$."}]
    questions = write_questions(tmp_path / "in", rows)
    out = tmp_path / "run"
    args = ["best-of-n", "--base-url", "", "--model", "fake-model", "--input", str(questions), "--n", "4", "--out",
            str(out)]
    with fake_server(by_number) as server:
        args[2] = server.url
        assert run_cli(*args).returncode == 0
        # picks are written as they complete, in either order: take them by id
        lines = sorted((out / "picks.jsonl").read_text().splitlines(), key=lambda line: json.loads(line)["id"])
        assert [json.loads(line)["id"] for line in lines] == [QUESTIONS[0]["id"], QUESTIONS[1]["id"]]
        tampered = {**json.loads(lines[1]), "pick_correct": True}  # q1's pick, "9", is not "7"
        (out / "picks.jsonl").write_text(lines[0] + "\n" + json.dumps(tampered) + "\n")
        resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "picks.jsonl.bad-lines").read_text() == json.dumps(tampered) + "\n"
    assert [p["id"] for p in _lines(out / "picks.jsonl")] == [json.loads(lines[0])["id"], tampered["id"]]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accuracy"]["best_of_n"] == 0.5 and summary["set_aside"]["lines"] == 1


@pytest.mark.slow
def test_a_question_whose_image_is_a_decompression_bomb_fails_alone(tmp_path):

    questions = write_questions(tmp_path / "in", QUESTIONS)
    (tmp_path / "in" / "img" / "1.jpg").write_bytes(png_bomb(20_000, 10_000))
    out = tmp_path / "run"
    with fake_server(by_number) as server:
        done = run_cli("best-of-n", "--base-url", server.url, "--model", "fake-model", "--input", str(questions),
                       "--n", "2", "--out", str(out))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert (last.startswith("error: 1 question failed")
            and "q1: the image cannot be decoded (DecompressionBombError" in last)
    assert sorted(p["id"] for p in _lines(out / "picks.jsonl")) == ["q0", "q2"]


# --- the selection rules with scripted judges --------------------------------------------------------

def scripted(prefers):
    """A judge that picks `prefers(first, second)` and records what it was shown."""
    shown = []

    async def judge(first, second, key):
        shown.append((first, second, key))
        return Match((first, second), "1", prefers(first, second), "judge")

    return judge, shown


@pytest.mark.parametrize("n", range(2, 10))
def test_knockout_plays_n_minus_1_matches_in_ceil_log2_n_rounds(n):
    judge, shown = scripted(max)  # the higher index always wins
    winner, matches = asyncio.run(knockout(n, judge, seed=0, qid="q"))
    assert winner == n - 1 and len(matches) == n - 1
    assert len({key.split(":")[0] for _, _, key in shown}) == math.ceil(math.log2(n))
    losers = [min(m.shown) for m in matches]
    assert sorted(losers) == list(range(n - 1))  # everyone but the winner loses exactly once


def test_knockout_randomises_the_presented_order_by_seed():
    orders = {}
    for seed in range(4):
        judge, shown = scripted(max)
        asyncio.run(knockout(16, judge, seed=seed, qid="q"))
        orders[seed] = [first < second for first, second, _ in shown]
    assert all(True in o and False in o for o in orders.values())  # both orders within a run
    assert len({tuple(o) for o in orders.values()}) > 1  # and the seed changes them
    judge, again = scripted(max)
    asyncio.run(knockout(16, judge, seed=0, qid="q"))
    assert [first < second for first, second, _ in again] == orders[0]  # reproducible


def test_round_robin_cancels_a_position_biased_judge():
    judge, shown = scripted(lambda first, second: second)  # always "Response 2"
    winner, matches, scores = asyncio.run(round_robin(5, judge, seed=0, qid="q"))
    assert len(matches) == 20 and scores == [0] * 5
    # a full tie goes to the seeded coin among the tied: all five here
    assert winner == derive_seed(0, "q", "tie") % 5
    winners = [asyncio.run(round_robin(5, scripted(lambda a, b: b)[0], seed=s, qid="q"))[0] for s in range(12)]
    assert winners == [derive_seed(s, "q", "tie") % 5 for s in range(12)]
    assert len(set(winners)) > 1  # the coin, not always the first sample


def test_round_robin_scores_follow_the_formula():
    judge, _ = scripted(lambda a, b: 2 if 2 in (a, b) else min(a, b))  # 2 beats everyone; else the lower index
    winner, _, scores = asyncio.run(round_robin(4, judge, seed=0, qid="q"))
    # Each candidate is shown first N-1 times and second N-1 times, so r_i = wins - (N - 1):
    # wins are 2: 6, 0: 4 (beats 1 and 3 in both orders), 1: 2 (beats 3), 3: 0.
    assert scores == [1, -1, 3, -3] and winner == 2


def test_round_robin_scores_on_known_matches():
    matches = [Match((0, 1), "2", 1, "judge"), Match((1, 0), "1", 1, "judge"),
               Match((0, 2), "1", 0, "judge"), Match((2, 0), None, 0, "coin")]
    # a_kl = 1 when l, shown second, won: a_01 = 1, a_10 = 0, a_02 = 0, a_20 = 1 (the coin gave it to 0)
    # r_0 = (a_10 + a_20) - (a_01 + a_02) = 1 - 1 = 0; r_1 = a_01 - a_10 = 1; r_2 = a_02 - a_20 = -1
    assert round_robin_scores(3, matches) == [0, 1, -1]


def test_answers_normalise_and_vote():
    assert normalize_answer("  $Red$. ") == "red" and normalize_answer("Two  cats") == "two cats"
    assert final_answer("<think>hm</think> so \\boxed{ 3 }") == "3"
    assert final_answer("no box here.") == "no box here"
    assert majority_vote(["b", "a", "a", "b", "c"]) == "b"  # a tie goes to the one seen first
    assert majority_vote(["x", "y", "y"]) == "y"


def test_summary_accuracy_on_known_picks():
    def pick(qid: str, finals: list[str], winner: int, coins: int, answer: str | None = None) -> Pick:
        matches = [Match((0, 1), None, 0, "coin") if k < coins else Match((0, 1), "1", 0, "judge") for k in range(3)]
        candidates = [f"\\boxed{{{a}}}" for a in finals]
        return Pick(qid, candidates, winner, matches, finals, majority_vote(finals), None, answer)

    picks = [
        pick("1", ["b", "a", "a", "c"], 1, coins=1, answer="a"),  # the pick, the majority and some candidate right
        pick("2", ["a", "b", "b", "c"], 3, coins=2, answer="b"),  # the majority and some candidate right
        pick("3", ["a", "b", "c", "d"], 0, coins=0),
    ]
    summary = pick_summary(picks)
    assert summary["matches"] == 9 and summary["unparsed_rate"] == pytest.approx(3 / 9) and summary["answered"] == 2
    assert summary["accuracy"] == {"best_of_n": 0.5, "first_sample": 0.0, "majority_vote": 1.0, "any_candidate": 1.0}


def test_a_failed_match_fails_the_question_and_cancels_the_rest():
    from critic_data.rl.client import RequestFailed

    cancelled = []

    async def judge(first, second, key):
        if (first, second) == (0, 1):
            raise RequestFailed("HTTP 400: refused")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(key)
            raise

    with pytest.raises(RequestFailed, match="refused"):
        asyncio.run(round_robin(3, judge, seed=0, qid="q"))
    assert len(cancelled) == 5  # the other ordered pairs did not keep running


# --- sampling settings, what the judge sees, and the context bound ----------------------------------

def reasoning_sampler(long: int = 0):
    """Samples `<think>REASONING-k ...</think> \\boxed{k}` (padded to `long` characters when the question
    says LONG); as a judge it prefers the larger boxed value."""
    def chat(request):
        text = prompt_of(request)
        if "[Response 1]" in text:
            first, second = (int(v) for v in re.findall(r"\\boxed\{(\d+)\}", text))
            return completion(f"<think>compare</think> \\boxed{{{1 if first > second else 2}}}")
        pad = "x" * long if "LONG" in text else ""
        return completion(*(f"<think>REASONING-{k} {pad}</think> \\boxed{{{k}}}" for k in range(request.get("n", 1))))
    return chat


def split_requests(server):
    bodies = [body for path, body in server.requests if path.endswith("/chat/completions")]
    judge = [b for b in bodies if "[Response 1]" in prompt_of(b)]
    return [b for b in bodies if b not in judge], judge


@pytest.mark.slow
def test_candidates_are_sampled_with_the_official_instruction_and_the_stated_defaults(tmp_path):
    from critic_data.schemas.prompts import with_instruction

    questions = write_questions(tmp_path / "in", QUESTIONS[:1])
    with fake_server(reasoning_sampler()) as server:
        done = run_cli("best-of-n", "--base-url", server.url, "--model", "fake-model", "--input", str(questions),
                       "--n", "2", "--out", str(tmp_path / "run"))
        samples, judges = split_requests(server)
    assert done.returncode == 0, done.stderr
    [sample] = samples
    assert prompt_of(sample) == with_instruction(QUESTIONS[0]["question"])  # the official format prompt, one space
    assert (sample["temperature"], sample["top_p"], sample["n"]) == (1.0, 0.99, 2)
    [judge] = judges
    assert judge["temperature"] == 0.0 and "top_p" not in judge  # judgements are greedy
    # the judge sees each candidate without its <think> part
    assert "\\boxed{0}" in prompt_of(judge) and "\\boxed{1}" in prompt_of(judge)
    assert "REASONING" not in prompt_of(judge)
    pick = _lines(tmp_path / "run" / "picks.jsonl")[0]
    assert pick["candidates"][0].startswith("<think>REASONING-0")  # kept whole in the picks


@pytest.mark.slow
def test_sampling_options_and_a_judge_that_sees_the_thinking(tmp_path):
    questions = write_questions(tmp_path / "in", QUESTIONS[:1])
    with fake_server(reasoning_sampler()) as server:
        done = run_cli("best-of-n", "--base-url", server.url, "--model", "fake-model", "--input", str(questions),
                       "--n", "2", "--temperature", "0.7", "--top-p", "0.9", "--judge-sees-thinking",
                       "--out", str(tmp_path / "run"))
        [sample], [judge] = split_requests(server)
    assert done.returncode == 0, done.stderr
    assert (sample["temperature"], sample["top_p"]) == (0.7, 0.9)
    assert "<think>REASONING-0" in prompt_of(judge) and "<think>REASONING-1" in prompt_of(judge)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["options"]["top_p"] == 0.9 and summary["options"]["judge_sees_thinking"] is True


@pytest.mark.slow
def test_a_match_over_max_model_len_is_reported_not_sent(tmp_path):
    """q1's candidates are 4000 characters long even without their thinking: its match cannot fit
    4096 tokens beside a 512-token answer by the byte count, so it is not sent; q0's is."""
    rows = [{**QUESTIONS[0]}, {"id": "q1", "image": "img/1.jpg", "question": "LONG question?"}]
    questions = write_questions(tmp_path / "in", rows)
    out = tmp_path / "run"
    with fake_server(reasoning_sampler(long=4000)) as server:
        done = run_cli("best-of-n", "--base-url", server.url, "--model", "fake-model", "--input", str(questions),
                       "--n", "2", "--max-tokens", "512", "--max-model-len", "4096", "--judge-sees-thinking",
                       "--out", str(out))
        _, judges = split_requests(server)
    assert done.returncode == 0, done.stderr
    assert len(judges) == 1 and "LONG" not in prompt_of(judges[0])
    picks = {p["id"]: p for p in _lines(out / "picks.jsonl")}
    [match] = picks["q1"]["matches"]
    coin = derive_seed(0, "q1", "coin", "r0:0-1") % 2
    assert match["by"] == "too-long" and match["verdict"] is None and match["winner"] == match["shown"][coin]
    assert picks["q1"]["too_long"] == 1 and picks["q1"]["unparsed"] == 0 and picks["q0"]["too_long"] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["too_long_matches"] == 1 and summary["matches"] == 2 and summary["failed"] == 0


def test_the_context_bound_counts_bytes_and_image_tokens():
    from critic_data.rl.best_of_n import TEMPLATE_TOKENS, prompt_token_bound

    # UTF-8 bytes (an upper bound on a byte-level BPE's tokens), 28 x 28 pixels per image token
    assert prompt_token_bound("é" * 10, (56, 30)) == 20 + 2 * 2 + TEMPLATE_TOKENS
    assert prompt_token_bound("abc", (28, 28)) == 3 + 1 + TEMPLATE_TOKENS


@pytest.mark.slow
def test_a_context_length_refusal_decides_the_match_like_one_not_sent(tmp_path):
    questions = write_questions(tmp_path / "in", QUESTIONS[:1])
    refusal = Reply(json.dumps({"error": {"message": "This model's maximum context length is 8192 tokens. However, "
                                                     "you requested 9000 tokens (6952 in the messages, 2048 in the "
                                                     "completion).", "code": 400}}).encode(), status=400)

    def chat(request):
        return refusal if "[Response 1]" in prompt_of(request) else reasoning_sampler()(request)

    with fake_server(chat) as server:
        done = run_cli("best-of-n", "--base-url", server.url, "--model", "fake-model", "--input", str(questions),
                       "--n", "2", "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    [pick] = _lines(tmp_path / "run" / "picks.jsonl")
    assert pick["too_long"] == 1 and pick["matches"][0]["by"] == "too-long"
    other = Reply(b'{"error": {"message": "bad image"}}', status=400)
    with fake_server(lambda r: other if "[Response 1]" in prompt_of(r) else reasoning_sampler()(r)) as server:
        done = run_cli("best-of-n", "--base-url", server.url, "--model", "fake-model", "--input", str(questions),
                       "--n", "2", "--out", str(tmp_path / "run2"))
    # any other refusal fails the question, as before
    assert done.returncode == 2 and "every question failed (1); first: q0: HTTP 400: bad image" in done.stderr


@pytest.mark.parametrize("args, message", [
    (["--top-p", "0"], "--top-p must be above 0 and at most 1"),
    (["--top-p", "1.5"], "--top-p must be above 0 and at most 1"),
    (["--max-model-len", "2048"], "--max-model-len 2048 leaves no room for a prompt beside --max-tokens 2048"),
])
@pytest.mark.slow
def test_bad_sampling_and_context_options_are_one_line(tmp_path, args, message):
    questions = write_questions(tmp_path / "in", QUESTIONS[:1])
    done = run_cli("best-of-n", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--input", str(questions),
                   "--n", "2", "--out", str(tmp_path / "run"), *args)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_help_states_the_sampling_defaults_and_their_source():
    done = run_cli("best-of-n", "--help", env={"COLUMNS": "400"})
    text = " ".join(done.stdout.replace("│", " ").split())
    assert "1.0" in text and "0.99" in text
    assert "si0wang/LLaVA-Critic-R1@6fd42d1 EasyR1/examples/config.yaml:56-57" in text
    assert "do not publish" in text and "--judge-sees-thinking" in text and "--max-model-len" in text


def test_question_images_must_be_regular_files_under_the_size_cap(tmp_path, monkeypatch):

    import critic_data.files as images

    path = write_questions(tmp_path / "in", QUESTIONS[:2])
    os.remove(tmp_path / "in" / "img" / "1.jpg")
    os.mkfifo(tmp_path / "in" / "img" / "1.jpg")
    with pytest.raises(UserError, match=r"questions.jsonl:2: image img/1.jpg is not a regular file"):
        read_questions(path)
    (tmp_path / "in" / "img" / "1.jpg").unlink()
    (tmp_path / "in" / "img" / "1.jpg").write_bytes(jpeg(1) + b"\0" * 4096)
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 4096)
    with pytest.raises(UserError, match=r"questions.jsonl:2: image img/1.jpg is over the image size cap of 4096 bytes"):
        read_questions(path)
    # a path outside the file's folder is the user's own choice
    (tmp_path / "elsewhere.jpg").write_bytes(jpeg(2))
    path.write_text(json.dumps({"id": "a", "image": "../elsewhere.jpg", "question": "q"}) + "\n")
    assert [q.image.name for q in read_questions(path)] == ["elsewhere.jpg"]


def _progress_of_a_run(tmp_path, chat, rows, **options):
    """A best-of-n run in this process under a progress bar: (the bar's task, the chat requests the server got)."""
    import io

    from rich.console import Console
    from rich.progress import Progress

    from critic_data.rl.best_of_n import run_best_of_n
    from critic_data.rl.options import BestOfNOptions

    questions = write_questions(tmp_path / "in", rows)
    with fake_server(chat) as server, Progress(console=Console(file=io.StringIO(), force_terminal=True)) as progress:
        run_best_of_n(BestOfNOptions(base_url=server.url, model="fake-model", input=questions, out=tmp_path / "run",
                                     **options), progress=progress)
        chats = sum(path.endswith("/chat/completions") for path, _ in server.requests)
    [task] = progress.tasks
    return task, chats


@pytest.mark.slow
@pytest.mark.parametrize("strategy, matches", [("knockout", 3), ("round-robin", 12)])
def test_progress_counts_the_requests_of_a_server_that_honours_n(tmp_path, strategy, matches):
    """N=4: one sampling request and the matches per question, announced and counted as such (the bar
    counted questions: 2 of 2 while 2 x (1 + matches) requests were made)."""
    task, chats = _progress_of_a_run(tmp_path, by_number, QUESTIONS[:2], n=4, strategy=strategy)
    assert chats == 2 * (1 + matches)
    assert task.total == task.completed == chats


def test_progress_counts_the_requests_of_a_server_that_ignores_n(tmp_path):
    """A server answering one candidate per request is asked N times per question: the bar's total grows
    to the requests made."""
    def one_choice(request):
        return by_number({**request, "n": 1}) if "[Response 1]" not in prompt_of(request) else by_number(request)

    task, chats = _progress_of_a_run(tmp_path, one_choice, QUESTIONS[:2], n=4)
    assert chats == 2 * (4 + 3)
    assert task.total == task.completed == chats


def test_progress_leaves_out_a_match_that_is_not_sent(tmp_path):
    """q1's match is over --max-model-len: decided by a coin, never sent, not counted as a request."""
    rows = [{**QUESTIONS[0]}, {"id": "q1", "image": "img/1.jpg", "question": "LONG question?"}]
    task, chats = _progress_of_a_run(tmp_path, reasoning_sampler(long=4000), rows, n=2, max_tokens=512,
                                     max_model_len=4096, judge_sees_thinking=True)
    assert chats == 2 + 1
    assert task.total == task.completed == chats


# --- best-of-n: a server that answers a judgement with several choices --------------------------------

def two_choices_for_everything(request):
    """Asked for n, or for one: always more choices than asked (a server with its own default n)."""
    return completion(*["\\boxed{1}"] * (request.get("n", 1) + 1))


@pytest.mark.slow
def test_a_judgement_answered_with_several_choices_reads_the_first(tmp_path):
    """Before: `[completion] = ...` raised ValueError, a traceback that ended the run."""
    questions = write_question_file(tmp_path / "in", [question(0), question(1)])
    with fake_server(two_choices_for_everything) as server:
        done = run_cli("best-of-n", "--base-url", server.url, "--model", MODEL, "--input", str(questions),
                       "--n", "2", "--out", str(tmp_path / "run"))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    picks = lines(tmp_path / "run" / "picks.jsonl")
    assert sorted(p["id"] for p in picks) == ["q0", "q1"]
    assert all(len(p["candidates"]) == 2 and p["unparsed"] == 0 for p in picks)


# --- best-of-n: question lines that cannot name a question -------------------------------------------

@pytest.mark.parametrize("row, message", [
    (question(0, id=""), ":1: id is blank"),
    (question(0, id=" \t "), ":1: id is blank"),
    ('{"id": "q0", "image": "img.jpg", "question": "Q?", "answer": NaN}',
     ":1: answer must be a string or a finite number"),
    ('{"id": "q0", "image": "img.jpg", "question": "Q?", "answer": -Infinity}',
     ":1: answer must be a string or a finite"),
], ids=["empty id", "blank id", "NaN answer", "-Infinity answer"])
def test_a_blank_id_or_a_non_finite_answer_is_refused_naming_the_line(tmp_path, row, message):
    """Before: a blank id named nothing in picks.jsonl and in failures ("  : HTTP 400 ..."), and a NaN
    (which JSON does not allow, Python's reader does) became the gold answer "nan"."""
    questions = write_question_file(tmp_path / "in", [row])
    with pytest.raises(UserError, match=message):
        read_questions(questions)


def test_numbers_and_null_answers_still_read(tmp_path):
    questions = write_question_file(tmp_path / "in",
                                [question(0, answer=3), question(1, answer=2.5), question(2, answer=None),
                                 question(3, id=7)])
    assert [(q.id, q.answer) for q in read_questions(questions)] == [("q0", "3"), ("q1", "2.5"), ("q2", None),
                                                                     ("7", None)]
