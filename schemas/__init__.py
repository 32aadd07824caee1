"""The output contract, declared once: the sources, the row schema and the critic prompt text a row
carries (prompts.py), and reject records.

The writer, the validator, the card, eval and the tests all derive from these definitions.
"""

from critic_data.schemas.rejects import Reject, RejectReason
from critic_data.schemas.row import (
    ANSWERS,
    ARROW_SCHEMA,
    BENCHMARK_NAMES,
    COLUMNS,
    EASYR1_FEATURES,
    FEATURES,
    FORMATS,
    IMAGE_PLACEHOLDER,
    SOURCE_NAMES,
    arrow_schema,
    validate_columns,
    yaml_features,
)

__all__ = ["ANSWERS", "ARROW_SCHEMA", "BENCHMARK_NAMES", "COLUMNS", "EASYR1_FEATURES", "FEATURES", "FORMATS",
           "IMAGE_PLACEHOLDER", "SOURCE_NAMES", "Reject", "RejectReason", "arrow_schema", "validate_columns",
           "yaml_features"]
