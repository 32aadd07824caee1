"""The cost benchmark decontamination adds to a build: 40k realistic rows against a 1,250-item benchmark.

    python benchmarks/decontaminate.py [--rows 40000] [--items 1250] [--workdir /tmp/critic-bench-decon]

Writes once a VLFeedback-shaped snapshot (make_snapshot.py, ~50 KB JPEGs) and a VL-RewardBench
snapshot of `--items` items: unrelated photos and questions, but for `--copies` copies of training
rows (resized to 0.75, re-encoded at quality 70, the question upper-cased and re-spaced). Then, each
in a fresh process, `--repeats` times, interleaved (build, decontaminated, near, build, ...):
  build     `critic-data build` of the rows, as benchmarks/run.py builds them
  decontaminated  the same build with `--decontaminate vl-rewardbench=DIR` (default image matching:
            a row's image is decoded only when its question matches an item's); its build.json's
            counts are printed as a check (the copies, dropped)
  near      matching alone (in this process, as the build calls it) with the near-duplicate search for
            image-only matches (`--image-matches near`), on `--near-rows` rows:
            here every row's aspect ratio is some benchmark image's, the worst case (and a common
            one: 4:3 and 1:1 photos are in every benchmark), so each row is decoded. The rows here
            share 256 images, so each copied row's image recurs: those rows are image-only matches
First, the distances behind the image rule's threshold: copies against unrelated images, as histograms.
Then each stage's best run (least wall time; single runs swing 2x on this shared machine), its
CPU time, the reading and matching parts, and the matches found (the copies, as a check); beside
them, the added cost as a share of the plain build timed in the same conditions.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from make_snapshot import _paragraph, image_pool, unique_copy, write_snapshot
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' benchmark writer
from tests.benchmark_snapshots import SIZES, encoded, photo, resized, write_vl_rewardbench  # noqa: E402


def training_rows(snapshot: Path):
    """Batches of (question, image bytes) of the snapshot's rows, as the build reads them."""
    for path in sorted((snapshot / "data").glob("*.parquet")):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1000, columns=["prompt", "image"]):
            yield list(zip(batch.column("prompt").to_pylist(), batch.column("image").field("bytes").to_pylist()))


def write_benchmark(folder: Path, snapshot: Path, items: int, copies: int) -> None:
    rng = random.Random(7)
    pool = image_pool(200, seed=7)
    rows = [row for batch in training_rows(snapshot) for row in batch[:1]]  # the first row of each batch
    benchmark = []
    for k, (question, image) in enumerate(rows[:copies]):
        with Image.open(io.BytesIO(image)) as opened:
            copy = opened.convert("RGB").resize((round(opened.width * 0.75), round(opened.height * 0.75)))
        benchmark.append((f"copy-{k}", "  " + question.upper().replace(" ", "  "), encoded(copy, 70)))
    for k in range(items - len(benchmark)):
        benchmark.append((f"item-{k}", _paragraph(rng, 6, 60) + "?", unique_copy(pool[k % len(pool)], f"item-{k}")))
    write_vl_rewardbench(folder, benchmark)


def distances(images: int = 120) -> None:
    """The image rule's distances (mean grey-level difference of 8x8 thumbnails) between copies
    (re-encoded at JPEG quality 30-95, resized to 0.25-1.5x) and between unrelated images, as histograms."""
    from critic_data.builders.duplicates import MAX_PIXEL_DISTANCE, thumbnail

    def pixels(data: bytes):
        return np.frombuffer(thumbnail(data), np.uint8).astype(np.int16)

    originals, copies = [], []
    for seed in range(images):
        image = photo(seed, SIZES[seed % len(SIZES)])
        originals.append(pixels(encoded(image)))
        variants = [encoded(image, quality) for quality in (30, 50, 70, 95)]
        variants += [encoded(resized(image, scale), 75) for scale in (0.25, 0.5, 0.75, 1.5)]
        copies += [np.abs(originals[-1] - pixels(variant)).mean() for variant in variants]
    stack = np.array(originals)
    unrelated = [np.abs(stack[i] - stack[i + 1:]).mean(axis=1) for i in range(len(stack) - 1)]
    unrelated = np.concatenate(unrelated)
    bins = [0, 1, 2, 3, MAX_PIXEL_DISTANCE, 6, 8, 10, 15, 20, 256]
    print(f"thumbnail distance (threshold {MAX_PIXEL_DISTANCE:g}), bins {bins}:")
    print(f"  {len(copies)} copies:     {np.histogram(copies, bins)[0].tolist()} (max {max(copies):.2f})")
    print(f"  {len(unrelated)} unrelated: {np.histogram(unrelated, bins)[0].tolist()} (min {unrelated.min():.2f})")


