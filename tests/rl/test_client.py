"""rl/client.py, the client and run loop that eval and best-of-n share, against hostile servers and
run folders, on the scripted stand-in server of tests/serve.py (fast: no model runs).

The promises: every request is bounded in time; an answer that is not a chat completion, or a
refusal, fails its item and the run goes on (a refusal is asked again only where that can change
the answer); `--resume` keeps every valid record and never mixes runs; an --out that cannot hold
a run is refused before any request, two runs into one folder cannot mix, and a full disk or a
connection dropped mid-answer is one line.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time

import openai  # noqa: F401 - imported now: the timed requests below must not pay for its import
import pytest

from critic_data import UserError
from critic_data.rl.client import ChatClient, RequestFailed, ResultLog
from critic_data.rl.evaluate import run_eval
from tests.cli import SECRET_KEY, run_cli
from tests.rl.runs import (
    MODEL,
    chats,
    eval_args,
    judge_all_first,
    judge_right,
    lines,
    one_line,
    options,
    question,
    refused_in_one_line,
    write_mmrlhf,
    write_question_file,
)
from tests.serve import Reply, completion, fake_server, prompt_of
from tests.snapshots import jpeg

# --- every request is bounded in time -----------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("where", ["models", "chat"])
@pytest.mark.parametrize("behaviour", ["hang", "trickle"])
def test_a_server_that_never_finishes_an_answer_ends_the_run_within_the_timeout(tmp_path, where, behaviour):
    stuck = Reply(behaviour=behaviour)
    models = stuck if where == "models" else (MODEL,)
    snapshot = write_mmrlhf(tmp_path / "in", [("Q?", jpeg(1)), ("Q?", jpeg(2))])
    with fake_server(lambda request: stuck, models=models) as server:
        started = time.monotonic()
        done = run_cli("eval", "--base-url", server.url, "--model", MODEL, "--benchmark", "mm-rlhf", "--input",
                       str(snapshot), "--out", str(tmp_path / "run"), "--timeout", "1", timeout=60)
        elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert elapsed < 10  # about 1.5 s of start-up, then 1 s; before the fix: 600 s reads, retried
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert "did not answer within 1 s" in done.stderr and "--timeout" in done.stderr


def _seconds_until_it_fails_with_503(url: str, timeout: float) -> float:
    """Ask one chat request of the server at `url` within `timeout` seconds: it must fail with the
    server's 503; return how long that took."""
    async def ask():
        async with ChatClient(url, MODEL, concurrency=1, max_tokens=4, timeout=timeout) as client:
            return await client.chat([], "hello", temperature=0.0, seed=0)

    started = time.monotonic()
    with pytest.raises(RequestFailed, match="HTTP 503: overloaded"):
        asyncio.run(ask())
    return time.monotonic() - started


@pytest.mark.slow
def test_retries_stop_at_the_timeout(tmp_path):
    """A server that keeps answering 503: retried with back-off, but the request ends within --timeout."""
    with fake_server(lambda request: Reply(b'{"error": {"message": "overloaded"}}', status=503)) as server:
        elapsed = _seconds_until_it_fails_with_503(server.url, timeout=2)
    attempts = sum(path.endswith("/chat/completions") for path, _ in server.requests)
    assert elapsed < 2.5  # back-off 0.5 s, 1 s, 2 s, ... (+ jitter): no attempt starts past the bound
    assert 2 <= attempts <= 3


@pytest.mark.slow
def test_an_overloaded_server_cut_off_by_the_timeout_is_reported_as_overloaded():
    """A server that answers 503 slowly: the deadline cuts the second attempt short. The item fails
    with the server's answer, not with "did not answer" (it did answer; before the fix this
    depended on timing, and CI once saw it)."""
    def slow_503(request):
        time.sleep(0.8)
        return Reply(b'{"error": {"message": "overloaded"}}', status=503)

    with fake_server(slow_503) as server:
        elapsed = _seconds_until_it_fails_with_503(server.url, timeout=2)
    # attempt 1 answers at 0.8 s, the back-off (0.5-1 s) starts attempt 2 before 2 s, the deadline cuts it
    assert sum(path.endswith("/chat/completions") for path, _ in server.requests) == 2
    assert elapsed < 2.5


