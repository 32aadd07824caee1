"""`--balance-length`: per source and split, the better response is the longer one in about half
the kept pairs, by the fewest drops a single-pass build can make (the proof is in
`decide.Decider`'s docstring).

The rule is checked three ways: against every choice a single-pass rule could make (all subsets
whose every prefix is within the tolerance) on short random inputs; on a VLFeedback snapshot
biased on purpose (the better response the longer one in about 90% of rows), measured before and
after with the statistics `critic-data inspect` reports, its drops against an independent
dynamic programme over the same input; and on an input without bias, where it should cost little.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from critic_data import UserError
from critic_data.builders.counts import SourceCounts
from critic_data.builders.decide import Decider
from critic_data.builders.options import BuildOptions
from critic_data.builders.pipeline import build
from critic_data.builders.prepare import Candidate
from critic_data.cards.statistics import dataset_statistics
from critic_data.files import published_path
from tests import snapshots
from tests.cli import run_cli

T = BuildOptions.length_tolerance


def greedy(signs: list[int], split: str = "train") -> tuple[list[bool], SourceCounts]:
    """The build's own decisions (`Decider`) on pairs of the given signs: 1 the better response is
    longer, -1 shorter, 0 as long."""
    candidates = [Candidate("vlfeedback", f"key-{i}", split, 0.25, False, longer=sign) for i, sign in enumerate(signs)]
    decided = Decider(BuildOptions(out=Path("unused"), balance_length=True)).decide(candidates)
    return [answer is not None for answer in decided.answers], SourceCounts(decided.counts)


def single_pass_best(signs: list[int]) -> int:
    """The most pairs with a sign that any choice keeps while |L - S| <= T(L + S) after every
    pair (what a rule that decides as the pairs come must hold: the input may end anywhere),
    by trying every such choice."""
    def best(i: int, d: int, n: int) -> int:
        if i == len(signs):
            return n
        if not signs[i]:
            return best(i + 1, d, n)
        dropped = best(i + 1, d, n)
        if abs(d + signs[i]) <= T(n + 1):
            return max(dropped, best(i + 1, d + signs[i], n + 1))
        return dropped
    return best(0, 0, 0)


def single_pass_best_dp(signs: list[int]) -> int:
    """The same maximum for long inputs: per prefix, the most pairs kept for each L - S (more kept
    with the same L - S is never worse: the tolerance only grows)."""
    most = {0: 0}
    for sign in filter(None, signs):
        step = dict(most)  # drop it
        for d, n in most.items():
            if abs(d + sign) <= T(n + 1) and step.get(d + sign, -1) < n + 1:
                step[d + sign] = n + 1
        most = step
    return max(most.values())


def offline_fewest(signs: list[int]) -> int:
    """The fewest drops of a rule that sees the whole input first: the smallest d with
    |L - S| - d <= T(L + S - d)."""
    gap, n = abs(sum(signs)), sum(1 for s in signs if s)
    return next(d for d in range(n + 1) if gap - d <= T(n - d))


def test_the_tolerance_is_the_square_root():
    assert [T(n) for n in (1, 3, 4, 24, 25, 100, 10_000)] == [1, 1, 2, 4, 5, 10, 100]


def test_no_single_pass_choice_keeps_more_than_the_rule(tmp_path):
    rng = random.Random(13)
    for _ in range(150):
        bias = rng.choice([0.5, 0.7, 0.9, 1.0])
        signs = [rng.choice([0, 1, -1] if rng.random() < 0.2 else ([1] if rng.random() < bias else [-1]))
                 for _ in range(rng.randint(1, 12))]
        kept, stats = greedy(signs)
        assert all(kept[i] for i, s in enumerate(signs) if s == 0)  # equal lengths are never dropped
        d = n = 0
        for sign, keep in zip(signs, kept):
            if keep and sign:
                d, n = d + sign, n + 1
                assert abs(d) <= T(n)  # within the tolerance after every pair, hence at the end
        assert n == single_pass_best(signs) == single_pass_best_dp(signs), signs
        assert stats["filtered", "length_balance"] == len(signs) - sum(kept)


def test_a_rule_that_decides_as_pairs_come_cannot_drop_as_few_as_one_that_sees_them_all():
    # Two shorter-better pairs, then two longer-better: |L - S| is 0 in all, yet the second S had
    # to go (had the input ended there, 2 > T(2) = 1), and then the rest fits.
    signs = [-1, -1, 1, 1]
    kept, stats = greedy(signs)
    assert offline_fewest(signs) == 0
    assert stats["filtered", "length_balance"] == 1 == len(signs) - single_pass_best(signs)
    assert kept == [True, False, True, True]


def test_splits_are_balanced_each_on_their_own():
    candidates = [Candidate("vlfeedback", f"k{i}-{split}", split, 0.25, False, longer=1)
                  for i in range(6) for split in ("train", "test")]
    decided = Decider(BuildOptions(out=Path("unused"), balance_length=True)).decide(candidates)
    kept, stats = [answer is not None for answer in decided.answers], SourceCounts(decided.counts)
    assert kept == [True] * 2 + [False] * 10  # one of each split (T(2) = 1), in input order
    balance = stats.to_manifest()["label_balance"]
    assert sum(balance["train"].values()) == sum(balance["test"].values()) == 1


def test_a_source_without_length_bias_loses_few_pairs():
    rng = random.Random(5)
    signs = [rng.choice([1, -1]) for _ in range(4000)]
    _, stats = greedy(signs)
    dropped = stats["filtered", "length_balance"]
    assert dropped == len(signs) - single_pass_best_dp(signs)
    assert dropped <= 0.02 * len(signs)  # chance ups and downs cost under 2% of the pairs here
    assert offline_fewest(signs) <= dropped


def test_the_option_is_on_or_off():
    with pytest.raises(UserError, match="--balance-length is on or off"):
        BuildOptions(out=Path("o"), balance_length="no")
    assert BuildOptions(out=Path("o")).balance_length is False


# --- a VLFeedback snapshot biased on purpose -------------------------------------------------------

def biased_rows(n: int, seed: int = 0, quirks: bool = True) -> list[dict]:
    """VLFeedback rows whose responses grow with their rating in 9 rows of 10 (shrink in the rest):
    the pair of the widest gap then has its better response the longer one in ~90% of rows."""
    rows = ORIGINAL_ROWS(n, seed, quirks=False)
    rng = random.Random(seed)
    for row in rows:
        grows = rng.random() < 0.9
        for completion in row["completions"]:
            score = sum(int(aspect["Rating"]) for aspect in completion["annotations"].values())  # 3..15
            words = score if grows else 18 - score
            completion["response"] = "The image shows it. " + "More detail here. " * words
    return rows


ORIGINAL_ROWS = snapshots.vlfeedback_rows


@pytest.fixture(scope="module")
def biased(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("biased") / "vlf"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(snapshots, "vlfeedback_rows", biased_rows)  # what the snapshot writer reads
        snapshots.write_vlfeedback_jsonl(folder, n=300, seed=3, quirks=False)
    return folder


def _build(snapshot: Path, out: Path, num_proc: int = 1, **options) -> dict:
    return build(BuildOptions(out=out, inputs={"vlfeedback": snapshot}, test_size=0.2, num_proc=num_proc, **options))


def _signs(out: Path, split: str) -> list[int]:
    """Per row of a split, in the order written (the input order): is the better response longer?"""
    signs = []
    for path in sorted((out / "data").glob(f"{split}-*.parquet")):
        for row in pq.read_table(path, columns=["response_1", "response_2", "answer"]).to_pylist():
            better, worse = (row["response_1"], row["response_2"])[:: 1 if row["answer"] == "1" else -1]
            signs.append((len(better) > len(worse)) - (len(better) < len(worse)))
    return signs


@pytest.mark.slow
def test_a_biased_source_is_balanced_with_the_fewest_drops(biased, tmp_path):
    before = _build(biased, tmp_path / "before")
    balanced = run_cli("build", "--source", "vlfeedback", "--input", biased, "--out", tmp_path / "after",
                       "--test-size", "0.2", "--num-proc", "1", "--balance-length")
    assert balanced.returncode == 0, balanced.stderr
    after = json.loads((tmp_path / "after" / "build.json").read_text())

    # The bias as `critic-data inspect` reports it, before and after.
    (bias_before,) = dataset_statistics(tmp_path / "before")["length_bias"]
    (bias_after,) = dataset_statistics(tmp_path / "after")["length_bias"]
    assert bias_before["better_longer_share"] > 0.85 and bias_before["pairs"] > 200
    assert bias_after["better_longer_share"] < 0.6

    expected = tolerated = 0
    for split in ("train", "test"):
        offered, kept = _signs(tmp_path / "before", split), _signs(tmp_path / "after", split)
        assert len(offered) > 40
        longer, shorter = kept.count(1), kept.count(-1)
        assert abs(longer - shorter) <= T(longer + shorter)
        tolerated += T(longer + shorter)
        fewest = sum(1 for s in offered if s) - single_pass_best_dp(offered)  # the input the rule saw, in order
        assert len(offered) - len(kept) == fewest
        assert fewest >= offline_fewest(offered)
        expected += fewest

    assert bias_after["better_longer"] - bias_after["worse_longer"] <= tolerated  # inspect counts what the rule held
    counts_before, counts_after = before["sources"]["vlfeedback"]["counts"], after["sources"]["vlfeedback"]["counts"]
    assert counts_after["pairs_filtered"]["length_balance"] == expected
    assert counts_before["pairs_kept"] - counts_after["pairs_kept"] == expected
    assert "length_balance" not in counts_before["pairs_filtered"]
    card = (tmp_path / "after" / "README.md").read_text(encoding="utf-8")
    assert f"| vlfeedback | `length_balance` | {expected} |" in card and "made with `--balance-length`" in card
    assert after["options"]["balance_length"] is True


@pytest.mark.slow
def test_balancing_does_not_depend_on_the_number_of_workers(biased, tmp_path, monkeypatch):
    one = _build(biased, tmp_path / "one", balance_length=True)
    monkeypatch.setattr("critic_data.builders.readers.ROWS_PER_BATCH", 7)  # parts prepared by two processes
    two = _build(biased, tmp_path / "two", num_proc=2, balance_length=True)
    assert (one["sources"] == two["sources"]
            and one["sources"]["vlfeedback"]["counts"]["pairs_filtered"]["length_balance"])
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*") if p.is_file())
    for path in files:
        one_bytes, two_bytes = ((tmp_path / out / path).read_bytes() for out in ("one", "two"))
        if path.name == "README.md":  # the card names --out among the options, as published files name a path
            one_bytes = one_bytes.replace(f"`{published_path(tmp_path / 'one')}`".encode(),
                                          f"`{published_path(tmp_path / 'two')}`".encode())
        if path.name != "build.json":  # its timings differ
            assert one_bytes == two_bytes, path


def test_help_states_the_tolerance():
    result = run_cli("build", "--help", env={"COLUMNS": "400"})
    text = " ".join(result.stdout.split())
    assert "--balance-length" in text and "at most √n" in text and "pairs_filtered.length_balance" in text
