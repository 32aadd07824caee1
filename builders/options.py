"""Build options: one dataclass serves the CLI, Python callers and the manifest.

Each field is the option's name, type and default, and its metadata the help text and how the
CLI takes it (`cli`: the flag, a CLI type and default where the command line writes the value
otherwise: `--source a,b`, `--input SOURCE=DIR`, `--max-shard-size 500MB`). `__post_init__`
turns those forms into the field's own and checks every value, so a Python caller and the
command line are held to the same rules. Kept free of heavy imports: the CLI builds its command
from here.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from critic_data import UserError, option
from critic_data.files import published_path
from critic_data.schemas import BENCHMARK_NAMES, SOURCE_NAMES
from critic_data.schemas.prompts import PROMPT_STYLES

DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own decompression-bomb threshold
IMAGE_CHECKS = ("structure", "decode")  # see builders/images.py
VLFEEDBACK_ASPECTS = ("Helpfulness", "Ethical Considerations", "Visual Faithfulness")
_SIZE_UNITS = {"": 1, "b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30}


@dataclass
class BuildOptions:
    """Everything `critic-data build` needs; checked on creation."""

    out: Path = option(help="Output dataset folder (Hub layout).")
    sources: tuple[str, ...] = option(("vlfeedback",), f"Source(s) to build: {', '.join(SOURCE_NAMES)}, or all. "
                                      "Repeatable or comma-separated.", flag="--source", type=list[str], required=True,
                                      metavar="|".join((*SOURCE_NAMES, "all")))
    # source name -> local snapshot folder; a source without one is fetched from the Hub
    inputs: dict[str, Path] = option(help="Local snapshot folder: DIR for one source, SOURCE=DIR for several. "
                                     "Without it the source is fetched from the Hub.", factory=dict, flag="--input",
                                     type=list[str], cli_default=[], metavar="dir|source=dir")
    image_root: Path | None = option(None, "Folder of COCO train2017 images (llava_rlhf).")
    revision: str | None = option(None, "Hub revision to fetch when no --input is given.")
    seed: int = option(0, "Seed for the presented order and the split.")
    margin: float = option(0.6, "Keep a scored pair when its score gap exceeds this.")
    pairs_per_prompt: str = option("max-gap", "max-gap: the widest pair per row; all: every pair over the margin.",
                                   metavar="max-gap|all")
    aspects: tuple[str, ...] = option(VLFEEDBACK_ASPECTS, "VLFeedback rating aspects averaged into a score (repeatable "
                                      "or comma-separated).", type=list[str], cli_default=list(VLFEEDBACK_ASPECTS),
                                      metavar="aspect,...")
    keep_ties: int | str = option(0, "Keep up to N tied pairs per source, or all of them, labelled 'tie' (default 0: "
                                  "drop ties).", type=str, cli_default="0", metavar="count|all")
    prompt_style: str = option("critic-data", "Critic prompt body: critic-data (ours) or llava-critic (LLaVA-Critic's "
                               "pairwise judge template, the official RL set's); both end in the official think/boxed "
                               "instruction.", metavar="|".join(PROMPT_STYLES))
    balance_length: bool = option(False, "Per source and split, drop the fewest pairs (each decided in input order) so "
                                  "that the pairs whose better response is the longer one (more characters) and those "
                                  "whose better response is the shorter one differ by at most √n, n being their sum "
                                  "(the longer-better share is 50% ± 50%/√n: as even as n fair coin flips come out two "
                                  "times in three; equal lengths count as neither). Dropped pairs are counted as "
                                  "pairs_filtered.length_balance.")
    # None: resolved in __post_init__ (the manifest records the value used)
    test_size: float | None = option(None, "Fraction of (image, question) groups in the test split. Default: 0.02; 0 "
                                     "with --prompt-style llava-critic, the official RL set's, which LLaVA-Critic-R1 "
                                     "trained on whole.", show_default=False)
    max_shard_bytes: int = option(500 * 1024 * 1024, "Roll over to a new parquet shard past this size.",
                                  flag="--max-shard-size", type=str, cli_default="500MB", metavar="size")
    max_image_pixels: int = option(DEFAULT_MAX_PIXELS, "Reject images with more pixels than this.")
    image_check: str = option("structure", "structure: headers parse and the data is complete (fast); decode: also "
                              "decode every image.", metavar="|".join(IMAGE_CHECKS))
    format: str = option("trl", "trl: conversational prompt for TRL (default); easyr1: what LLaVA-Critic-R1's EasyR1 "
                         "fork reads (image, question, answer).", flag="--format",
                         metavar="trl|easyr1")
    # curation (builders/curation.py): pairs dropped by measurement against a benchmark or a model
    decontaminate: dict[str, Path | None] = option(
        help=f"Drop the pairs a critic benchmark holds ({', '.join(BENCHMARK_NAMES)}): NAME fetches it from the Hub at "
        "the revision critic-data pins, NAME=DIR reads a local snapshot. Repeatable. A pair is dropped when its "
        "question matches an item's (case, spacing, Unicode form) and its image is a copy (re-encoded, resized).",
        factory=dict, type=list[str], cli_default=[], metavar="name[=dir]")
    image_matches: str = option("bytes", "With --decontaminate, how pairs whose image alone a benchmark holds are "
                                "found: bytes (identical images) or near (re-encoded and resized copies too; slower).",
                                metavar="bytes|near")
    drop_image_matches: bool = option(False, "With --decontaminate, also drop the pairs whose image (under another "
                                      "question) a benchmark holds; they are counted either way.")
    difficulty: Path | None = option(None, "A `critic-data difficulty` run on this build's rows: keep the pairs whose "
                                     "measured pass rate is within --pass-rate (unmeasured pairs are kept and "
                                     "counted).", metavar="run")
    pass_rate: tuple[float, float] | None = option(
        None, "With --difficulty, the closed band of pass rates kept, LOW:HIGH. Default: 1/K:1-1/K for the run's K "
        "samples, which drops the rows whose K samples all pass or all fail (zero advantage in GRPO).",
        type=str, cli_default=None, metavar="low:high", show_default=False)
    overwrite: bool = option(False, "Replace --out if it holds a previous critic-data build (and nothing else).")
    num_proc: int = option(1, "Worker processes that read, check and pair the input (the output does not depend on "
                           "it).", cli_default=os.cpu_count() or 1, manifest=False)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.sources = _source_names(self.sources)
        if isinstance(self.inputs, (list, tuple)):  # the command line's --input values
            self.inputs = _resolve_inputs(self.sources, self.inputs)
        self.inputs = {name: Path(path) for name, path in self.inputs.items()}
        if self.image_root is not None:
            self.image_root = Path(self.image_root)
        # each aspect once, as --source: an aspect named twice would silently count double in the mean
        self.aspects = tuple(dict.fromkeys(_split_names([self.aspects] if isinstance(self.aspects, str)
                                                        else self.aspects)))
        if isinstance(self.max_shard_bytes, str):
            self.max_shard_bytes = _parse_size(self.max_shard_bytes)
        if self.num_proc < 1:
            raise UserError(f"--num-proc must be at least 1, not {self.num_proc}")
        if self.pairs_per_prompt not in ("max-gap", "all"):
            raise UserError(f"--pairs-per-prompt must be 'max-gap' or 'all', not {self.pairs_per_prompt!r}")
        if self.test_size is None:  # the official composition (README) is then one command, its split included
            self.test_size = 0.0 if self.prompt_style == "llava-critic" else 0.02
        if not 0.0 <= self.test_size < 1.0:
            raise UserError(f"--test-size must be in [0, 1), not {self.test_size}")
        if self.image_check not in IMAGE_CHECKS:
            raise UserError(f"--image-check must be one of {', '.join(IMAGE_CHECKS)}, not {self.image_check!r}")
        if self.format not in ("trl", "easyr1"):
            raise UserError(f"--format must be 'trl' or 'easyr1', not {self.format!r}")
        if not (math.isfinite(self.margin) and self.margin >= 0):  # nan would switch the filter off
            raise UserError(f"--margin must be a finite number >= 0, not {self.margin}")
        if isinstance(self.keep_ties, str) and self.keep_ties.strip().isascii() and self.keep_ties.strip().isdigit():
            self.keep_ties = int(self.keep_ties)
        if self.keep_ties != "all" and not (isinstance(self.keep_ties, int) and self.keep_ties >= 0):
            raise UserError(f"--keep-ties must be a count >= 0 or 'all', not {self.keep_ties!r}")
        if not isinstance(self.balance_length, bool):  # "no" would switch it on
            raise UserError(f"--balance-length is on or off (True or False), not {self.balance_length!r}")
        if self.prompt_style not in PROMPT_STYLES:
            raise UserError(f"--prompt-style must be one of {', '.join(PROMPT_STYLES)}, not {self.prompt_style!r}")
        self._check_curation()
        self._refuse_paths_not_utf8()
        if self.max_shard_bytes < 1:
            raise UserError(f"--max-shard-size must be more than 0 bytes, not {self.max_shard_bytes}")
        if self.max_image_pixels < 1:
            raise UserError(f"--max-image-pixels must be at least 1, not {self.max_image_pixels}")
        if self.revision is not None:  # refused here, before any request: "../x" would be a path in the Hub's URL
            from critic_data.hub_client import check_revision  # raises UserError

            check_revision(self.revision, branch=False)
        unknown = set(self.aspects) - set(VLFEEDBACK_ASPECTS)
        if not self.aspects or unknown:
            raise UserError(f"--aspects must name some of {', '.join(VLFEEDBACK_ASPECTS)}")

    def _check_curation(self) -> None:
        if isinstance(self.decontaminate, (list, tuple)):  # the command line's NAME or NAME=DIR values
            self.decontaminate = _benchmarks(self.decontaminate)
        self.decontaminate = {name: None if path is None else Path(path) for name, path in self.decontaminate.items()}
        unknown = sorted(set(self.decontaminate) - set(BENCHMARK_NAMES))
        if unknown:
            raise UserError(f"--decontaminate {unknown[0]!r} is not a benchmark critic-data knows; name one of "
                            f"{', '.join(BENCHMARK_NAMES)}")
        if self.image_matches not in ("bytes", "near"):
            raise UserError(f"--image-matches must be 'bytes' or 'near', not {self.image_matches!r}")
        if not isinstance(self.drop_image_matches, bool):
            raise UserError(f"--drop-image-matches is on or off (True or False), not {self.drop_image_matches!r}")
        if self.difficulty is not None:
            self.difficulty = Path(self.difficulty)
        if isinstance(self.pass_rate, str):
            self.pass_rate = _band(self.pass_rate)
        if self.pass_rate is not None:
            # + 0.0: a bound of -0 is recorded as 0
            low, high = self.pass_rate = tuple(float(bound) + 0.0 for bound in self.pass_rate)
            if not 0.0 <= low <= high <= 1.0:  # also refuses nan
                raise UserError(f"--pass-rate {low:g}:{high:g} is not a band within 0:1 (LOW <= HIGH)")
            if self.difficulty is None:
                raise UserError("--pass-rate selects rows by a difficulty run's pass rates; name the run with "
                                "--difficulty RUN (made by `critic-data difficulty`)")

    def _refuse_paths_not_utf8(self) -> None:
        for name, path in [("--out", self.out), *(("--input", p) for p in self.inputs.values()),
                           *([("--image-root", self.image_root)] if self.image_root else []),
                           *(("--decontaminate", p) for p in self.decontaminate.values() if p is not None),
                           *([("--difficulty", self.difficulty)] if self.difficulty else [])]:
            try:
                str(path).encode("utf-8")
            except UnicodeEncodeError:  # build.json and the card record it: they are UTF-8 text
                raise UserError(f"{name} {str(path)!r} is not valid UTF-8; rename the folder") from None

    def template(self) -> str:
        """The id of the critic prompt template every row of this build uses."""
        plain, with_ties = PROMPT_STYLES[self.prompt_style]
        return with_ties if self.keep_ties else plain

    def ties_allowed(self, kept: int) -> bool:
        """Whether one more tied pair may be kept, `kept` being kept already."""
        return self.keep_ties == "all" or kept < self.keep_ties

    @staticmethod
    def length_tolerance(pairs: int) -> int:
        """--balance-length: how far apart the pairs whose better response is the longer one and
        those whose better response is the shorter one may be, `pairs` being their sum: √pairs
        (rounded down), the gap `pairs` fair coin flips stay within about two times in three (one
        standard deviation). The longer-better share is then 50% ± 50%/√pairs (±5% at 100 pairs,
        ±1.6% at 1,000, ±0.5% at 10,000). A tolerance that is a fixed share of the pairs (2%)
        would leave 51% at any size, but drop ~12% of the pairs of a source of 800 pairs that
        has no length bias at all, for its chance ups and downs (√n: ~3%; see decide.Decider)."""
        return math.isqrt(pairs)

    def to_manifest(self) -> dict:
        """The resolved options that shape the data, JSON-ready (paths as `published_path` writes
        them: build.json is published with the data)."""
        resolved = {name: value for name, value in asdict(self).items()
                    if self.__dataclass_fields__[name].metadata["cli"].get("manifest", True)}
        resolved["out"] = published_path(self.out)
        resolved["inputs"] = {name: published_path(path) for name, path in self.inputs.items()}
        resolved["image_root"] = None if self.image_root is None else published_path(self.image_root)
        resolved["decontaminate"] = {name: None if path is None else published_path(path)
                                     for name, path in self.decontaminate.items()}
        resolved["difficulty"] = None if self.difficulty is None else published_path(self.difficulty)
        resolved["pass_rate"] = None if self.pass_rate is None else list(self.pass_rate)
        resolved["sources"] = list(self.sources)
        resolved["aspects"] = list(self.aspects)
        return resolved


def _split_names(values) -> list[str]:
    return [name.strip() for value in values for name in str(value).split(",") if name.strip()]


def _source_names(values) -> tuple[str, ...]:
    """`--source` values: names, repeatable or comma-separated, `all` for every source; each once."""
    names = list(dict.fromkeys(_split_names([values] if isinstance(values, str) else values)))
    if "all" in names:
        names = list(SOURCE_NAMES)
    unknown = [name for name in names if name not in SOURCE_NAMES]
    if unknown or not names:
        raise UserError(f"unknown source {', '.join(unknown) or '(none)'}; choose from {', '.join(SOURCE_NAMES)} or "
                        "all")
    return tuple(names)


def _resolve_inputs(sources: tuple[str, ...], inputs) -> dict[str, Path]:
    """`--input DIR` for a single source, or `--input SOURCE=DIR` (repeatable)."""
    resolved: dict[str, Path] = {}
    for value in inputs:
        name, sep, folder = str(value).partition("=")
        if sep and name in sources:
            source, path = name, Path(folder)
        elif len(sources) == 1 and not (sep and name.isidentifier() and not Path(value).exists()):
            source, path = sources[0], Path(value)
        else:
            raise UserError(f"--input {value!r}: with several sources write --input SOURCE=DIR, SOURCE one of "
                            f"{', '.join(sources)}")
        if source in resolved:
            raise UserError(f"--input given twice for {source}: {resolved[source]} and {path}; pass one folder per "
                            "source")
        resolved[source] = path
    return resolved


def _benchmarks(values) -> dict[str, Path | None]:
    """`--decontaminate NAME` (fetched from the Hub) or `NAME=DIR` (a local snapshot), each name once."""
    resolved: dict[str, Path | None] = {}
    for value in values:
        name, sep, folder = str(value).partition("=")
        if name in resolved:
            raise UserError(f"--decontaminate names {name} twice; pass each benchmark once")
        if sep and not folder:
            raise UserError(f"--decontaminate {value!r} names no folder; write {name}=DIR, or {name} to fetch it")
        resolved[name] = Path(folder) if sep else None
    return resolved


def _band(text: str) -> tuple[float, float]:
    """`--pass-rate LOW:HIGH`: two numbers."""
    low, sep, high = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return float(low), float(high)
    except ValueError:
        raise UserError(f"--pass-rate {text!r} is not LOW:HIGH; write e.g. 0.125:0.875") from None


def _parse_size(text: str) -> int:
    # ASCII digits only ("²" is a digit to str.isdigit, not to float), and few enough for a float
    size = re.fullmatch(r"\s*(\d{1,15}(?:\.\d{0,15})?|\.\d{1,15})\s*([kmg]?b)?\s*", text, re.IGNORECASE | re.ASCII)
    if size is None:
        raise UserError(f"--max-shard-size {text!r} is not a size; write e.g. 500MB or 2GB")
    return int(float(size[1]) * _SIZE_UNITS[(size[2] or "").lower()])