@pytest.mark.slow
@pytest.mark.parametrize("command", ["eval", "best-of-n"])
def test_help_states_the_bound_on_each_request(command):
    done = run_cli(command, "--help")
    assert done.returncode == 0
    text = one_line(done.stdout)
    assert "--timeout" in text and "[default: 300" in text
    assert "retries included (at most 6 attempts" in text


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_timeout_that_bounds_nothing_is_refused(tmp_path, value):
    with pytest.raises(UserError, match="--timeout must be a number of seconds above 0"):
        options("http://127.0.0.1:9/v1", tmp_path, tmp_path / "o", timeout=float(value))


# --- an answer that is not a chat completion fails its item, the run goes on ----------------------

GARBAGE = {
    "invalid JSON": (Reply(b'{"choices": [{"message": '), "not JSON"),
    "non-UTF-8 bytes": (Reply(b'{"choices": [{"message": {"content": "\xff\xfe\x80"}}]}'), "not JSON"),
    "an HTML page": (Reply(b"<html><body>Please log in</body></html>", content_type="text/html"), "not JSON"),
    "empty choices": (Reply(b'{"choices": []}'), "not a chat completion"),
    "a choice without a message": (Reply(b'{"choices": [{"index": 0}]}'), "not a chat completion"),
    "content that is not text": (Reply(b'{"choices": [{"message": {"content": {"a": 1}}}]}'), "not a chat completion"),
    "a JSON list": (Reply(b"[1, 2, 3]"), "not a chat completion"),
}


@pytest.mark.parametrize("kind", GARBAGE)
def test_an_answer_that_is_not_a_chat_completion_fails_that_item_only(tmp_path, kind):
    reply, reason = GARBAGE[kind]
    snapshot = write_mmrlhf(tmp_path / "in", [("Fine?", jpeg(1)), ("GARBAGE?", jpeg(2)), ("Fine?", jpeg(3))])
    with fake_server(lambda request: reply if "GARBAGE" in prompt_of(request) else judge_right(request)) as server:
        summary = run_eval(options(server.url, snapshot, tmp_path / "run"))
    assert summary["failed"] == 1
    assert (summary["first_failure"].startswith("g1#0: the server answered HTTP 200")
            and reason in summary["first_failure"])
    assert sorted(r["id"] for r in lines(tmp_path / "run" / "results.jsonl")) == ["g0#0", "g2#0"]
    assert summary["n"] == 2 and summary["accuracy"] == 1.0


