"""The training half: verifiable rewards (rewards.py), the GRPO recipes and their runner (recipes/, train.py),
and the critic at work: eval and Best-of-N (evaluate.py, best_of_n.py) over one OpenAI-compatible client
(client.py), with their run records (records.py), metrics (metrics.py) and options (options.py). The critic
prompts themselves are the output contract's, in schemas/prompts.py.

The shipped recipes are found here, not in `train` (which imports TRL): `critic-data train --help`
lists their values without the training stack's imports."""

from pathlib import Path

RECIPES_DIR = Path(__file__).parent / "recipes"


def recipes() -> dict[str, Path]:
    """The shipped recipes by name."""
    return {path.stem: path for path in sorted(RECIPES_DIR.glob("*.yaml"), key=lambda path: path.stem)}
