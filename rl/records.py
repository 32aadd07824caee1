"""The records a run writes, one type and one reader each.

- `Judgement`: a line of an eval's `results.jsonl`, one verdict on one item in one presented order.
- `Pick`: a line of a best-of-n's `picks.jsonl`, one question's candidates, the matches played and
  the candidate picked (its `Match`es).
- `DifficultyRow`: a line of a difficulty run's `difficulty.jsonl`, one dataset row judged K times:
  each sample's rewards, the pass count and rate; `read_difficulty` reads a whole run
  (run.json's identity, the dataset's fingerprint among it, and its rows by id), for `inspect` and
  for a build that selects rows by pass rate; `row_digest` names what a row showed the model.

The writers (`rl/evaluate.py`, `rl/best_of_n.py`) build these and write `to_json()`; `--resume` and
`critic-data inspect` read a line back with `from_json`, which returns None for any line this
version cannot score: a field missing or of another type (a bool is not an index, NaN is no label),
or a figure that does not follow from the others (`expected` from the label and the order,
`correct` from the verdict, a pick's counts and correctness from its matches and answers). A
figure derived from others is written but never stored twice: it is a property here. Fields this
version does not know are ignored.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from critic_data import UserError
from critic_data.files import json_lines
from critic_data.schemas import ANSWERS

# What a verdict reads as: a label, or None when the completion names none.
VERDICTS = (*ANSWERS, None)
# What a judgement's extra fields hold, by name; `REQUIRED_EXTRA` names those a benchmark's every
# judgement carries (category: VL-RewardBench's, group: the MM-RLHF id its pairs share, source: a
# built row's).
_EXTRA_TYPES = {"category": (str,), "group": (str,), "keywords": (list,), "source": (str, type(None))}
REQUIRED_EXTRA = {"built": ("source",), "vl-rewardbench": ("category",), "mm-rlhf": ("group",)}
# How a best-of-n match was decided: by the judge's verdict, by a coin when the verdict named no
# answer, or by a coin when the prompt did not fit --max-model-len.
DECIDED_BY = ("judge", "coin", "too-long")
MAX_SAMPLES = 64  # judgements per row of a difficulty run: a guard against a mistyped --samples (and run.json)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _same(written: object, derived: object) -> bool:
    """A written figure reads as the one derived from the rest of its record: 1 is not True, 1.0 is not 1."""
    return type(written) is type(derived) and written == derived


def _is_texts(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def expected_verdict(label: str, presented: tuple[int, int]) -> str:
    """The label in presented terms: the position that holds the better response."""
    if label not in ("1", "2"):
        return label  # "tie" reads the same in either order
    return str(presented.index(int(label)) + 1)


@dataclass(frozen=True)
class Judgement:
    """One verdict: `presented` says which source response went first ((1, 2) or (2, 1)), `label`
    names the better source response, `extra` holds the item's benchmark fields (`_EXTRA_TYPES`)."""

    id: str
    label: str
    presented: tuple[int, int]
    verdict: str | None
    extra: dict = field(default_factory=dict)
    completion: str = ""

    @property
    def expected(self) -> str:
        return expected_verdict(self.label, self.presented)

    @property
    def correct(self) -> bool:
        return self.verdict == self.expected

    @property
    def picked(self) -> int | str | None:
        """The source response the verdict names (1 or 2), "tie", or None when unparsed."""
        return self.presented[int(self.verdict) - 1] if self.verdict in ("1", "2") else self.verdict

    @property
    def category(self) -> str | None:
        """VL-RewardBench's `category`, MM-RLHF's first keyword (the official scorer's category), a
        built dataset's `source`; None when the judgement has none."""
        keywords = self.extra.get("keywords")
        return self.extra.get("category") or (keywords[0] if keywords else None) or self.extra.get("source") or None

    def to_json(self) -> dict:
        return {"id": self.id, "label": self.label, "presented": list(self.presented), "expected": self.expected,
                "verdict": self.verdict, "correct": self.correct, **self.extra, "completion": self.completion}

    @classmethod
    def from_json(cls, record: dict, benchmark: str | None = None) -> Judgement | None:
        """The judgement a results.jsonl line holds, or None; with `benchmark`, one that lacks a field
        every judgement of that benchmark carries (`REQUIRED_EXTRA`) is None too."""
        presented = record.get("presented")
        if not (isinstance(record.get("id"), str) and record.get("label") in ANSWERS
                and isinstance(presented, list) and len(presented) == 2 and all(map(_is_int, presented))
                and sorted(presented) == [1, 2] and record.get("verdict", "") in VERDICTS
                and isinstance(record.get("completion"), str)):
            return None
        extra = {name: value for name, value in record.items() if name in _EXTRA_TYPES}  # in the order written
        if not (all(isinstance(value, _EXTRA_TYPES[name]) for name, value in extra.items())
                and _is_texts(extra.get("keywords", []))
                and all(name in extra for name in REQUIRED_EXTRA.get(benchmark, ()))):
            return None
        judgement = cls(record["id"], record["label"], tuple(presented), record["verdict"], extra, record["completion"])
        consistent = (_same(record.get("expected"), judgement.expected)
                      and _same(record.get("correct"), judgement.correct))
        return judgement if consistent else None