@pytest.mark.slow
def test_an_html_page_for_a_chat_is_one_line_and_exit_1(tmp_path):
    reply, _ = GARBAGE["an HTML page"]
    snapshot = write_mmrlhf(tmp_path / "in", [("Fine?", jpeg(1)), ("GARBAGE?", jpeg(2))])
    with fake_server(lambda request: reply if "GARBAGE" in prompt_of(request) else judge_all_first(request)) as server:
        done = run_cli("eval", "--base-url", server.url, "--model", MODEL, "--benchmark", "mm-rlhf", "--input",
                       str(snapshot), "--out", str(tmp_path / "run"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 request failed") and "g1#0" in last and "Please log in" in last


@pytest.mark.parametrize("models, message", [
    (Reply(b"<html>proxy login</html>", content_type="text/html"), "not JSON"),
    (Reply(b'{"object": "list"}'), "not a model list"),
    (Reply(b'{"detail": "broken cache"}', status=500), "HTTP 500"),
])
@pytest.mark.slow
def test_a_models_endpoint_that_answers_garbage_is_one_line(tmp_path, models, message):
    snapshot = write_mmrlhf(tmp_path / "in", [("Q?", jpeg(1))])
    with fake_server(judge_all_first, models=models) as server:
        done = run_cli("eval", "--base-url", server.url, "--model", MODEL, "--benchmark", "mm-rlhf", "--input",
                       str(snapshot), "--out", str(tmp_path / "run"))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"error: the server at {server.url}") and message in done.stderr
    assert "check --base-url" in done.stderr


def test_a_lone_surrogate_in_an_answer_reaches_neither_the_next_request_nor_the_results_file(tmp_path):
    """JSON may escape a lone surrogate (\\ud800); UTF-8 cannot carry one."""
    snapshot = write_mmrlhf(tmp_path / "in", [("Q?", jpeg(1))])
    odd_text = b'{"choices": [{"message": {"content": "odd \\ud800 \\\\boxed{1}"}}]}'
    with fake_server(lambda request: Reply(odd_text)) as server:
        summary = run_eval(options(server.url, snapshot, tmp_path / "run"))
    [record] = lines(tmp_path / "run" / "results.jsonl")
    assert summary["failed"] == 0 and record["verdict"] == "1"
    assert record["completion"] == "odd \ufffd \\boxed{1}"


# --- --resume keeps every valid record and refuses to mix runs --------------------------------------


@pytest.mark.slow
def test_resume_keeps_every_valid_record_and_sets_bad_lines_aside(tmp_path):
    snapshot = write_mmrlhf(tmp_path / "in", [(f"Q{k}?", jpeg(k)) for k in range(5)])
    results = tmp_path / "run" / "results.jsonl"
    with fake_server(judge_all_first) as server:
        assert run_cli(*eval_args(server.url, snapshot, tmp_path / "run")).returncode == 0
        original = results.read_bytes().splitlines(keepends=True)
        garbled = original[1][:20] + b"\xff\x00garbled\n"
        not_a_record = b'{"id": "g9#0"}\n'
        cut_short = b'{"id": "g4#0", "lab'
        results.write_bytes(original[0] + garbled + original[2] + not_a_record + original[3] + cut_short)
        server.requests.clear()
        done = run_cli(*eval_args(server.url, snapshot, tmp_path / "run"), "--resume")
    assert done.returncode == 0, done.stderr
    lost = sorted(json.loads(original[k])["id"] for k in (1, 4))  # the lines garbled and cut short
    asked = sorted(re.search(r"Q(\d)\?", prompt_of(request))[1] for path, request in server.requests
                   if path.endswith("/chat/completions"))
    assert [f"g{k}#0" for k in asked] == lost  # only the items whose lines were lost are asked again
    kept = results.read_bytes().splitlines(keepends=True)
    assert kept[:3] == [original[0], original[2], original[3]]  # every valid record, untouched, in order
    assert sorted(r["id"] for r in lines(results)) == [f"g{k}#0" for k in range(5)]
    aside = tmp_path / "run" / "results.jsonl.bad-lines"
    assert aside.read_bytes() == garbled + not_a_record + cut_short  # nothing lost
    notes = [line for line in done.stderr.splitlines() if "bad-lines" in line]
    assert len(notes) == 1 and "3 unreadable lines" in notes[0] and "line 2" in notes[0]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["n"] == 5


def test_result_log_sets_aside_lines_its_caller_does_not_accept(tmp_path):
    path = tmp_path / "picks.jsonl"
    path.write_text('{"id": "a"}\n{"id": 3}\n{"id": "b"}\n')
    log = ResultLog(path, resume=True, identity={}, valid=lambda record: isinstance(record.get("id"), str))
    assert [r["id"] for r in log.records] == ["a", "b"] and log.set_aside["lines"] == 1
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'
    assert (tmp_path / "picks.jsonl.bad-lines").read_text() == '{"id": 3}\n'
    log.close()  # and its lock on the folder
    again = ResultLog(path, resume=True, identity={}, valid=lambda record: isinstance(record.get("id"), str))
    assert again.set_aside is None and len(again.records) == 2  # a clean file is left as it is


@pytest.mark.slow
def test_resume_with_other_options_is_refused_naming_each_difference(tmp_path):
    snapshot = write_mmrlhf(tmp_path / "in", [(f"Q{k}?", jpeg(k)) for k in range(3)])
    out = tmp_path / "run"
    with fake_server(judge_all_first) as server:
        assert run_cli(*eval_args(server.url, snapshot, out, "--limit", "2")).returncode == 0
        before = (out / "results.jsonl").read_bytes()
        mixed = run_cli(*eval_args(server.url, snapshot, out, "--resume", "--seed", "1", "--both-orders",
                                   "--max-tokens", "8"))
        assert mixed.returncode == 2 and len(mixed.stderr.strip().splitlines()) == 1, mixed.stderr
        for difference in ("--seed was 0, now 1", "--both-orders was false, now true", "--max-tokens was 2048, now 8"):
            assert difference in mixed.stderr
        assert "--benchmark" not in mixed.stderr and (out / "results.jsonl").read_bytes() == before
        # what does not change a result may change: how fast, how long to wait, how many items
        resumed = run_cli(*eval_args(server.url, snapshot, out, "--resume", "--concurrency", "2", "--timeout", "30"))
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(r["id"] for r in lines(out / "results.jsonl")) == ["g0#0", "g1#0", "g2#0"]


def test_resume_of_a_best_of_n_run_with_another_n_is_refused(tmp_path):
    from critic_data.rl.best_of_n import BestOfNOptions, run_best_of_n

    (tmp_path / "img.jpg").write_bytes(jpeg(1))
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"id": "q0", "image": "img.jpg", "question": "Q?"}) + "\n")
    with fake_server(judge_all_first) as server:
        def run(**changes):
            return run_best_of_n(BestOfNOptions(**{"base_url": server.url, "model": MODEL, "input": questions, "n": 2,
                                                   "out": tmp_path / "run", **changes}))

        run()
        with pytest.raises(UserError) as refused:
            run(n=3, strategy="round-robin", resume=True)
        assert ("--n was 2, now 3" in str(refused.value)
                and '--strategy was "knockout", now "round-robin"' in str(refused.value))
        assert run(resume=True, concurrency=1)["questions"] == 1


