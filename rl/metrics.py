"""Every figure a run reports, defined once: `summary.json` (rl/evaluate.py, rl/best_of_n.py) and
`critic-data inspect` compute them here from the records of `rl/records.py`.

- Eval: `accuracy` (an unparsed verdict is wrong) and `accuracy_unparsed_half` (it scores half:
  `half_credit`), each with its Wilson 95% interval (`wilson_interval`); a macro mean's interval
  combined by MOVER (`macro`); the unparsed rate; position bias (how often a critic says "1" or
  "2" against how often the truth is); and over items judged in both orders, position consistency
  and both-orders accuracy (`judged_twice`).
- Best-of-n: accuracy of the pick, the first sample, the majority vote and any candidate
  (`pick_summary`); the knockout bracket (`knockout_pairs`, `next_round`) and its replay
  (`knockout_winners`); round-robin scores and their seeded tie-break (`round_robin_scores`,
  `round_robin_winner`); accuracy against N replayed from the recorded matches
  (`accuracy_against_n`).
- Difficulty: rows per pass count (`pass_count_histogram`, bins k/K), the share of rows whose GRPO
  group has zero advantage, observed and expected from the rates (`zero_advantage`), the closed
  pass-rate band a selection keeps (`in_band`) and the rollouts it saves (`band_savings`), and how
  rates moved between two runs (`rate_transitions`); all in `difficulty_summary`.
"""

from __future__ import annotations

import math
from collections import defaultdict

from critic_data.rl.client import derive_seed
from critic_data.rl.records import DifficultyRow, Judgement, Match, Pick

# The normal quantile of 0.975 (scipy.stats.norm.ppf(0.975)): a two-sided 95% interval.
Z_95 = 1.959963984540054


def wilson_interval(proportion: float, n: int) -> list[float] | None:
    """The Wilson score 95% interval [low, high] of a proportion observed over `n` trials (None
    when n is 0). Unlike proportion ± 1.96·SE it stays inside [0, 1] and does not collapse to a
    point at 0% or 100%, which small benchmark categories reach. A proportion of fractional
    successes (half credit for an unparsed verdict) is taken as it is."""
    if n <= 0:
        return None
    z2 = Z_95 * Z_95
    centre = (proportion + z2 / (2 * n)) / (1 + z2 / n)
    half = Z_95 / (1 + z2 / n) * math.sqrt(proportion * (1 - proportion) / n + z2 / (4 * n * n))
    # at 0% and 100% one bound is the proportion itself, which rounding would move off by 1e-17
    return [max(0.0, min(proportion, centre - half)), min(1.0, max(proportion, centre + half))]


# --- eval ----------------------------------------------------------------------------------------

def accuracy(judgements: list[Judgement]) -> float | None:
    """The share of right verdicts; an unparsed one is wrong."""
    return sum(j.correct for j in judgements) / len(judgements) if judgements else None


def half_credit(judgement: Judgement) -> float:
    """A judgement's score when an unparsed verdict gets half credit: 1 right, 0 wrong, and with
    no verdict the chance that lmms-eval's coin over "1" / "2" names the expected one (1/2; 0 on
    a "tie" label, which the coin never names)."""
    if judgement.verdict is None:
        return 0.5 if judgement.expected in ("1", "2") else 0.0
    return float(judgement.correct)


def accuracies(judgements: list[Judgement]) -> dict:
    """`accuracy` (unparsed verdicts wrong) and `accuracy_unparsed_half`, each with its Wilson interval."""
    if not judgements:
        return dict.fromkeys(("accuracy", "accuracy_ci95", "accuracy_unparsed_half", "accuracy_unparsed_half_ci95"))
    right, half = accuracy(judgements), sum(map(half_credit, judgements)) / len(judgements)
    return {"accuracy": right, "accuracy_ci95": wilson_interval(right, len(judgements)),
            "accuracy_unparsed_half": half, "accuracy_unparsed_half_ci95": wilson_interval(half, len(judgements))}