# --- best-of-n ---------------------------------------------------------------------------------

def normalize_answer(text: str) -> str:
    """Final answers compare equal when equal after: lower-casing, dropping `$`, collapsing
    whitespace, and trimming surrounding spaces and one trailing period."""
    text = re.sub(r"\s+", " ", text.replace("$", "").strip().lower())
    return text[:-1].rstrip() if text.endswith(".") else text


@dataclass(frozen=True)
class Match:
    shown: tuple[int, int]  # candidate indices as Response 1 and Response 2
    verdict: str | None  # as parsed: "1", "2", "tie" or None
    winner: int
    by: str  # one of DECIDED_BY: "coin" and "too-long" are seeded coins

    @classmethod
    def from_json(cls, match: object, candidates: int) -> Match | None:
        """The match a pick records among `candidates`, or None when it is not one this version plays."""
        if not isinstance(match, dict):
            return None
        shown, verdict, winner, by = (match.get(key) for key in ("shown", "verdict", "winner", "by"))
        if not (isinstance(shown, list) and len(shown) == 2 and all(map(_is_int, shown)) and shown[0] != shown[1]
                and all(0 <= index < candidates for index in shown) and winner in shown and _is_int(winner)
                and verdict in VERDICTS and by in DECIDED_BY):
            return None
        # the judge decides exactly when its verdict names a position, and then picks that one
        named = verdict in ("1", "2")
        if (by == "judge") != named or (named and winner != shown[int(verdict) - 1]) or (by == "too-long" and verdict):
            return None
        return cls(tuple(shown), verdict, winner, by)