# --- a refusal is retried only when asking again can change the answer ----------------------------

@pytest.mark.parametrize("status", [400, 413, 422])
def test_a_4xx_refusal_fails_its_item_at_once_and_the_run_goes_on(tmp_path, status):
    """A 4xx other than 408 and 429 refuses the request itself (transformers serve 5.25 answers an
    image-token mismatch with 400; a body too large, a field the server does not know): asked again,
    the same request gets the same answer. The item fails on the first refusal; the others are judged."""
    snapshot = write_mmrlhf(tmp_path / "in", [("Fine?", jpeg(1)), ("REFUSED?", jpeg(2)), ("Fine?", jpeg(3))])
    refusal = Reply(b'{"error": {"message": "not this request"}}', status=status)
    with fake_server(lambda request: refusal if "REFUSED" in prompt_of(request) else judge_right(request)) as server:
        summary = run_eval(options(server.url, snapshot, tmp_path / "run"))
    refused = [body for path, body in server.requests if body is not None and "REFUSED" in prompt_of(body)]
    assert len(refused) == 1  # not retried
    assert summary["failed"] == 1 and summary["first_failure"] == f"g1#0: HTTP {status}: not this request"
    assert sorted(r["id"] for r in lines(tmp_path / "run" / "results.jsonl")) == ["g0#0", "g2#0"]


@pytest.mark.slow
def test_a_408_is_asked_again_like_a_429(tmp_path):
    """408 Request Timeout says "not now" (a proxy in front of the server gave up waiting), as 429
    does: asked again, the request is answered. Before: the item failed on the first 408."""
    snapshot = write_mmrlhf(tmp_path / "in", [("Fine?", jpeg(1))])
    answers = iter([Reply(b'{"error": {"message": "request timeout"}}', status=408)])
    with fake_server(lambda request: next(answers, None) or judge_right(request)) as server:
        summary = run_eval(options(server.url, snapshot, tmp_path / "run"))
    assert sum(body is not None for _, body in server.requests) == 2
    assert summary["failed"] == 0 and summary["n"] == 1 and summary["accuracy"] == 1.0


# --- answers the server sent, but that cannot be read --------------------------------------------------

@pytest.mark.slow
def test_a_body_that_cannot_be_decompressed_fails_that_item_not_the_run(tmp_path):
    """Before: a 200 whose Content-Encoding lies (gzip over plain bytes) read as "cannot reach the
    server ... start it" and stopped the whole run, though the server was up and other items fine."""
    lying = Reply(b'{"choices": []}', headers={"Content-Encoding": "gzip"})
    snapshot = write_mmrlhf(tmp_path / "in", [("Fine?", jpeg(1)), ("GARBAGE?", jpeg(2)), ("Fine?", jpeg(3))])
    with fake_server(lambda request: lying if "GARBAGE" in prompt_of(request) else judge_all_first(request)) as server:
        done = run_cli(*eval_args(server.url, snapshot, tmp_path / "run", "--timeout", "3"))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 request failed") and "g1#0: the server answered with a body that cannot be" in last
    assert sorted(r["id"] for r in lines(tmp_path / "run" / "results.jsonl")) == ["g0#0", "g2#0"]


@pytest.mark.slow
def test_a_server_that_redirects_for_ever_is_named_as_such(tmp_path):
    """Before: "cannot reach the OpenAI-compatible server ... start it", for a server that answers."""
    loop = Reply(status=307, headers={"Location": "/v1/chat/completions"})
    snapshot = write_mmrlhf(tmp_path / "in", [("Q?", jpeg(1))])
    with fake_server(lambda request: loop) as server:
        line = refused_in_one_line(run_cli(*eval_args(server.url, snapshot, tmp_path / "run", "--timeout", "3")))
    assert "redirects" in line and "check --base-url" in line and "start it" not in line


