"""Build throughput and memory, side by side with the I/O floor and a plain `datasets.map` pipeline.

    python benchmarks/run.py --rows 40000 160000 --workdir /tmp/critic-bench [--repeats 3]

For each size, a VLFeedback-shaped parquet snapshot is generated once (make_snapshot.py),
then three stages run on it, each in its own process, `--repeats` times interleaved (floor,
datasets, build, floor, datasets, build, ...):
  floor     read every input shard and write it back with pyarrow, nothing else
  datasets  load_dataset("parquet") + datasets.map doing the same max-gap pairing, no
            image validation, written back with to_parquet (num_proc = --num-proc)
  build     `critic-data build` (the CLI, in the stage's process) with N workers; it checks
            and hashes every image, and writes the card with its charts
Each stage's best run is printed (single runs swing up to 2x on this shared machine): its
least wall time (every run's is listed too), least CPU time (user + system, of the stage's
whole process tree), and highest peak RSS (summed over the process tree, sampled every 20 ms),
with the ratios the targets are stated in; the build's fastest run is split into
its rows (build.json's own clock) and the rest (start-up, the card, exit); and given two sizes,
each stage's fixed cost and cost per row (a line through the two). Figures, not asserts: this
machine is shared and noisy, so compare ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import psutil

HERE = Path(__file__).resolve().parent
ASPECTS = ("Helpfulness", "Ethical Considerations", "Visual Faithfulness")


def floor(snapshot: Path, out: Path, _num_proc: int) -> None:
    import pyarrow.parquet as pq

    out.mkdir(parents=True)
    for path in sorted((snapshot / "data").glob("*.parquet")):
        shard = pq.ParquetFile(path)
        with pq.ParquetWriter(out / path.name, shard.schema_arrow) as writer:
            for batch in shard.iter_batches(batch_size=100):
                writer.write_batch(batch)


def _pair(batch: dict) -> dict:
    """The max-gap pairing of critic-data's VLFeedback builder, without validation or cleaning."""
    out = {"question": [], "response_1": [], "response_2": [], "answer": [], "images": []}
    for prompt, completions, image in zip(batch["prompt"], batch["completions"], batch["image"]):
        scored = []
        for ratings, response in zip(completions["annotations"], completions["response"]):
            try:
                scored.append((sum(float(ratings[a]["Rating"]) for a in ASPECTS) / 3, response))
            except (TypeError, ValueError):
                continue
        best = None
        for i in range(len(scored)):
            for j in range(i + 1, len(scored)):
                gap = abs(scored[i][0] - scored[j][0])
                if gap > 0.6 and (best is None or gap > best[0]):
                    best = (gap, scored[i], scored[j])
        if best:
            (_, (sa, ra), (sb, rb)) = best
            better, worse = (ra, rb) if sa > sb else (rb, ra)
            out["question"].append(prompt)
            out["response_1"].append(better)
            out["response_2"].append(worse)
            out["answer"].append("1")
            out["images"].append([image])
    return out


def datasets_map(snapshot: Path, out: Path, num_proc: int) -> None:
    import datasets

    datasets.disable_progress_bars()
    files = sorted(str(p) for p in (snapshot / "data").glob("*.parquet"))
    dataset = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(out / "cache"))
    dataset = dataset.cast_column("image", datasets.Image(decode=False))
    paired = dataset.map(_pair, batched=True, batch_size=100, remove_columns=dataset.column_names,
                         num_proc=num_proc if num_proc > 1 else None)
    paired.to_parquet(str(out / "train.parquet"))


def build(snapshot: Path, out: Path, num_proc: int) -> None:
    """`critic-data build --source vlfeedback --input SNAPSHOT --out OUT --num-proc N`: the CLI
    itself, its imports, progress bar and exit included."""
    from critic_data.cli import main as cli

    sys.argv = ["critic-data", "build", "--source", "vlfeedback", "--input", str(snapshot), "--out", str(out),
                "--num-proc", str(num_proc)]
    cli()


# build time over the I/O floor the build aims at, by image size (build/datasets: under 1 in both)
TARGET_OVER_FLOOR = {"realistic": 1.5, "small": 3.0}

STAGES = {"floor": floor, "datasets": datasets_map, "build": build}


class Run(NamedTuple):
    """One stage's run: wall seconds, CPU seconds and peak RSS (MB) of its whole process tree."""

    wall: float
    cpu: float
    rss: float


def measure(stage: str, snapshot: Path, out: Path, num_proc: int) -> Run:
    """Run a stage in a fresh process. Its CPU time is the kernel's account of the process and every
    child it waited for (the build's workers, the card's process and its chart children)."""
    shutil.rmtree(out, ignore_errors=True)
    log = out.with_name(out.name + ".log")  # what the stage printed (the CLI's summary): shown if it fails
    started = time.perf_counter()
    with log.open("w") as printed:
        process = subprocess.Popen([sys.executable, __file__, "--stage", stage, "--snapshot", str(snapshot),
                                    "--out", str(out), "--num-proc", str(num_proc)], stdout=printed,
                                   stderr=subprocess.STDOUT)
    peak, tree = 0, psutil.Process(process.pid)
    while not (ended := os.wait4(process.pid, os.WNOHANG))[0]:
        try:
            peak = max(peak, sum(p.memory_info().rss for p in [tree, *tree.children(recursive=True)]))
        except psutil.Error:  # a process of the tree ended while it was read
            pass
        time.sleep(0.02)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(ended[1])
    if process.returncode:
        raise SystemExit(f"{log.read_text()[-3000:]}\nstage {stage} failed with exit code {process.returncode}")
    log.unlink()
    return Run(wall, ended[2].ru_utime + ended[2].ru_stime, peak / 2**20)


