"""A scripted judge: an OpenAI-compatible server whose pass rate on each row is known in advance.

`ScriptedJudge(plan)` answers chat requests for `tests.serve.fake_server` (real HTTP on 127.0.0.1).
The plan maps a row's prompt text, as the build wrote it in the row's `prompt` column, to its label
and a mode: a request whose text is in no plan is refused (HTTP 400), so a client that shows the
model anything but the row's own prompt fails the row. Modes, per sample, in the order the judge
writes them for that prompt (a count kept per prompt, across requests):
- "always": `<think>...</think> \\boxed{LABEL}`: pass and format paid;
- "half": right on the 1st, 3rd, ... sample, the other label on the 2nd, 4th, ... (format paid):
  an even K gives exactly K/2 passes, in one request or in K;
- "never": `\\boxed{OTHER}` without a think part: neither paid;
- "refuse": HTTP 400 for that row.
`n` is honoured (that many choices) unless `honour_n=False`, which answers one choice, as
`transformers serve` does.

`python -m tests.judge_server PLAN.json` serves a plan from a file on a free port and prints its URL
(benchmarks/difficulty.py runs it in its own process, so the server does not share the client's).
"""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from tests.serve import Reply, completion, fake_server, prompt_of

MODES = ("always", "half", "never")


def other(label: str) -> str:
    return "2" if label == "1" else "1"


class ScriptedJudge:
    """The `chat` of a fake_server: answers by the plan (prompt text -> (label, mode))."""

    def __init__(self, plan: dict[str, tuple[str, str]], honour_n: bool = True):
        self.plan, self.honour_n = plan, honour_n
        self.written: Counter = Counter()  # samples written per prompt
        self._lock = threading.Lock()

    def _sample(self, text: str) -> str:
        label, mode = self.plan[text]
        with self._lock:
            k = self.written[text]
            self.written[text] += 1
        if mode == "always" or (mode == "half" and k % 2 == 0):
            return f"<think>Response {label} matches the image.</think> The better one: \\boxed{{{label}}}"
        if mode == "half":
            return f"<think>Response {other(label)} looks better.</think> \\boxed{{{other(label)}}}"
        return f"I pick \\boxed{{{other(label)}}}"

    def __call__(self, request: dict) -> Reply:
        text = prompt_of(request)
        if text not in self.plan or self.plan[text][1] == "refuse":
            return Reply(json.dumps({"error": {"message": "not a row of the plan"}}).encode(), status=400)
        n = request.get("n", 1) if self.honour_n else 1
        return completion(*(self._sample(text) for _ in range(n)))


def dataset_plan(dataset: Path, split: str = "train", modes=MODES) -> tuple[dict, dict[str, float]]:
    """A plan for every row of a built dataset's split, the i-th row in modes[i % len(modes)], and each
    row's pass rate under it ({id: 1.0, 0.5 or 0.0})."""
    table = pq.read_table(sorted((dataset / "data").glob(f"{split}-*.parquet")), columns=["id", "prompt", "answer"])
    plan, rates = {}, {}
    for i, row in enumerate(table.to_pylist()):
        text = row["prompt"][0]["content"][-1]["text"]  # the user turn's text part, after its image parts
        mode = modes[i % len(modes)]
        plan[text] = (row["answer"], mode)
        rates[row["id"]] = {"always": 1.0, "half": 0.5, "never": 0.0}.get(mode)
    return plan, rates


def main() -> None:
    judge = ScriptedJudge({text: tuple(entry) for text, entry in json.loads(Path(sys.argv[1]).read_text()).items()})

    def answer(request: dict) -> Reply:
        server.requests.clear()  # fake_server keeps every request for the tests; a benchmark's would fill memory
        return judge(request)

    with fake_server(answer) as server:
        print(server.url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin


if __name__ == "__main__":
    main()