def macro(categories: list[dict], key: str) -> dict:
    """The mean of the categories' `key` and its 95% interval, combined from theirs by MOVER
    (Zou & Donner 2008, a sum of independent proportions: the mean -/+ the root of the summed
    squared distances to each category's Wilson bound, over their number)."""
    k = len(categories)
    if not k:
        return {f"macro_{key}": None, f"macro_{key}_ci95": None}
    mean = sum(c[key] for c in categories) / k
    below = math.sqrt(sum((c[key] - c[f"{key}_ci95"][0]) ** 2 for c in categories)) / k
    above = math.sqrt(sum((c[f"{key}_ci95"][1] - c[key]) ** 2 for c in categories)) / k
    return {f"macro_{key}": mean, f"macro_{key}_ci95": [max(0.0, mean - below), min(1.0, mean + above)]}


def unparsed_rate(judgements: list[Judgement]) -> float | None:
    return sum(j.verdict is None for j in judgements) / len(judgements) if judgements else None


def position_bias(judgements: list[Judgement]) -> dict:
    """How often the verdict says "1" and "2" (`said_*`) against how often the truth is (`truth_*`)."""
    n = len(judgements)
    return {"said_1": sum(j.verdict == "1" for j in judgements) / n,
            "said_2": sum(j.verdict == "2" for j in judgements) / n,
            "truth_1": sum(j.expected == "1" for j in judgements) / n,
            "truth_2": sum(j.expected == "2" for j in judgements) / n}


def by_item(judgements: list[Judgement]) -> dict[str, list[Judgement]]:
    items: dict[str, list[Judgement]] = defaultdict(list)
    for judgement in judgements:
        items[judgement.id].append(judgement)
    return items


def judged_twice(judgements: list[Judgement]) -> list[list[Judgement]]:
    """The items judged in both orders, as their two judgements."""
    return [pair for pair in by_item(judgements).values() if len(pair) == 2]


def position_consistency(twice: list[list[Judgement]]) -> float | None:
    """Consistent: both orders name the same source response (an unparsed verdict never is)."""
    return sum(a.picked is not None and a.picked == b.picked for a, b in twice) / len(twice) if twice else None


def both_orders_correct(twice: list[list[Judgement]]) -> float | None:
    return sum(a.correct and b.correct for a, b in twice) / len(twice) if twice else None


# --- best-of-n -----------------------------------------------------------------------------------

SELECTIONS = {"best_of_n": "pick", "first_sample": "first", "majority_vote": "majority", "any_candidate": "any"}


def pick_summary(picks: list[Pick]) -> dict:
    """Counts and, over questions with a gold answer, accuracy of the pick, the first sample,
    the majority vote and of any candidate, with their Wilson 95% intervals."""
    played = sum(len(p.matches) for p in picks)
    unparsed = sum(p.unparsed for p in picks)
    answered = [p.correctness() for p in picks if p.answer is not None]
    summary = {
        "questions": len(picks),
        "matches": played,
        "unparsed_judgements": unparsed,
        "unparsed_rate": unparsed / played if played else None,
        "too_long_matches": sum(p.too_long for p in picks),
        "answered": len(answered),
    }
    if answered:
        summary["accuracy"] = {name: sum(c[f"{key}_correct"] for c in answered) / len(answered)
                               for name, key in SELECTIONS.items()}
        summary["accuracy_ci95"] = {name: wilson_interval(value, len(answered))
                                    for name, value in summary["accuracy"].items()}
        summary["ci_method"] = "wilson"
    return summary


def knockout_pairs(alive: list[int]) -> list[tuple[int, int]]:
    """A knockout round's matches among the candidates still in: (0, 1), (2, 3), ... in order; an
    odd one out waits (`next_round`)."""
    return [(alive[i], alive[i + 1]) for i in range(0, len(alive) - 1, 2)]


def next_round(alive: list[int], winners: list[int]) -> list[int]:
    """Who is in after a round: its winners in order, then the one that waited, if any."""
    return winners + ([alive[-1]] if len(alive) % 2 else [])


