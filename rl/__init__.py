"""The training half: critic prompts, verifiable rewards, the GRPO recipe, evaluation.

The shipped recipes are found here, not in `train` (which imports TRL): `critic-data train --help`
lists their values without the training stack's imports."""

from pathlib import Path

RECIPES_DIR = Path(__file__).parent / "recipes"


def recipes() -> dict[str, Path]:
    """The shipped recipes by name."""
    return {path.stem: path for path in sorted(RECIPES_DIR.glob("*.yaml"), key=lambda path: path.stem)}