@pytest.mark.slow
def test_a_retry_after_header_is_not_waited_out(tmp_path):
    """A 429 asking for a day's pause: the request still ends within --timeout (tenacity's waits
    alone; the openai client's retries, which honour Retry-After, stay off)."""
    busy = Reply(b'{"error": {"message": "slow down"}}', status=429, headers={"Retry-After": "99999"})
    questions = write_question_file(tmp_path / "in", [question(0)])
    with fake_server(lambda request: busy) as server:
        started = time.monotonic()
        done = run_cli("best-of-n", "--base-url", server.url, "--model", MODEL, "--input", str(questions),
                       "--n", "2", "--out", str(tmp_path / "run"), "--timeout", "3", timeout=60)
        elapsed = time.monotonic() - started
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "error: every question failed (1); first: q0: HTTP 429: slow down"
    assert elapsed < 15


@pytest.mark.slow
@pytest.mark.parametrize("make", ["fifo", "folder"])
def test_questions_that_are_not_a_regular_file_are_named_as_such(tmp_path, make):
    """Before: `--input <(jq ...)` (a pipe) or a folder read as "no such file"."""
    path = tmp_path / "questions.jsonl"
    os.mkfifo(path) if make == "fifo" else path.mkdir()
    done = run_cli("best-of-n", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--input", str(path),
                   "--n", "2", "--out", str(tmp_path / "run"), timeout=30)
    assert "is not a regular file; save the questions to a questions.jsonl" in refused_in_one_line(done)


@pytest.mark.parametrize("damage, says", [
    (lambda path: path.write_bytes(path.read_text().encode("utf-16")), "rows skipped: "),
    (lambda path: path.write_bytes(b"\n\n"), "no rows"),
], ids=["every row unreadable (UTF-16)", "no rows"])
@pytest.mark.slow
def test_a_benchmark_with_nothing_to_judge_is_one_line_not_an_empty_success(tmp_path, damage, says):
    """Before: exit 0 with a table of dashes and "results in results.jsonl", a file never written."""
    snapshot = write_mmrlhf(tmp_path / "in", [("Q?", jpeg(1)), ("Q2?", jpeg(2))])
    damage(snapshot / "mm_reward_bench.jsonl")
    with fake_server(judge_all_first) as server:
        line = refused_in_one_line(run_cli(*eval_args(server.url, snapshot, tmp_path / "run")))
    assert "has no item to judge" in line and says in line and "check --input" in line
    assert not (tmp_path / "run" / "summary.json").exists()


# --- an --out that cannot hold a run is refused before any request ---------------------------------

def _a_file(out):
    out.write_text("my notes")


def _under_a_file(out):
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / "notes").write_text("my notes")
    return out.parent / "notes" / "run"


def _a_dangling_link(out):
    out.symlink_to(out.parent / "nowhere")


def _folders_named_like_run_files(out):
    for name in ("results.jsonl", "run.json", "summary.json"):
        (out / name).mkdir(parents=True)


@pytest.mark.parametrize("make, says", [
    (_a_file, "is a file"),
    (_under_a_file, "is a file"),
    (_a_dangling_link, "is a link to"),
    (_folders_named_like_run_files, "is not a file"),
])
@pytest.mark.slow
@pytest.mark.parametrize("resume", [False, True])
def test_an_out_that_cannot_hold_a_run_is_one_line_before_any_request(tmp_path, make, says, resume):
    snapshot = write_mmrlhf(tmp_path / "in", [("Q?", jpeg(1))])
    out = make(tmp_path / "run") or tmp_path / "run"
    with fake_server(judge_all_first) as server:
        done = run_cli(*eval_args(server.url, snapshot, out, *(["--resume"] if resume else [])))
    line = refused_in_one_line(done)
    assert says in line and "--out" in line
    assert chats(server) == 0  # before the fix: every request was sent, then the first write failed
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.slow
def test_a_new_run_into_the_folder_of_another_run_is_refused_and_keeps_it(tmp_path):
    """An eval run, then a best-of-n run into the same --out: before the fix the second overwrote the
    first's run.json and summary.json (and the eval could then no longer be resumed)."""
    snapshot = write_mmrlhf(tmp_path / "in", [("Q?", jpeg(1))])
    (tmp_path / "img.jpg").write_bytes(jpeg(2))
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"id": "q0", "image": "img.jpg", "question": "Q?"}) + "\n")
    out = tmp_path / "run"
    with fake_server(judge_all_first) as server:
        assert run_cli(*eval_args(server.url, snapshot, out)).returncode == 0
        before = {name: (out / name).read_bytes() for name in ("results.jsonl", "run.json", "summary.json")}
        server.requests.clear()
        done = run_cli("best-of-n", "--base-url", server.url, "--model", MODEL, "--input", str(questions),
                       "--n", "2", "--out", str(out))
        line = refused_in_one_line(done)
        assert "holds another run" in line and "choose another --out" in line
        assert chats(server) == 0
        assert {name: (out / name).read_bytes() for name in before} == before
        assert not (out / "picks.jsonl").exists()
        resumed = run_cli(*eval_args(server.url, snapshot, out, "--resume"))  # the eval is still resumable
    assert resumed.returncode == 0, resumed.stderr