def knockout_winners(n: int, matches: list[Match]) -> dict[int, int] | None:
    """The winner of each sub-bracket [0, 2^k) (2^k <= n), and of all n, replayed from the matches.

    The bracket pairs (0, 1), (2, 3), ... in round 0 and then the winners in order (an odd one out
    waits at the end), so after round k-1 the first one alive has won exactly the matches among
    candidates [0, 2^k): the pick Best-of-2^k would have made with the same judge. None when the
    matches do not follow that bracket (another version's log)."""
    alive, played, winners = list(range(n)), 0, {1: 0}
    while len(alive) > 1:
        pairs = knockout_pairs(alive)
        round_ = matches[played:played + len(pairs)]
        if len(round_) != len(pairs) or any(sorted(m.shown) != sorted(pair) for m, pair in zip(round_, pairs)):
            return None
        played += len(pairs)
        alive = next_round(alive, [m.winner for m in round_])
        size = 2 * max(winners)
        if size <= n:
            winners[size] = alive[0]
    winners[n] = alive[0]
    return winners if played == len(matches) else None


def round_robin_scores(n: int, matches: list[Match]) -> list[int]:
    """r_i = sum_k a_ki - sum_l a_il, with a_kl = 1 when the match showing k first was won by l."""
    scores = [0] * n
    for match in matches:
        first, second = match.shown
        if match.winner == second:
            scores[second] += 1  # a_(first, second) = 1 counts for the one shown second ...
            scores[first] -= 1  # ... and against the one shown first
    return scores


def round_robin_winner(scores: list[int], seed: int, qid: str) -> int:
    """The highest r_i; a tie is broken by a coin fixed by (seed, question id)."""
    tied = [i for i, score in enumerate(scores) if score == max(scores)]
    return tied[derive_seed(seed, qid, "tie") % len(tied)]


def _replayed_winners(pick: Pick, n: int, strategy: str, seed: int) -> dict[int, int] | None:
    """{size: the candidate Best-of-size would have picked} for 1, 2, 4, ... up to n, and n."""
    if strategy == "knockout":  # a bracket is replayed round by round
        return knockout_winners(n, pick.matches)
    sizes = [2 ** k for k in range(1, n.bit_length()) if 2 ** k <= n] + ([] if n & (n - 1) == 0 else [n])
    winners = {1: 0}  # best of 1 is the first sample: no match among one candidate
    for size in sizes:
        among = [m for m in pick.matches if max(m.shown) < size]
        winners[size] = round_robin_winner(round_robin_scores(size, among), seed, pick.id)
    return winners


def accuracy_against_n(picks: list[Pick], strategy: str, seed: int) -> tuple[list[dict], int]:
    """Accuracy at 1, 2, 4, ... up to N, and N, over the answered questions whose matches replay to
    the recorded pick, each with its Wilson interval; and how many answered questions do not."""
    n = len(picks[0].candidates)
    right: dict[int, list[bool]] = defaultdict(list)
    left_out = 0
    for pick in (p for p in picks if p.answer is not None):
        winners = _replayed_winners(pick, n, strategy, seed) if len(pick.candidates) == n else None
        if winners is None or winners[n] != pick.winner_index:  # not this bracket's log
            left_out += 1
            continue
        for size, winner in winners.items():
            right[size].append(pick.right(winner))
    curve = [{"n": size, "questions": len(found), "accuracy": sum(found) / len(found)}
             for size, found in sorted(right.items())]
    curve = [{**point, "accuracy_ci95": wilson_interval(point["accuracy"], point["questions"])} for point in curve]
    return curve, left_out


# --- difficulty ----------------------------------------------------------------------------------

def pass_count_histogram(rows: list[DifficultyRow], samples: int) -> list[int]:
    """Rows per pass count k = 0 .. K (pass rate k/K)."""
    counts = [0] * (samples + 1)
    for row in rows:
        counts[row.passes] += 1
    return counts


def _flat(row: DifficultyRow, weights: dict[str, float]) -> bool:
    """Whether every sample's weighted total reward is the same: the trainer's group advantage is then 0."""
    totals = {round(sum(weights[name] * row.rewards[name][k] for name in weights), 9) for k in range(row.samples)}
    return len(totals) == 1