def stage(name: str, snapshot: Path, benchmark: Path, near_rows: int) -> dict:
    """One stage's wall and CPU seconds, in this process: reading the benchmark, then matching."""
    from critic_data.builders.keys import image_digest

    rows = [row for batch in training_rows(snapshot) for row in batch]
    rows = rows[:near_rows] if name == "near" else rows
    digests = [image_digest(image) for _, image in rows]  # the build has these already (prepare.py)
    clock = [(time.perf_counter(), time.process_time())]
    from critic_data.builders.decontaminate import Decontamination, TrainingPair, load_benchmark
    from critic_data.rl.evaluate import benchmark_items

    index = load_benchmark("vl-rewardbench", benchmark, benchmark_items, near_image_only=name == "near")
    decontamination = Decontamination([index])
    clock.append((time.perf_counter(), time.process_time()))
    for (question, image), digest in zip(rows, digests):
        decontamination.check(TrainingPair(question, image, digest=digest))
    clock.append((time.perf_counter(), time.process_time()))
    record = decontamination.record()["vl-rewardbench"]
    (wall0, cpu0), (wall1, cpu1), (wall2, cpu2) = clock
    return {"wall": wall2 - wall0, "cpu": cpu2 - cpu0, "load": wall1 - wall0, "match": wall2 - wall1,
            "rows": len(rows), "contaminated": record["pairs_contaminated"], "image_only": record["pairs_image_only"]}


def run_stage(name: str, args) -> dict:
    if name in ("build", "decontaminated"):  # a build, plain or decontaminated, in the same conditions
        out = args.workdir / "build-out"
        shutil.rmtree(out, ignore_errors=True)
        command = [str(Path(sys.executable).parent / "critic-data"), "build", "--source", "vlfeedback",
                   "--input", str(args.workdir / f"vlf-{args.rows}"), "--out", str(out),
                   "--num-proc", str(os.cpu_count() or 1)]  # as benchmarks/run.py builds
        if name == "decontaminated":
            command += ["--decontaminate", f"vl-rewardbench={args.workdir / f'vlrb-{args.items}'}"]
        before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        found = json.loads((out / "build.json").read_text()).get("contamination", {}).get("vl-rewardbench", {})
        shutil.rmtree(out)
        return {"wall": wall, "cpu": cpu, **({"contaminated": found["pairs_contaminated"],
                                              "image_only": found["pairs_image_only"]} if found else {})}
    command = [sys.executable, __file__, "--stage", name, "--workdir", str(args.workdir), "--rows", str(args.rows),
               "--items", str(args.items), "--near-rows", str(args.near_rows)]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def best(runs: list[dict]) -> dict:
    return min(runs, key=lambda run: run["wall"])


def report(name: str, runs: list[dict]) -> dict:
    chosen = best(runs)
    walls = [round(run["wall"], 2) for run in runs]
    print(f"{name:8} best wall {chosen['wall']:.3f} s, its CPU {chosen['cpu']:.3f} s (all walls {walls})")
    if "contaminated" in chosen and "rows" not in chosen:
        print(f"         found {chosen['contaminated']} contaminated (dropped), {chosen['image_only']} image-only")
    if "rows" in chosen:
        print(f"         {chosen['rows']} rows: benchmark read {chosen['load']:.3f} s, "
              f"matching {chosen['match']:.3f} s; "
              f"found {chosen['contaminated']} contaminated, {chosen['image_only']} image-only")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40000)
    parser.add_argument("--items", type=int, default=1250)
    parser.add_argument("--copies", type=int, default=40)
    parser.add_argument("--near-rows", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/critic-bench-decon"))
    parser.add_argument("--stage", choices=("near",), help=argparse.SUPPRESS)
    args = parser.parse_args()
    snapshot, benchmark = args.workdir / f"vlf-{args.rows}", args.workdir / f"vlrb-{args.items}"
    if args.stage:
        print(json.dumps(stage(args.stage, snapshot, benchmark, args.near_rows)))
        return
    distances()
    if not snapshot.exists():
        write_snapshot(snapshot, args.rows)
    if not benchmark.exists():
        write_benchmark(benchmark, snapshot, args.items, args.copies)
    runs: dict[str, list[dict]] = {"build": [], "decontaminated": [], "near": []}
    for _ in range(args.repeats):  # interleaved: the machine's load changes from minute to minute
        for name in runs:
            runs[name].append(run_stage(name, args))
    build, decontaminated, near = (report(name, stage_runs) for name, stage_runs in runs.items())
    print(f"--decontaminate adds {decontaminated['wall'] / build['wall'] - 1:+.1%} to the build's wall time, "
          f"{decontaminated['cpu'] / build['cpu'] - 1:+.1%} to its CPU time (target: under +10%)")
    per_row = near["match"] / near["rows"]
    print(f"near     {per_row * 1e3:.3f} ms per row: {per_row * args.rows:.1f} s for {args.rows} rows, "
          f"{per_row * args.rows / build['wall']:.0%} of the build's wall time")


if __name__ == "__main__":
    main()
