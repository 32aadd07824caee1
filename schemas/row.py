"""The output row: one verifiable pairwise-critic task.

`FEATURES` is the single definition; `ARROW_SCHEMA` (with the `huggingface` metadata that
lets `datasets` restore Image columns) is derived from it, and `validate_row` checks the
invariants a type cannot express.
"""

from __future__ import annotations

import math

from datasets import Features, Image, List, Value

from critic_data.schemas import SOURCE_NAMES

# "tie" only appears in builds run with --keep-ties, whose rows use the tie-aware template.
ANSWERS = ("1", "2", "tie")

FEATURES = Features(
    {
        "id": Value("string"),
        "source": Value("string"),
        "source_id": Value("string"),
        "images": List(Image()),
        # TRL conversational prompt: one user message, an image part per image, then a text part.
        "prompt": List(
            {
                "role": Value("string"),
                "content": List({"type": Value("string"), "text": Value("string")}),
            }
        ),
        "question": Value("string"),
        "response_1": Value("string"),
        "response_2": Value("string"),
        "answer": Value("string"),
        "margin": Value("float64"),
        "template": Value("string"),
    }
)

COLUMNS = tuple(FEATURES)
_COLUMN_SET = frozenset(COLUMNS)
ARROW_SCHEMA = FEATURES.arrow_schema

# `--format easyr1`: what LLaVA-Critic-R1's EasyR1 fork reads with its default data config
# (si0wang/LLaVA-Critic-R1@6fd42d1, EasyR1/examples/config.yaml:4-6 `prompt_key`, `answer_key`,
# `image_key: image`; EasyR1/verl/utils/dataset.py `RLHFDataset._build_messages` splits the prompt
# at `<image>` and appends the format prompt itself): one image, the critic prompt body with an
# `<image>` placeholder first and no think/boxed instruction, the label. Lineage columns kept.
EASYR1_FEATURES = Features(
    {
        "id": Value("string"),
        "source": Value("string"),
        "source_id": Value("string"),
        "image": Image(),
        "question": Value("string"),  # `<image>` then the critic prompt body; the trainer adds the instruction
        "answer": Value("string"),
        "template": Value("string"),
    }
)


def to_easyr1(row: dict, body: str) -> dict:
    """The easyr1 layout of a validated TRL-layout row, given its prompt body (without the instruction)."""
    if len(row["images"]) != 1:
        raise ValueError("the easyr1 layout holds one image per row")
    return {
        "id": row["id"],
        "source": row["source"],
        "source_id": row["source_id"],
        "image": row["images"][0],
        "question": "<image>" + body,
        "answer": row["answer"],
        "template": row["template"],
    }


def validate_row(row: dict) -> None:
    """Raise ValueError naming the first broken invariant of an output row."""
    if row.keys() != _COLUMN_SET:
        raise ValueError(f"columns {sorted(row)} differ from the schema's {sorted(COLUMNS)}")
    for column in ("id", "source_id", "question", "response_1", "response_2", "template"):
        text = row[column]
        if not isinstance(text, str) or not text or text.isspace():
            raise ValueError(f"{column} must be a non-empty string")
    if row["source"] not in SOURCE_NAMES:
        raise ValueError(f"source {row['source']!r} is not one of {SOURCE_NAMES}")
    if row["answer"] not in ANSWERS:
        raise ValueError(f"answer {row['answer']!r} is not one of {ANSWERS}")
    if row["response_1"] == row["response_2"]:
        raise ValueError("response_1 and response_2 are identical")
    margin = row["margin"]
    if margin is not None and not (isinstance(margin, float) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be null or a finite float >= 0, not {margin!r}")
    images = row["images"]
    if not images or not all(isinstance(im, dict) and im.get("bytes") for im in images):
        raise ValueError("images must be a non-empty list of {'bytes', 'path'} with bytes")
    prompt = row["prompt"]
    if len(prompt) != 1 or prompt[0]["role"] != "user":
        raise ValueError("prompt must be exactly one user message")
    parts = prompt[0]["content"]
    kinds = [part["type"] for part in parts]
    if kinds != ["image"] * len(images) + ["text"]:
        raise ValueError(f"prompt parts must be {len(images)} image part(s) then one text part, not {kinds}")
    if not parts[-1]["text"]:
        raise ValueError("the prompt's text part is empty")


# --format name -> (features of the written rows, conversion from a validated TRL-layout row)
FORMATS = {"trl": (FEATURES, None), "easyr1": (EASYR1_FEATURES, to_easyr1)}
