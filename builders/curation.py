"""Curation: the pairs a build drops by measuring them against something outside its sources.

- Decontamination (`--decontaminate NAME[=DIR]`, the rule in decontaminate.py): a pair whose
  question and image a critic benchmark holds is dropped as `contaminated`; one whose image alone
  it holds is counted, and dropped as `image_match` with `--drop-image-matches`.
- Difficulty selection (`--difficulty RUN --pass-rate LOW:HIGH`): a pair that `critic-data
  difficulty` measured in RUN is kept when its pass rate is within the closed band, else dropped as
  `too_easy` (above it) or `too_hard` (below it); a pair the run did not measure (another split, a
  row the run left out) is kept, and counted as unmeasured.

The ordered step (decide.py) asks `Curation.contaminated` first, for every candidate pair: a copy of
a benchmark item is dropped whatever else holds of it. It asks `Curation.outside_band` once a pair
is neither a dropped tie nor a duplicate, as the measured build would have kept it. Each drop is
counted under its rule among the source's `pairs_filtered` (so formed = kept + filtered +
duplicates still holds), and build.json records what each part found (`record`: keys
`contamination` and `difficulty`).

A run measured on another dataset is refused in one line: up front when the run recorded the
measured build's identity (`critic_data.manifest.dataset_identity`: options less curation, inputs'
content) and it is not this build's; at the end when any row the run measured is not a pair this
build formed (a Hub dataset's run records no identity).

Builders do not import rl/: the CLI hands in eval's benchmark reader and the difficulty run's
reader (`Readers`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from critic_data import UserError
from critic_data.builders.decontaminate import CONTAMINATED, Decontamination, TrainingPair, load_benchmark
from critic_data.builders.options import BuildOptions
from critic_data.builders.prepare import Candidate
from critic_data.files import published_path

IMAGE_MATCH, TOO_EASY, TOO_HARD = "image_match", "too_easy", "too_hard"  # pairs_filtered rules (and contaminated)


class Readers(NamedTuple):
    benchmark_items: Callable  # critic_data.rl.evaluate.benchmark_items
    read_difficulty: Callable  # critic_data.rl.records.read_difficulty


class PassRates:
    """A difficulty run's pass rate per measured row id, the band kept, and what this build did with them."""

    def __init__(self, run, band: tuple[float, float]):
        self.run, self.band = run, band
        self.rates = run.pass_rates
        self.met: set[str] = set()  # measured row ids this build formed a pair of
        self.decided: Counter = Counter()  # TOO_EASY, TOO_HARD, "unmeasured"
        self.passes: Counter = Counter()  # measured pairs checked, by pass count (out of K)
        self.passes_kept: Counter = Counter()

    def measured_id(self, candidate: Candidate) -> str | None:
        """The id the run measured this pair under: the pair's own, or the id made from its exact key that
        a build gives a pair whose own id an earlier one took (decide.Decider._unique_id)."""
        for row_id in (candidate.key_id, candidate.id):
            if row_id in self.rates:
                return row_id
        return None

    def meet(self, candidates: list[Candidate]) -> None:
        """Note the measured rows among a chunk's candidates (all of them, whatever is decided of them)."""
        self.met.update(row_id for candidate in candidates if (row_id := self.measured_id(candidate)) is not None)

    def outside_band(self, candidate: Candidate) -> str | None:
        row_id = self.measured_id(candidate)
        if row_id is None:
            self.decided["unmeasured"] += 1
            return None
        rate, (low, high) = self.rates[row_id], self.band
        rule = TOO_HARD if rate < low else TOO_EASY if rate > high else None
        passes = self.run.rows[row_id].passes
        self.passes[passes] += 1
        if rule is None:
            self.passes_kept[passes] += 1
        else:
            self.decided[rule] += 1
        return rule

    def record(self) -> dict:
        samples = self.run.samples
        identity = self.run.identity
        return {"run": published_path(self.run.folder), "model": identity.get("model"),
                "recipe": identity.get("recipe"), "split": self.run.dataset.get("split"), "samples": samples,
                "band": list(self.band), "rows_measured": len(self.rates),
                "pairs_kept_measured": sum(self.passes_kept.values()), "pairs_too_easy": self.decided[TOO_EASY],
                "pairs_too_hard": self.decided[TOO_HARD], "pairs_unmeasured": self.decided["unmeasured"],
                # measured pairs that reached the band, and those it kept, by passes out of `samples`
                "pass_count_histogram": [self.passes[k] for k in range(samples + 1)],
                "pass_count_histogram_kept": [self.passes_kept[k] for k in range(samples + 1)]}


