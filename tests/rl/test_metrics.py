"""The figures of a run (rl/metrics.py), as summary.json and `critic-data inspect` report them.

tests/rl/golden/ holds recorded runs (three eval benchmarks, each in one order and in both; best-of-n
knockouts of 8 and of 6 and a round-robin of 5, with unparsed, tied and too-long matches and
questions without an answer) beside the summary.json and the `inspect --json` report the code wrote
before the metrics had one owner: the figures must not move by a byte. The metric arithmetic itself
is checked on hand-made records in test_eval.py, test_best_of_n.py and test_inspect.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from critic_data.inspection import best_of_n_statistics, eval_statistics
from critic_data.rl import metrics
from critic_data.rl.evaluate import score
from critic_data.rl.records import Judgement, Match, Pick

GOLDEN = Path(__file__).parent / "golden"
RUNS = sorted(GOLDEN.iterdir())


def _recorded(folder: Path) -> tuple[list, dict]:
    run = json.loads((folder / "run.json").read_text())
    if folder.name.startswith("eval"):
        lines = (folder / "results.jsonl").read_text(encoding="utf-8").splitlines()
        return [Judgement.from_json(json.loads(line), run["benchmark"]) for line in lines], run
    lines = (folder / "picks.jsonl").read_text(encoding="utf-8").splitlines()
    return [Pick.from_json(json.loads(line)) for line in lines], run


@pytest.mark.parametrize("folder", RUNS, ids=lambda folder: folder.name)
def test_the_summary_of_a_recorded_run_is_the_golden_one_byte_for_byte(folder):
    records, run = _recorded(folder)
    figures = score(records, run["benchmark"]) if "benchmark" in run else metrics.pick_summary(records)
    assert json.dumps(figures, indent=2) + "\n" == (folder / "summary.json").read_text()  # as write_summary writes


@pytest.mark.parametrize("folder", RUNS, ids=lambda folder: folder.name)
def test_inspect_reports_a_recorded_run_as_before(folder):
    report = (eval_statistics if folder.name.startswith("eval") else best_of_n_statistics)(folder)
    assert {**report, "folder": None} == {**json.loads((folder / "inspect.json").read_text()), "folder": None}


def _round_robin_pick(qid: str, n: int, seed: int) -> Pick:
    """Every ordered pair judged; the one shown second wins when their sum is odd (a judge with no order)."""
    matches = [Match((first, second), "2" if (first + second) % 2 else "1",
                     second if (first + second) % 2 else first, "judge")
               for first in range(n) for second in range(n) if first != second]
    winner = metrics.round_robin_winner(metrics.round_robin_scores(n, matches), seed, qid)
    answers = [str(i % 3) for i in range(n)]
    return Pick(qid, answers, winner, matches, answers, "0", None, "1")


@pytest.mark.slow
def test_accuracy_against_n_replays_a_large_round_robin_run_quickly():
    """1000 questions of a round-robin of 16 (240 matches each): the replay stays a second or two."""
    picks = [_round_robin_pick(f"q{k}", 16, 0) for k in range(1000)]
    started = time.monotonic()
    curve, left_out = metrics.accuracy_against_n(picks, "round-robin", 0)
    assert time.monotonic() - started < 10
    assert left_out == 0 and [point["n"] for point in curve] == [1, 2, 4, 8, 16]
    assert all(point["questions"] == 1000 for point in curve)
