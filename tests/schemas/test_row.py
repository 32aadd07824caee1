"""The row schema is declared once, as `datasets` serialises Features; what the build derives from it
without importing `datasets` must be what `datasets` derives."""

from __future__ import annotations

import pytest
from datasets import Features

from critic_data.schemas import FORMATS, arrow_schema, yaml_features
from critic_data.schemas.row import Image, List, Value

# beyond the two formats: the shapes a future column may take
OTHER_SHAPES = {
    "list of lists": {"a": List(List(Value("string")))},
    "struct holding an image and numbers": {"s": {"image": Image(), "n": Value("int64"), "x": Value("float32")}},
    "list of structs of lists": {"turns": List({"role": Value("string"), "scores": List(Value("float64"))})},
    "booleans and large text": {"ok": Value("bool"), "text": Value("large_string"), "raw": Value("binary")},
}


@pytest.mark.parametrize("features", [*FORMATS.values(), *OTHER_SHAPES.values()],
                         ids=[*FORMATS, *OTHER_SHAPES])
def test_the_derived_schema_and_card_features_are_those_of_datasets(features):
    reference = Features.from_dict(features)
    assert reference.to_dict() == features  # the declaration is datasets' own serialisation
    assert arrow_schema(features).equals(reference.arrow_schema, check_metadata=True)
    assert yaml_features(features) == reference._to_yaml_list()


def test_the_written_schema_restores_the_image_features():
    restored = Features.from_arrow_schema(arrow_schema(FORMATS["trl"]))
    assert restored["images"].feature.__class__.__name__ == "Image"
    assert restored.to_dict() == FORMATS["trl"]


@pytest.mark.parametrize("feature", [
    {"_type": "List", "feature": Value("int32"), "length": 3},  # a fixed-size list
    {"_type": "Image", "decode": False},
    {"_type": "Sequence", "feature": Value("string")},
    {"_type": "ClassLabel", "names": ["a", "b"]},
    "string",
])
def test_a_shape_the_derivations_do_not_cover_is_refused_not_guessed(feature):
    with pytest.raises(ValueError, match="derives Value, Image"):
        arrow_schema({"column": feature})
    with pytest.raises(ValueError, match="derives Value, Image"):
        yaml_features({"column": feature})