@dataclass(frozen=True)
class Pick:
    """One best-of-n question: its N candidates, the matches played, the candidate picked, and with a
    gold `answer` whether the pick, the first sample, the majority vote and any candidate are right."""

    id: str
    candidates: list[str]
    winner_index: int
    matches: list[Match]
    final_answers: list[str]  # per candidate: its last \boxed{} content (else its text), normalised
    majority: str  # the most frequent final answer, the earliest on a tie
    scores: list[int] | None = None  # round-robin's r_i
    answer: str | None = None

    @property
    def unparsed(self) -> int:
        return sum(match.by == "coin" for match in self.matches)

    @property
    def too_long(self) -> int:
        return sum(match.by == "too-long" for match in self.matches)

    def right(self, index: int) -> bool | None:
        """Whether candidate `index`'s final answer is the gold one; None without a gold answer."""
        return None if self.answer is None else self.final_answers[index] == normalize_answer(self.answer)

    def correctness(self) -> dict[str, bool] | None:
        """`<name>_correct` of the pick, the first sample, the majority vote and any candidate; None
        without a gold answer."""
        if self.answer is None:
            return None
        gold = normalize_answer(self.answer)
        return {"pick_correct": self.right(self.winner_index), "first_correct": self.right(0),
                "majority_correct": self.majority == gold, "any_correct": gold in self.final_answers}

    def to_json(self) -> dict:
        record = {"id": self.id, "candidates": self.candidates, "winner_index": self.winner_index,
                  "winner": self.candidates[self.winner_index],
                  "matches": [{"shown": list(m.shown), "verdict": m.verdict, "winner": m.winner, "by": m.by}
                              for m in self.matches],
                  "matches_played": len(self.matches), "unparsed": self.unparsed, "too_long": self.too_long,
                  "final_answers": self.final_answers, "majority": self.majority}
        if self.scores is not None:
            record["scores"] = self.scores
        if self.answer is not None:
            record.update(answer=self.answer, **self.correctness())
        return record

    @classmethod
    def from_json(cls, record: dict) -> Pick | None:
        """The pick a picks.jsonl line holds, or None. `too_long` may be absent (versions before it)."""
        candidates, winner = record.get("candidates"), record.get("winner_index")
        if not (isinstance(record.get("id"), str) and _is_texts(candidates) and candidates and _is_int(winner)
                and 0 <= winner < len(candidates) and record.get("winner") == candidates[winner]
                and _is_texts(record.get("final_answers")) and len(record["final_answers"]) == len(candidates)
                and isinstance(record.get("majority"), str) and isinstance(record.get("matches"), list)
                and isinstance(record.get("answer", ""), str)):
            return None
        scores = record.get("scores")
        if scores is not None and not (isinstance(scores, list) and len(scores) == len(candidates)
                                       and all(map(_is_int, scores))):
            return None
        matches = [Match.from_json(match, len(candidates)) for match in record["matches"]]
        if None in matches:
            return None
        pick = cls(record["id"], candidates, winner, matches, record["final_answers"], record["majority"], scores,
                   record.get("answer"))
        derived = {"matches_played": len(matches), "unparsed": pick.unparsed, "too_long": pick.too_long,
                   **(pick.correctness() or {})}
        written = {"too_long": 0} | record  # a log from before too-long matches has no count of them
        return pick if all(_same(written.get(name), value) for name, value in derived.items()) else None


# --- difficulty ----------------------------------------------------------------------------------

DIFFICULTY_LOG = "difficulty.jsonl"
PASS_REWARD = "preference"  # a sample passes when this reward pays 1: the rollout judged the pair right
FORMAT_REWARD = "format"


def image_digest(data: bytes) -> str:
    """xxh3_128 of an image's bytes then a NUL byte: the build's `image_digest` (builders/keys.py), which
    the build already holds for every row; a test keeps the two equal."""
    hasher = xxhash.xxh3_128(data)
    hasher.update(b"\x00")
    return hasher.hexdigest()


def row_digest(images: list[bytes], template: str, question: str, response_1: str, response_2: str,
               answer: str) -> str:
    """What a row shows the model and what grades it, as one xxh3_128: the build's `digest` (builders/keys.py:
    the texts, each followed by NUL) of each image's `image_digest`, then the template, question, responses
    in presented order, and label. Equal digests: the same prompt, images and label, so the same pass rate."""
    parts = [*map(image_digest, images), template, question, response_1, response_2, answer]
    return xxhash.xxh3_128_hexdigest("\x00".join(parts).encode("utf-8") + b"\x00")


def _is_rewards(value: object) -> bool:
    """{name: one finite number per sample}, the pass reward among them, for one or more samples."""
    passed = value.get(PASS_REWARD) if isinstance(value, dict) else None
    samples = len(passed) if isinstance(passed, list) else 0
    return (samples >= 1
            and all(isinstance(name, str) and isinstance(per_sample, list) and len(per_sample) == samples
                    and all(isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r)
                            for r in per_sample) for name, per_sample in value.items()))