def best_of(runs: list[Run]) -> Run:
    """The fastest run's wall time; the least CPU time of any run; the highest peak RSS of any run
    (the memory target is a ceiling, so the worst run is the one that counts)."""
    return Run(min(r.wall for r in runs), min(r.cpu for r in runs), max(r.rss for r in runs))


def measure_size(rows: int, snapshot: Path, args: argparse.Namespace) -> tuple[dict[str, Run], float]:
    """Each stage `--repeats` times, interleaved (floor, datasets, build, floor, ...), so that a slow
    spell of the shared machine falls on every stage alike; each stage's best (`best_of`), and the
    build's own clock for its rows (build.json) in its fastest run."""
    runs: dict[str, list[Run]] = {stage: [] for stage in STAGES}
    rows_phase = []  # the build's own clock, run by run
    for _ in range(args.repeats):
        for stage in STAGES:
            out = args.workdir / f"out-{stage}-{rows}"
            runs[stage].append(measure(stage, snapshot, out, args.num_proc))
            if stage == "build":  # the build's own clock: from its options read to its last shard closed
                rows_phase.append(json.loads((out / "build.json").read_text())["timings"]["total_seconds"])
            shutil.rmtree(out, ignore_errors=True)  # outputs are as large as the input
    best = {stage: best_of(stage_runs) for stage, stage_runs in runs.items()}
    for stage, run in best.items():
        every = " ".join(f"{r.wall:.1f}" for r in runs[stage])
        print(f"{rows:>8} rows  {stage:<9} {run.wall:8.1f} s {rows / run.wall:9.0f} rows/s  CPU {run.cpu:7.1f} s  "
              f"peak RSS {run.rss:7.0f} MB  (runs: {every} s)", flush=True)
    fastest_build = min(range(args.repeats), key=lambda i: runs["build"][i].wall)
    return best, rows_phase[fastest_build]


def print_ratios(results: dict[int, dict[str, Run]], rows_phase: dict[int, float], args: argparse.Namespace) -> None:
    floor_target = TARGET_OVER_FLOOR[args.image_size]
    print(f"\n{'rows':>8}  {'build/floor':>11}  {'build/datasets':>14}  {'build: rows + the rest':>22}  "
          f"(targets: <= {floor_target} and < 1.0; num_proc {args.num_proc})")
    for rows, best in results.items():
        build_s, floor_s, ds_s = (best[s].wall for s in ("build", "floor", "datasets"))
        print(f"{rows:>8}  {build_s / floor_s:11.2f}  {build_s / ds_s:14.2f}  "
              f"{rows_phase[rows]:9.1f} s + {build_s - rows_phase[rows]:4.1f} s")
    print("(the rows: build.json's total_seconds, options read to last shard written; the rest: the process's "
          "start-up and imports, the card's statistics and charts, and its exit)")


def print_fixed_and_per_row(results: dict[int, dict[str, Run]]) -> None:
    small, large = min(results), max(results)
    print(f"\nper stage, from {small} and {large} rows (time = fixed + rows x cost per row):")
    for stage in STAGES:
        per_row = (results[large][stage].wall - results[small][stage].wall) / (large - small)
        fixed = results[small][stage].wall - small * per_row
        print(f"  {stage:<9} fixed {fixed:6.2f} s  per 1000 rows {1e6 * per_row:7.1f} ms")
    low, high = results[small]["build"].rss, results[large]["build"].rss
    print(f"build peak RSS {low:.0f} MB at {small} rows -> {high:.0f} MB at {large} rows: {high / low - 1:+.0%} for "
          f"{large / small:.0f}x the input (target < +30%, under 1.5 GB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[40000, 160000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/critic-bench"))
    parser.add_argument("--num-proc", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each stage, interleaved; the best is shown")
    parser.add_argument("--image-size", choices=("realistic", "small"), default="realistic",
                        help="realistic: ~50 KB JPEGs as in VLFeedback; small: ~1-2 KB, where per-row cost dominates")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--snapshot", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:  # a child process running one stage
        STAGES[args.stage](args.snapshot, args.out, args.num_proc)
        return
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    sys.path.insert(0, str(HERE))
    from make_snapshot import write_snapshot

    results, rows_phase = {}, {}
    for rows in args.rows:
        snapshot = args.workdir / f"vlfeedback-{rows}-{args.image_size}"
        if not (snapshot / "data").is_dir():
            print(f"generating {rows} rows into {snapshot} ...", flush=True)
            write_snapshot(snapshot, rows, image_size=args.image_size)
        results[rows], rows_phase[rows] = measure_size(rows, snapshot, args)
    print_ratios(results, rows_phase, args)
    if len(results) > 1:
        print_fixed_and_per_row(results)


if __name__ == "__main__":
    main()
