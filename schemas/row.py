"""The output row: one verifiable pairwise-critic task.

`FEATURES` is the single definition; `ARROW_SCHEMA` (with the `huggingface` metadata that
lets `datasets` restore Image columns) is derived from it, and `validate_columns` checks
the invariants a type cannot express.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
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


def validate_columns(columns: dict) -> None:
    """Raise ValueError naming the first broken invariant of output rows, given as Arrow arrays
    (one per column of the TRL layout, the answer and prompt aside: they are built, not read)."""
    for column in ("id", "source_id", "question", "response_1", "response_2", "template"):
        text = columns[column]
        if text.null_count or pc.any(pc.or_(pc.equal(pc.utf8_length(text), 0), pc.utf8_is_space(text))).as_py():
            raise ValueError(f"{column} must be a non-empty string")
    if not pc.all(pc.is_in(columns["source"], pa.array(SOURCE_NAMES))).as_py():
        raise ValueError(f"source must be one of {SOURCE_NAMES}")
    if pc.any(pc.equal(columns["response_1"], columns["response_2"])).as_py():
        raise ValueError("response_1 and response_2 are identical")
    margin = columns["margin"]
    if pc.any(pc.invert(pc.and_(pc.is_finite(margin), pc.greater_equal(margin, 0)))).as_py():  # null is allowed
        raise ValueError("margin must be null or a finite float >= 0")
    images = columns["images"]
    data = pc.struct_field(pc.list_flatten(images), "bytes")
    if (images.null_count or pc.any(pc.equal(pc.list_value_length(images), 0)).as_py() or data.null_count
            or pc.any(pc.equal(pc.binary_length(data), 0)).as_py()):
        raise ValueError("images must be a non-empty list of {'bytes', 'path'} with bytes")


# --format name -> the features of the written rows
FORMATS = {"trl": FEATURES, "easyr1": EASYR1_FEATURES}