@dataclass(frozen=True)
class DifficultyRow:
    """One row judged `samples` times with the recipe's sampling: each recipe reward per sample, graded
    by the reward functions the trainer uses (the completions themselves are not kept: 40k rows x 8
    would be gigabytes). A sample passes when the preference reward pays 1; `digest` is the
    `row_digest` of what was measured."""

    id: str
    source: str | None
    digest: str
    rewards: dict[str, list[float]]  # reward name -> one value per sample
    requests: int  # the requests its samples took: 1 where the server honours `n`

    @property
    def samples(self) -> int:
        return len(self.rewards[PASS_REWARD])

    @property
    def passes(self) -> int:
        return sum(reward == 1 for reward in self.rewards[PASS_REWARD])

    @property
    def pass_rate(self) -> float:
        return self.passes / self.samples

    @property
    def format_rate(self) -> float | None:
        """The share of samples the format reward pays (its mean); None when the recipe has none."""
        paid = self.rewards.get(FORMAT_REWARD)
        return None if paid is None else sum(paid) / self.samples

    def to_json(self) -> dict:
        return {"id": self.id, "source": self.source, "digest": self.digest, "samples": self.samples,
                "passes": self.passes, "pass_rate": self.pass_rate, "format_rate": self.format_rate,
                "rewards": self.rewards, "requests": self.requests}

    @classmethod
    def from_json(cls, record: dict) -> DifficultyRow | None:
        """The row a difficulty.jsonl line holds, or None (a field missing or of another type, or a
        count that does not follow from the rewards)."""
        if not (isinstance(record.get("id"), str) and isinstance(record.get("source", ""), (str, type(None)))
                and isinstance(record.get("digest"), str) and _is_rewards(record.get("rewards"))
                and _is_int(record.get("requests")) and record["requests"] >= 1):
            return None
        row = cls(record["id"], record.get("source"), record["digest"], record["rewards"], record["requests"])
        derived = {"samples": row.samples, "passes": row.passes, "pass_rate": row.pass_rate,
                   "format_rate": row.format_rate}
        return row if all(_same(record.get(name), value) for name, value in derived.items()) else None


@dataclass(frozen=True)
class DifficultyRun:
    """A difficulty run as `read_difficulty` finds it: run.json's identity, and its rows by id."""

    folder: Path
    identity: dict  # the options a row depends on, `dataset` (the fingerprint) among them
    rows: dict[str, DifficultyRow]
    lines_left_out: int  # lines that are not rows of this run (cut short, edited, another K)

    @property
    def dataset(self) -> dict:
        """What was measured: {"split", "shards": {path: xxh3_128}} for a folder, {"split", "hub_id",
        "revision"} for a Hub dataset (rl/difficulty.py `dataset_fingerprint`)."""
        return self.identity["dataset"]

    @property
    def samples(self) -> int:
        return self.identity["samples"]

    @property
    def pass_rates(self) -> dict[str, float]:
        return {row_id: row.pass_rate for row_id, row in self.rows.items()}


def read_difficulty(folder: Path) -> DifficultyRun:
    """A difficulty run folder: run.json and the rows of difficulty.jsonl (a line that is not one of this
    run's rows is counted and left out, never fatal; a repeated id keeps its first row). One line when the
    folder holds no run."""
    log, stored = folder / DIFFICULTY_LOG, folder / "run.json"
    if not log.is_file():
        raise UserError(f"{folder} holds no {DIFFICULTY_LOG}: not a run of `critic-data difficulty`")
    try:  # a regular file only: reading a FIFO would wait for a writer forever
        identity = json.loads(stored.read_text(encoding="utf-8")) if stored.is_file() else None
    except (OSError, ValueError, RecursionError):
        identity = None
    rewards = identity.get("rewards") if isinstance(identity, dict) else None
    if not (isinstance(identity, dict) and isinstance(identity.get("dataset"), dict)
            and _is_int(identity.get("samples")) and 2 <= identity["samples"] <= MAX_SAMPLES
            and isinstance(rewards, list)
            and all(isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)
                    and isinstance(pair[1], (int, float)) and not isinstance(pair[1], bool) for pair in rewards)):
        raise UserError(f"{stored} is missing or unreadable, so what the run in {folder} measured is unknown; "
                        "measure again in a new --out")
    names = {name for name, _ in rewards}
    rows, left_out = {}, 0
    for _, _, line in json_lines(log):
        row = DifficultyRow.from_json(line) if isinstance(line, dict) else None
        if row is None or row.samples != identity["samples"] or set(row.rewards) != names or row.id in rows:
            left_out += 1
        else:
            rows[row.id] = row
    return DifficultyRun(folder, identity, rows, left_out)
