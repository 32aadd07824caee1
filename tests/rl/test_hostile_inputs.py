"""`critic-data eval` and `best-of-n` against hostile inputs and hostile server answers the other
suites do not cover, on the scripted stand-in server of tests/serve.py (fast: no model runs).
The bar: one line saying what is wrong and what to do, a non-zero exit, no traceback, never a
hang, and never a row dropped or counted twice without saying so.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from critic_data import UserError
from critic_data.rl.best_of_n import read_questions
from critic_data.rl.evaluate import EvalOptions, run_eval
from tests.rl.test_client_hardening import MODEL, eval_args, judge_all_first, lines, write_mmrlhf
from tests.rl.test_hostile_runs import refused_in_one_line
from tests.serve import Reply, completion, fake_server, prompt_of, run_cli
from tests.snapshots import jpeg


def write_questions(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "img.jpg").write_bytes(jpeg(1))
    path = folder / "questions.jsonl"
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def question(k, **changes):
    return {"id": f"q{k}", "image": "img.jpg", "question": f"Q{k}?", **changes}


# --- best-of-n: a server that answers a judgement with several choices --------------------------------

def two_choices_for_everything(request):
    """Asked for n, or for one: always more choices than asked (a server with its own default n)."""
    return completion(*["\\boxed{1}"] * (request.get("n", 1) + 1))


def test_a_judgement_answered_with_several_choices_reads_the_first(tmp_path):
    """Before: `[completion] = ...` raised ValueError, a traceback that ended the run."""
    questions = write_questions(tmp_path / "in", [question(0), question(1)])
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
    questions = write_questions(tmp_path / "in", [row])
    with pytest.raises(UserError, match=message):
        read_questions(questions)


def test_numbers_and_null_answers_still_read(tmp_path):
    questions = write_questions(tmp_path / "in",
                                [question(0, answer=3), question(1, answer=2.5), question(2, answer=None),
                                 question(3, id=7)])
    assert [(q.id, q.answer) for q in read_questions(questions)] == [("q0", "3"), ("q1", "2.5"), ("q2", None),
                                                                     ("7", None)]


# --- eval: benchmark snapshots with odd shards and rows --------------------------------------------

def vlrb_row(k, **changes):
    return {"id": f"wildvision_{k}", "query": f"Q{k}?", "response": ["a", "b"], "human_ranking": [0, 1],
            "image": {"bytes": jpeg(k), "path": f"{k}.jpg"}, "query_source": "WildVision", **changes}


def vlrb_snapshot(folder, shards):
    (folder / "data").mkdir(parents=True)
    for name, rows in shards.items():
        pq.write_table(pa.Table.from_pylist(rows), folder / "data" / name)
    return folder


def vlrb_args(url, snapshot, out, *extra):
    return ("eval", "--base-url", url, "--model", MODEL, "--benchmark", "vl-rewardbench", "--input", str(snapshot),
            "--out", str(out), *extra)


def test_a_shard_that_is_a_fifo_is_one_line_never_a_hang(tmp_path):
    """Before: pyarrow opened the FIFO and waited for a writer, for ever."""
    snapshot = vlrb_snapshot(tmp_path / "in", {"test-00000-of-00002.parquet": [vlrb_row(0)]})
    os.mkfifo(snapshot / "data" / "test-00001-of-00002.parquet")
    with fake_server(judge_all_first) as server:
        try:
            done = run_cli(*vlrb_args(server.url, snapshot, tmp_path / "run"), timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("eval hung on a FIFO shard")
    line = refused_in_one_line(done)
    assert "test-00001-of-00002.parquet is not a regular file" in line and "download the benchmark again" in line


def test_a_split_that_looks_like_a_glob_is_read_as_named(tmp_path):
    """Before: --split 't*' read the test and the train shards together, and said nothing."""
    snapshot = vlrb_snapshot(tmp_path / "in", {"test-00000-of-00001.parquet": [vlrb_row(0)],
                                               "train-00000-of-00001.parquet": [vlrb_row(1), vlrb_row(2)]})
    with fake_server(judge_all_first) as server:
        done = run_cli(*vlrb_args(server.url, snapshot, tmp_path / "run", "--split", "t*"))
        assert "holds no data/t*-*.parquet" in refused_in_one_line(done)
        assert not any(path.endswith("/chat/completions") for path, _ in server.requests)


def test_rows_that_repeat_an_id_are_skipped_and_counted(tmp_path):
    """Before: a repeated id was judged twice and scored as one item judged in both orders (a
    position consistency on a single-order run), and a --resume dropped the second row unsaid."""
    rows = [vlrb_row(0), vlrb_row(0, response=["c", "d"]), vlrb_row(1)]
    snapshot = vlrb_snapshot(tmp_path / "in", {"test-00000-of-00001.parquet": rows})
    with fake_server(judge_all_first) as server:
        summary = run_eval(EvalOptions(base_url=server.url, model=MODEL, benchmark="vl-rewardbench",
                                       input=str(snapshot), out=tmp_path / "run"))
    assert summary["skipped"] == {"duplicate_id": 1}
    assert summary["n"] == summary["items"] == 2 and "position_consistency" not in summary
    assert sorted(r["id"] for r in lines(tmp_path / "run" / "results.jsonl")) == ["wildvision_0", "wildvision_1"]


def test_responses_that_are_not_a_list_are_skipped(tmp_path):
    """Before: a response column holding the string "ab" was judged as the two answers "a" and "b"."""
    snapshot = vlrb_snapshot(tmp_path / "in", {"test-00000-of-00002.parquet": [vlrb_row(0, response="ab")],
                                               "test-00001-of-00002.parquet": [vlrb_row(1)]})
    with fake_server(judge_all_first) as server:
        summary = run_eval(EvalOptions(base_url=server.url, model=MODEL, benchmark="vl-rewardbench",
                                       input=str(snapshot), out=tmp_path / "run"))
    assert summary["skipped"] == {"responses_malformed": 1} and summary["n"] == 1
    assert [r["id"] for r in lines(tmp_path / "run" / "results.jsonl")] == ["wildvision_1"]


# --- answers the server sent, but that cannot be read --------------------------------------------------

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


def test_a_server_that_redirects_for_ever_is_named_as_such(tmp_path):
    """Before: "cannot reach the OpenAI-compatible server ... start it", for a server that answers."""
    loop = Reply(status=307, headers={"Location": "/v1/chat/completions"})
    snapshot = write_mmrlhf(tmp_path / "in", [("Q?", jpeg(1))])
    with fake_server(lambda request: loop) as server:
        line = refused_in_one_line(run_cli(*eval_args(server.url, snapshot, tmp_path / "run", "--timeout", "3")))
    assert "redirects" in line and "check --base-url" in line and "start it" not in line


def test_a_retry_after_header_is_not_waited_out(tmp_path):
    """A 429 asking for a day's pause: the request still ends within --timeout (tenacity's waits
    alone; the openai client's retries, which honour Retry-After, stay off)."""
    busy = Reply(b'{"error": {"message": "slow down"}}', status=429, headers={"Retry-After": "99999"})
    questions = write_questions(tmp_path / "in", [question(0)])
    with fake_server(lambda request: busy) as server:
        started = time.monotonic()
        done = run_cli("best-of-n", "--base-url", server.url, "--model", MODEL, "--input", str(questions),
                       "--n", "2", "--out", str(tmp_path / "run"), "--timeout", "3", timeout=60)
        elapsed = time.monotonic() - started
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "error: every question failed (1); first: q0: HTTP 429: slow down"
    assert elapsed < 15


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
def test_a_benchmark_with_nothing_to_judge_is_one_line_not_an_empty_success(tmp_path, damage, says):
    """Before: exit 0 with a table of dashes and "results in results.jsonl", a file never written."""
    snapshot = write_mmrlhf(tmp_path / "in", [("Q?", jpeg(1)), ("Q2?", jpeg(2))])
    damage(snapshot / "mm_reward_bench.jsonl")
    with fake_server(judge_all_first) as server:
        line = refused_in_one_line(run_cli(*eval_args(server.url, snapshot, tmp_path / "run")))
    assert "has no item to judge" in line and says in line and "check --input" in line
    assert not (tmp_path / "run" / "summary.json").exists()