class Curation:
    """What the ordered step asks of each candidate, and what build.json records of the answers."""

    def __init__(self, decontamination: Decontamination | None, pass_rates: PassRates | None):
        self.decontamination, self.pass_rates = decontamination, pass_rates

    @classmethod
    def open(cls, options: BuildOptions, readers: Readers | None, identity: dict) -> Curation | None:
        """The curation `options` ask for (None: none), its benchmarks read and its run checked against
        this build's `identity` (`dataset_identity`)."""
        if not options.decontaminate and options.difficulty is None:
            return None
        if readers is None:
            raise TypeError("a build that curates needs `readers` (critic_data.builders.curation.Readers)")
        decontamination = None
        if options.decontaminate:
            indices = [load_benchmark(name, path, readers.benchmark_items, options.image_matches == "near")
                       for name, path in options.decontaminate.items()]
            decontamination = Decontamination(indices, options.drop_image_matches)
        pass_rates = None
        if options.difficulty is not None:
            run = readers.read_difficulty(options.difficulty)  # one line when it is no run
            if not run.rows:  # a selection by nothing would keep every row and look like one that worked
                raise UserError(f"--difficulty {options.difficulty}: none of its lines is a row this version can read "
                                f"({run.lines_left_out} left out); measure again with `critic-data difficulty`")
            _refuse_another_dataset(run, identity)
            band = options.pass_rate or (1 / run.samples, 1 - 1 / run.samples)
            pass_rates = PassRates(run, band)
        return cls(decontamination, pass_rates)

    def meet(self, candidates: list[Candidate]) -> None:
        """A chunk's candidates, before any is decided: the run's rows this build forms are noted
        (`refuse_rows_not_formed`)."""
        if self.pass_rates is not None:
            self.pass_rates.meet(candidates)

    def contaminated(self, candidate: Candidate, image: Callable[[], bytes], thumbnail: bytes | None) -> str | None:
        """The rule that drops a candidate as a benchmark's copy (None: kept); every candidate is asked."""
        if self.decontamination is None:
            return None
        question_key, image_digest = candidate.probe
        found = self.decontamination.check(TrainingPair(key=question_key, digest=image_digest, image=image,
                                                        known_thumbnail=thumbnail))
        if found is None:
            return None
        return CONTAMINATED if found.kind == CONTAMINATED else IMAGE_MATCH

    def outside_band(self, candidate: Candidate) -> str | None:
        """The rule that drops a candidate by its measured pass rate (None: kept, or not measured)."""
        return None if self.pass_rates is None else self.pass_rates.outside_band(candidate)

    def refuse_rows_not_formed(self, out: Path) -> None:
        """End of the build: a run whose measured rows this build did not all form measured another dataset."""
        if self.pass_rates is None:
            return
        missing = sorted(set(self.pass_rates.rates) - self.pass_rates.met)
        if missing:
            run = self.pass_rates.run
            raise UserError(f"--difficulty {run.folder}: {len(missing)} of the {len(run.rows)} rows it measured are "
                            f"not rows of this build (such as {missing[0]}), so it measured another dataset; measure "
                            f"this build's rows with `critic-data difficulty`; nothing was written to {out}")

    def record(self) -> dict:
        """build.json's keys for this curation."""
        recorded = {}
        if self.decontamination is not None:
            recorded["contamination"] = self.decontamination.record()
        if self.pass_rates is not None:
            recorded["difficulty"] = self.pass_rates.record()
        return recorded


def _refuse_another_dataset(run, identity: dict) -> None:
    """One line when the run recorded the identity of the build it measured and it is not `identity`."""
    measured = run.dataset.get("build")
    if measured is None or measured == identity:
        return
    differs = []
    if isinstance(measured, dict) and isinstance(measured.get("options"), dict):  # else an edited run.json
        differs = [f"option {name}" for name in sorted({*measured["options"], *identity["options"]}, key=str)
                   if measured["options"].get(name) != identity["options"].get(name)]
        if measured.get("inputs") != identity["inputs"]:
            differs.append("the inputs' files")
    raise UserError(f"--difficulty {run.folder} measured another dataset (it differs from this build in "
                    f"{', '.join(differs[:3]) or 'what it was built from'}); build with the options and inputs of "
                    "the dataset it measured, or measure this build's rows with `critic-data difficulty`")

