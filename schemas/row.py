"""The output row: one verifiable pairwise-critic task.

`FEATURES` is the single definition, written as `datasets` serialises Features (what
`Features.to_dict()` gives and `Features.from_dict` reads, as in every dataset_info.json): a
build then writes Hub-style files without importing `datasets` (half a second of every build).
Derived from it, each tested equal to what `datasets` derives: `arrow_schema` (with the
`huggingface` metadata that lets `datasets` restore Image columns) and `yaml_features` (the
card's `dataset_info.features`). `validate_columns` checks the invariants a type cannot express.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc

# The sources a row may come from, in build order: a pair repeated in a later source (LLaVA-Critic
# re-judges rows of the others) is kept from the earlier one.
SOURCE_NAMES = ("vlfeedback", "rlhf_v", "llava_rlhf", "llava_critic")
# The critic benchmarks `critic-data eval` reads and `build --decontaminate` checks against.
BENCHMARK_NAMES = ("vl-rewardbench", "mm-rlhf")

# The labels a row's `answer` holds, and so the verdicts a critic can give (rl/rewards.py reads them
# from here). "tie" only appears in builds run with --keep-ties, whose rows use the tie-aware template.
ANSWERS = ("1", "2", "tie")

# Where an image goes in a text: the placeholder of the sources' chat formats (LLaVA's), and the one
# the easyr1 layout's question starts with. No other text of a row holds it.
IMAGE_PLACEHOLDER = "<image>"


def Value(dtype: str) -> dict:  # noqa: N802 - named after the `datasets` feature it serialises
    return {"dtype": dtype, "_type": "Value"}


def Image() -> dict:  # noqa: N802
    return {"_type": "Image"}


def List(feature: dict) -> dict:  # noqa: N802
    return {"feature": feature, "_type": "List"}


FEATURES = {
    "id": Value("string"),
    "source": Value("string"),
    "source_id": Value("string"),
    "images": List(Image()),
    # TRL conversational prompt: one user message, an image part per image, then a text part.
    "prompt": List({
        "role": Value("string"),
        "content": List({"type": Value("string"), "text": Value("string")}),
    }),
    "question": Value("string"),
    "response_1": Value("string"),
    "response_2": Value("string"),
    "answer": Value("string"),
    "margin": Value("float64"),
    "template": Value("string"),
}

# `--format easyr1`: what LLaVA-Critic-R1's EasyR1 fork reads with its default data config
# (si0wang/LLaVA-Critic-R1@6fd42d1, EasyR1/examples/config.yaml:4-6 `prompt_key`, `answer_key`,
# `image_key: image`; EasyR1/verl/utils/dataset.py `RLHFDataset._build_messages` splits the prompt
# at `<image>` and appends the format prompt itself): one image, the critic prompt body with an
# `<image>` placeholder first and no think/boxed instruction, the label. Lineage columns kept.
EASYR1_FEATURES = {
    "id": Value("string"),
    "source": Value("string"),
    "source_id": Value("string"),
    "image": Image(),
    "question": Value("string"),  # `<image>` then the critic prompt body; the trainer adds the instruction
    "answer": Value("string"),
    "template": Value("string"),
}

# --format name -> the features of the written rows
FORMATS = {"trl": FEATURES, "easyr1": EASYR1_FEATURES}


def _kind(feature) -> str:
    """Value, Image, List or struct (a dict of features): the shapes derived here, as `datasets`
    writes them with no option set (tests/schemas/test_row.py checks the derivations against it)."""
    kind = feature.get("_type", "struct") if isinstance(feature, dict) else None
    keys = {"Value": {"_type", "dtype"}, "Image": {"_type"}, "List": {"_type", "feature"}}
    if kind == "struct" or keys.get(kind) == set(feature):
        return kind
    raise ValueError(f"schemas/row.py derives Value, Image(), List and dicts of them, not {feature!r}")


def _arrow_type(feature: dict) -> pa.DataType:
    kind = _kind(feature)
    if kind == "Value":
        return pa.type_for_alias(feature["dtype"])
    if kind == "Image":  # as `datasets` stores an image: its encoded bytes and its file name
        return pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    if kind == "List":
        return pa.list_(_arrow_type(feature["feature"]))
    return pa.struct([(name, _arrow_type(field)) for name, field in feature.items()])


def arrow_schema(features: dict) -> pa.Schema:
    """`datasets.Features.from_dict(features).arrow_schema`, metadata included."""
    metadata = {"huggingface": json.dumps({"info": {"features": features}})}
    return pa.schema([(name, _arrow_type(feature)) for name, feature in features.items()], metadata=metadata)


def _yaml(feature: dict) -> dict:
    kind = _kind(feature)
    if kind == "Value":
        return {"dtype": feature["dtype"]}
    if kind == "Image":
        return {"dtype": "image"}
    if kind == "List":  # a list of one dtype, or of a struct, is written short
        inner = _yaml(feature["feature"])
        return {"list": inner["dtype"] if list(inner) == ["dtype"] else inner["struct"] if list(inner) == ["struct"]
                else inner}
    return {"struct": [{"name": name, **_yaml(field)} for name, field in feature.items()]}


def yaml_features(features: dict) -> list[dict]:
    """`datasets.Features.from_dict(features)._to_yaml_list()`: the card's `dataset_info.features`."""
    return _yaml(features)["struct"]


COLUMNS = tuple(FEATURES)
ARROW_SCHEMA = arrow_schema(FEATURES)


def validate_columns(columns: dict) -> None:
    """Raise ValueError naming the first broken invariant of output rows, given as Arrow arrays
    (one per column of the TRL layout, the answer and prompt aside: they are built, not read)."""
    for column in ("id", "source_id", "question", "response_1", "response_2", "template"):
        text = columns[column]
        if text.null_count or pc.any(pc.or_(pc.equal(pc.utf8_length(text), 0), pc.utf8_is_space(text))).as_py():
            raise ValueError(f"{column} must be a non-empty string")
    for column in ("question", "response_1", "response_2"):
        # the prompt carries its own image parts; the easyr1 question its one `<image>`
        if pc.any(pc.match_substring(columns[column], IMAGE_PLACEHOLDER)).as_py():
            raise ValueError(f"{column} holds the image placeholder {IMAGE_PLACEHOLDER}")
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

