"""`critic-data eval` and `best-of-n` against hostile servers and damaged inputs, on the scripted
stand-in server of tests/serve.py (fast: no model runs). The promises: every request is bounded
in time, a bad answer or a bad item fails that item and the run goes on, a bad row is skipped
with a reason, and `--resume` neither loses records nor mixes runs.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import struct
import time
import zlib
from collections import Counter

import openai  # noqa: F401 - imported now: the timed requests below must not pay for its import
import pytest
from PIL import Image

from critic_data import UserError
from critic_data.rl.client import ChatClient, RequestFailed, ResultLog
from critic_data.rl.evaluate import EvalOptions, run_eval
from tests.serve import Reply, completion, fake_server, prompt_of, run_cli
from tests.snapshots import jpeg

MODEL = "fake-model"


def judge_all_first(request: dict) -> Reply:
    return completion("<think>ok</think> \\boxed{1}")


def judge_right(request: dict) -> Reply:
    """Names the position of the chosen response: every verdict is correct."""
    text = prompt_of(request)
    return completion("\\boxed{1}" if text.index("CHOSEN") < text.index("REJECTED") else "\\boxed{2}")


def write_mmrlhf(folder, rows):
    """An MM-RLHF-RewardBench snapshot; each row is (prompt, image bytes); ids g0, g1, ..."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for k, (prompt, image) in enumerate(rows):
        (folder / "images" / f"{k}.img").write_bytes(image)
        lines.append(json.dumps({"id": f"g{k}", "image": f"images/{k}.img", "prompt": prompt,
                                 "chosen": f"CHOSEN-{k}.", "rejected": f"REJECTED-{k}."}) + "\n")
    (folder / "mm_reward_bench.jsonl").write_text("".join(lines))
    return folder


def options(url, folder, out, **extra):
    return EvalOptions(base_url=url, model=MODEL, benchmark="mm-rlhf", input=str(folder), out=out, **extra)


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def one_line(text: str) -> str:
    """The help screen as one line: rich's box and wrapping removed."""
    return " ".join(text.replace("│", " ").split())


# --- every request is bounded in time -----------------------------------------------------------

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


def test_retries_stop_at_the_timeout(tmp_path):
    """A server that keeps answering 503: retried with back-off, but the request ends within --timeout."""
    with fake_server(lambda request: Reply(b'{"error": {"message": "overloaded"}}', status=503)) as server:
        elapsed = _seconds_until_it_fails_with_503(server.url, timeout=2)
    attempts = sum(path.endswith("/chat/completions") for path, _ in server.requests)
    assert elapsed < 2.5  # back-off 0.5 s, 1 s, 2 s, ... (+ jitter): no attempt starts past the bound
    assert 2 <= attempts <= 3


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


# --- an item whose image cannot be read fails, not the run ---------------------------------------

def encoded(kind: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 10, 10)).save(buffer, kind)
    return buffer.getvalue()


def damaged_tail(data: bytes) -> bytes:
    """The header intact, the last bytes of the coded picture flipped."""
    return data[:-10] + bytes(b ^ 0x5A for b in data[-10:])


def png_bomb(width: int, height: int) -> bytes:
    """A few hundred bytes that declare width x height pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
            + chunk(b"IEND", b""))


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


# --- --resume keeps every valid record and refuses to mix runs --------------------------------------

def eval_args(url, snapshot, out, *extra):
    return ("eval", "--base-url", url, "--model", MODEL, "--benchmark", "mm-rlhf", "--input", str(snapshot),
            "--out", str(out), *extra)


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


def test_a_408_is_asked_again_like_a_429(tmp_path):
    """408 Request Timeout says "not now" (a proxy in front of the server gave up waiting), as 429
    does: asked again, the request is answered. Before: the item failed on the first 408."""
    snapshot = write_mmrlhf(tmp_path / "in", [("Fine?", jpeg(1))])
    answers = iter([Reply(b'{"error": {"message": "request timeout"}}', status=408)])
    with fake_server(lambda request: next(answers, None) or judge_right(request)) as server:
        summary = run_eval(options(server.url, snapshot, tmp_path / "run"))
    assert sum(body is not None for _, body in server.requests) == 2
    assert summary["failed"] == 0 and summary["n"] == 1 and summary["accuracy"] == 1.0
