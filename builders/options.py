"""Build options: one dataclass serves the CLI, Python callers and the manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from critic_data.builders.images import DEFAULT_MAX_PIXELS, IMAGE_CHECKS

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
    keep_ties: int = 0  # keep up to this many ties per source, labelled "tie"
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
        if self.margin < 0:
            raise ValueError(f"--margin must be >= 0, not {self.margin}")
        if self.keep_ties < 0:
            raise ValueError(f"--keep-ties must be >= 0, not {self.keep_ties}")
        unknown = set(self.aspects) - set(VLFEEDBACK_ASPECTS)
        if not self.aspects or unknown:
            raise ValueError(f"--aspects must name some of {', '.join(VLFEEDBACK_ASPECTS)}")

    def to_manifest(self) -> dict:
        """The resolved options, JSON-ready (paths as strings)."""
        resolved = asdict(self)
        resolved["out"] = str(self.out)
        resolved["inputs"] = {name: str(path) for name, path in self.inputs.items()}
        resolved["image_root"] = None if self.image_root is None else str(self.image_root)
        resolved["sources"] = list(self.sources)
        resolved["aspects"] = list(self.aspects)
        return resolved
