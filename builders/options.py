"""Build options: one dataclass serves the CLI, Python callers and the manifest."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from critic_data.builders.images import DEFAULT_MAX_PIXELS, IMAGE_CHECKS
from critic_data.rl.prompts import PROMPT_STYLES

VLFEEDBACK_ASPECTS = ("Helpfulness", "Ethical Considerations", "Visual Faithfulness")


@dataclass
class BuildOptions:
    out: Path
    sources: tuple[str, ...] = ("vlfeedback",)
    # source name -> local snapshot folder; a source without one is fetched from the Hub
    inputs: dict[str, Path] = field(default_factory=dict)
    image_root: Path | None = None  # COCO train2017 folder for llava_rlhf
    revision: str | None = None  # Hub revision when fetching
    seed: int = 0
    # pairing (scored sources)
    margin: float = 0.6  # keep a pair when its score gap exceeds this
    pairs_per_prompt: str = "max-gap"  # "max-gap": the one widest pair per row; "all"
    aspects: tuple[str, ...] = VLFEEDBACK_ASPECTS
    keep_ties: int | str = 0  # keep up to this many ties per source ("all": every one), labelled "tie"
    prompt_style: str = "critic-data"  # the critic prompt's body: see rl/prompts.py
    # per source and split, drop the fewest pairs that keep the better response the longer one in
    # half the pairs, to within `length_tolerance` (see pipeline._Decider)
    balance_length: bool = False
    # split and output
    test_size: float = 0.02
    max_shard_bytes: int = 500 * 1024 * 1024
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    image_check: str = "structure"  # or "decode": see builders/images.py
    format: str = "trl"  # "trl": conversational prompt + columns; "easyr1": flat question/answer/images
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.inputs = {name: Path(path) for name, path in self.inputs.items()}
        if self.image_root is not None:
            self.image_root = Path(self.image_root)
        if self.pairs_per_prompt not in ("max-gap", "all"):
            raise ValueError(f"--pairs-per-prompt must be 'max-gap' or 'all', not {self.pairs_per_prompt!r}")
        if not 0.0 <= self.test_size < 1.0:
            raise ValueError(f"--test-size must be in [0, 1), not {self.test_size}")
        if self.image_check not in IMAGE_CHECKS:
            raise ValueError(f"--image-check must be one of {', '.join(IMAGE_CHECKS)}, not {self.image_check!r}")
        if self.format not in ("trl", "easyr1"):
            raise ValueError(f"--format must be 'trl' or 'easyr1', not {self.format!r}")
        if not (math.isfinite(self.margin) and self.margin >= 0):  # nan would switch the filter off
            raise ValueError(f"--margin must be a finite number >= 0, not {self.margin}")
        if isinstance(self.keep_ties, str) and self.keep_ties.strip().isascii() and self.keep_ties.strip().isdigit():
            self.keep_ties = int(self.keep_ties)
        if self.keep_ties != "all" and not (isinstance(self.keep_ties, int) and self.keep_ties >= 0):
            raise ValueError(f"--keep-ties must be a count >= 0 or 'all', not {self.keep_ties!r}")
        if not isinstance(self.balance_length, bool):  # "no" would switch it on
            raise ValueError(f"--balance-length is on or off (True or False), not {self.balance_length!r}")
        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(f"--prompt-style must be one of {', '.join(PROMPT_STYLES)}, not {self.prompt_style!r}")
        for option, path in [("--out", self.out), *(("--input", p) for p in self.inputs.values()),
                             *([("--image-root", self.image_root)] if self.image_root else [])]:
            try:
                str(path).encode("utf-8")
            except UnicodeEncodeError:  # build.json and the card record it: they are UTF-8 text
                raise ValueError(f"{option} {str(path)!r} is not valid UTF-8; rename the folder") from None
        if self.max_shard_bytes < 1:
            raise ValueError(f"--max-shard-size must be more than 0 bytes, not {self.max_shard_bytes}")
        if self.max_image_pixels < 1:
            raise ValueError(f"--max-image-pixels must be at least 1, not {self.max_image_pixels}")
        if self.revision is not None:  # refused here, before any request: "../x" would be a path in the Hub's URL
            from critic_data.hub import check_revision  # raises UserError

            check_revision(self.revision, branch=False)
        unknown = set(self.aspects) - set(VLFEEDBACK_ASPECTS)
        if not self.aspects or unknown:
            raise ValueError(f"--aspects must name some of {', '.join(VLFEEDBACK_ASPECTS)}")

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
        has no length bias at all, for its chance ups and downs (√n: ~3%; see _Decider)."""
        return math.isqrt(pairs)

    def to_manifest(self) -> dict:
        """The resolved options, JSON-ready (paths as strings)."""
        resolved = asdict(self)
        resolved["out"] = str(self.out)
        resolved["inputs"] = {name: str(path) for name, path in self.inputs.items()}
        resolved["image_root"] = None if self.image_root is None else str(self.image_root)
        resolved["sources"] = list(self.sources)
        resolved["aspects"] = list(self.aspects)
        return resolved