def zero_advantage(rows: list[DifficultyRow], weights: dict[str, float] | None = None) -> dict:
    """The share of rows whose group of K has zero advantage on the preference reward: `observed` (pass
    rate 0 or 1) and `expected` from the rates, mean of p^K + (1-p)^K (the chance that K fresh samples
    all agree). With the recipe's reward `weights`, `observed_all_rewards`: the share whose weighted
    total reward is the same for every sample (a group the format reward alone still spreads is not)."""
    if not rows:
        return {"observed": None, "expected": None, **({"observed_all_rewards": None} if weights else {})}
    figures = {"observed": sum(row.passes in (0, row.samples) for row in rows) / len(rows),
               "expected": sum(row.pass_rate ** row.samples + (1 - row.pass_rate) ** row.samples
                               for row in rows) / len(rows)}
    if weights:
        figures["observed_all_rewards"] = sum(_flat(row, weights) for row in rows) / len(rows)
    return figures


def in_band(rate: float, low: float, high: float) -> bool:
    """Whether a pass rate lies in the closed band [low, high]: what a selection by difficulty keeps."""
    return low <= rate <= high


def band_savings(rows: list[DifficultyRow], low: float, high: float) -> dict:
    """What keeping only the rows in [low, high] does: rows kept and dropped, the share of rollout compute
    saved (every row costs K rollouts, so the share of rows dropped), and the zero-advantage shares of
    the rows kept."""
    kept = [row for row in rows if in_band(row.pass_rate, low, high)]
    return {"band": [low, high], "rows_kept": len(kept), "rows_dropped": len(rows) - len(kept),
            "compute_saved": (len(rows) - len(kept)) / len(rows) if rows else None,
            "zero_advantage_kept": zero_advantage(kept)}


def symmetric_bands(samples: int) -> list[tuple[float, float]]:
    """[k/K, 1 - k/K] for k = 1 .. K/2 - 1 (K = 8: 0.125:0.875, 0.25:0.75, 0.375:0.625); the first
    drops exactly the rows with zero advantage."""
    return [(k / samples, 1 - k / samples) for k in range(1, (samples + 1) // 2)]


def difficulty_summary(rows: list[DifficultyRow], samples: int, weights: dict[str, float]) -> dict:
    """The figures of a difficulty run: rows, mean pass and format rates, the histogram, zero advantage,
    what the symmetric bands save, and how many rows the server would not sample in one request."""
    formats = [row.format_rate for row in rows if row.format_rate is not None]
    return {
        "rows": len(rows),
        "samples": samples,
        "mean_pass_rate": sum(row.pass_rate for row in rows) / len(rows) if rows else None,
        "mean_format_rate": sum(formats) / len(formats) if formats else None,
        "histogram": pass_count_histogram(rows, samples),
        "zero_advantage": zero_advantage(rows, weights),
        "bands": [band_savings(rows, low, high) for low, high in symmetric_bands(samples)],
        "requests": sum(row.requests for row in rows),
        "rows_sampled_one_by_one": sum(row.requests > 1 for row in rows),
    }


def rate_transitions(first: dict[str, DifficultyRow], second: dict[str, DifficultyRow]) -> dict:
    """How pass rates moved from one run to another (a base model, then a trained checkpoint) over the
    rows both measured alike (same id and `digest`: the same prompt, images and label): the mean change,
    how many rose, fell or stayed, and `table[i][j]`, the rows with i passes in the first run and j in
    the second. `other_content`: ids in both runs that showed the model something else (another build)."""
    shared = [row_id for row_id in first if row_id in second]
    both = [row_id for row_id in shared if first[row_id].digest == second[row_id].digest]
    size_first = max((row.samples for row in first.values()), default=0)
    size_second = max((row.samples for row in second.values()), default=0)
    table = [[0] * (size_second + 1) for _ in range(size_first + 1)]
    changes = []
    for row_id in both:
        table[first[row_id].passes][second[row_id].passes] += 1
        changes.append(second[row_id].pass_rate - first[row_id].pass_rate)
    return {"rows_in_both": len(both), "other_content": len(shared) - len(both),
            "only_first": len(first) - len(shared), "only_second": len(second) - len(shared),
            "mean_change": sum(changes) / len(changes) if changes else None,
            "rose": sum(change > 0 for change in changes), "fell": sum(change < 0 for change in changes),
            "same": sum(change == 0 for change in changes), "table": table}
