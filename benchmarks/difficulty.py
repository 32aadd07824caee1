"""Judgements per second of `critic-data difficulty`'s client against a server that costs nothing.

    python benchmarks/difficulty.py --rows 2000 --workdir /tmp/difficulty-bench [--samples 8] [--concurrency 32]

A VLFeedback-shaped snapshot (make_snapshot.py: 400-800 px JPEGs, realistic text) is built with
`critic-data build` once, then measured by `run_difficulty` against the scripted judge of
tests/judge_server.py, served from its own process (so that its JSON parsing does not share the
client's interpreter) and answering every request at once with `n` completions. What is left is the
client: fitting each image to the recipe's pixel bounds (decode, resize, PNG encode), the request,
grading every completion with the recipe's rewards, and appending each row. Printed: rows,
judgements (rows x samples) per second, the client process's CPU milliseconds per row, and how
much of that is fitting the images (`data_url`) and grading (`grade`), timed on their own over the
first rows. The client is bound by its CPU: judgements per second on an idle core is about
1000 x samples / cpu_ms_per_row. Figures, not asserts: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from make_snapshot import write_snapshot  # noqa: E402

from critic_data.builders.options import BuildOptions  # noqa: E402
from critic_data.builders.pipeline import build  # noqa: E402
from critic_data.rl import difficulty  # noqa: E402
from critic_data.rl.options import DifficultyOptions  # noqa: E402
from tests.judge_server import dataset_plan  # noqa: E402


def dataset(workdir: Path, rows: int) -> Path:
    """A built dataset of about `rows` train rows, made once per size."""
    out = workdir / f"dataset-{rows}"
    if not (out / "build.json").is_file():
        write_snapshot(workdir / f"snapshot-{rows}", rows)
        build(BuildOptions(out=out, sources=("vlfeedback",), inputs={"vlfeedback": workdir / f"snapshot-{rows}"},
                           test_size=0.0))
    return out


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(folder: Path, out: Path, url: str, samples: int, concurrency: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    options = DifficultyOptions(dataset=str(folder), base_url=url, model="fake-model", out=out, samples=samples,
                                concurrency=concurrency)
    cpu, started = cpu_seconds(), time.perf_counter()
    summary = difficulty.run_difficulty(options)
    wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    return {"rows": summary["rows"], "failed": summary["failed"], "seconds": round(wall, 1),
            "judgements_per_second": round(summary["rows"] * samples / wall), "cpu_ms_per_row":
            round(1000 * cpu / summary["rows"], 1)}


def cpu_split(folder: Path, rows: int = 50) -> dict:
    """CPU milliseconds per row of the two costs that dominate, over the first `rows` rows: fitting the
    images to the recipe's bounds (decode, resize, PNG encode) and grading K scripted completions."""
    from collections import Counter

    from critic_data.rl.client import data_url
    from critic_data.rl.rewards import reward_function
    from critic_data.schemas.prompts import render_critic_prompt
    from tests.judge_server import ScriptedJudge

    options = DifficultyOptions(dataset=str(folder), base_url="-", model="-", out=folder / "unused", limit=rows)
    judge, rewards = ScriptedJudge(dataset_plan(folder)[0]), {n: reward_function(n) for n, _ in options.rewards}
    spent = {"data_url": 0.0, "grade": 0.0}
    items = list(difficulty._items(options, Counter())[1])
    for item in items:
        started = time.thread_time()
        [data_url(image, options.pixels) for image in item.images]
        spent["data_url"] += time.thread_time() - started
        text = render_critic_prompt(item.template, item.question, *item.responses)
        texts = [judge._sample(text) for _ in range(options.samples)]
        started = time.thread_time()
        difficulty.grade(item, texts, rewards)
        spent["grade"] += time.thread_time() - started
    return {f"{name}_cpu_ms_per_row": round(1000 * seconds / len(items), 1) for name, seconds in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/difficulty-bench"))
    args = parser.parse_args()
    folder = dataset(args.workdir, args.rows)
    plan, _ = dataset_plan(folder)
    plan_file = args.workdir / "plan.json"
    plan_file.write_text(json.dumps(plan))
    server = subprocess.Popen([sys.executable, "-m", "tests.judge_server", str(plan_file)], cwd=HERE.parent,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        print(json.dumps({**measure(folder, args.workdir / "run", url, args.samples, args.concurrency),
                          **cpu_split(folder)}))
    finally:
        server.stdin.close()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
