"""Runs of `critic-data eval` and `best-of-n` against the scripted stand-in server of tests/serve.py
(fast: no model runs): the snapshots and question files they read, the scripted judges, and what a
run wrote."""

from __future__ import annotations

import json
import struct
import zlib

from critic_data.rl.evaluate import EvalOptions
from tests.cli import SECRET_KEY, one_line_error
from tests.serve import Reply, completion, prompt_of
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


def eval_args(url, snapshot, out, *extra):
    return ("eval", "--base-url", url, "--model", MODEL, "--benchmark", "mm-rlhf", "--input", str(snapshot),
            "--out", str(out), *extra)


def write_question_file(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "img.jpg").write_bytes(jpeg(1))
    path = folder / "questions.jsonl"
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def question(k, **changes):
    return {"id": f"q{k}", "image": "img.jpg", "question": f"Q{k}?", **changes}


def chats(server) -> int:
    return sum(path.endswith("/chat/completions") for path, _ in server.requests)


def refused_in_one_line(done) -> str:
    """The one error line of a refused run (exit 2, no traceback), which never shows the API key."""
    line = one_line_error(done)
    assert line.startswith("error: ") and SECRET_KEY not in done.stdout + done.stderr, done.stderr
    return line


def png_bomb(width: int, height: int) -> bytes:
    """A few hundred bytes that declare width x height pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
            + chunk(b"IEND", b""))