# --- two runs into one folder at once --------------------------------------------------------------

def test_two_runs_into_one_out_at_once_cannot_mix(tmp_path):
    path = tmp_path / "run" / "results.jsonl"
    first = ResultLog(path, resume=False, identity={"seed": 0}, valid=lambda record: True)
    second = ResultLog(path, resume=False, identity={"seed": 1}, valid=lambda record: True)  # both saw no file
    first.append({"id": "a"})
    with pytest.raises(UserError, match="another run is writing to .*; wait for it to end, or choose another --out"):
        second.append({"id": "b"})
    with pytest.raises(UserError, match="another run is writing to"):
        ResultLog(path, resume=True, identity={"seed": 0}, valid=lambda record: True)
    first.append({"id": "c"})
    first.close()
    assert path.read_text() == '{"id": "a"}\n{"id": "c"}\n'
    assert json.loads(path.with_name("run.json").read_text()) == {"seed": 0}
    resumed = ResultLog(path, resume=True, identity={"seed": 0}, valid=lambda record: True)  # the lock went with it
    assert [r["id"] for r in resumed.records] == ["a", "c"]
    resumed.close()


# --- eval: a disk that fills, a server that drops the connection mid-answer --------------------------------

def _file_size_limit(limit: int):
    """In the child: files may not grow past `limit` bytes (writes fail with EFBIG, as on a full disk)."""
    def apply():
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow
def test_a_disk_that_fills_while_results_are_written_is_one_line_and_resume_finishes(tmp_path):
    """Before the fix: an OSError traceback from the result log (and another from closing it)."""
    import os
    import sys

    snapshot = write_mmrlhf(tmp_path / "in", [(f"Q{k}?", jpeg(k)) for k in range(8)])
    with fake_server(judge_all_first) as server:
        whole = run_cli(*eval_args(server.url, snapshot, tmp_path / "whole"))
        assert whole.returncode == 0, whole.stderr
        size = (tmp_path / "whole" / "results.jsonl").stat().st_size
        assert (tmp_path / "whole" / "run.json").stat().st_size < size // 2
        out = tmp_path / "run"
        env = {**os.environ, "OPENAI_API_KEY": SECRET_KEY, "COLUMNS": "200"}
        full = subprocess.run([sys.executable, "-m", "critic_data.cli", *eval_args(server.url, snapshot, out)],
                              capture_output=True, text=True, env=env, timeout=300,
                              preexec_fn=_file_size_limit(size // 2))
        line = refused_in_one_line(full)
        assert f"cannot write {out / 'results.jsonl'} (File too large)" in line and "rerun with --resume" in line
        kept = (out / "results.jsonl").read_bytes()
        assert 0 < len(kept) <= size // 2
        resumed = run_cli(*eval_args(server.url, snapshot, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(json.loads(line)["id"] for line in
                                                      (tmp_path / "whole" / "results.jsonl").read_text().splitlines())
    assert (out / "results.jsonl").read_bytes().startswith(kept[:kept.rfind(b"\n") + 1])  # what finished stayed


@pytest.mark.slow
def test_a_server_that_drops_the_connection_mid_answer_is_named_as_such(tmp_path):
    """Before the fix: "cannot reach the server ... start it", about a server that had just answered."""
    snapshot = write_mmrlhf(tmp_path / "in", [("Q?", jpeg(1))])

    def cut(request):
        return Reply(completion("<think>ok</think> \\boxed{1}").body, behaviour="cut")

    with fake_server(cut) as server:
        done = run_cli(*eval_args(server.url, snapshot, tmp_path / "run", "--timeout", "3"))
    line = refused_in_one_line(done)
    assert "closed the connection before its answer was complete" in line and "rerun with --resume" in line
    assert "cannot reach" not in line
