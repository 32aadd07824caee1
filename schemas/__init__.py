"""The output contract, declared once: row schema, reject records, build manifest.

The writer, the validator, the card and the tests all derive from these definitions.
"""

from critic_data.schemas.rejects import Reject, RejectReason
from critic_data.schemas.row import (
    ANSWERS,
    ARROW_SCHEMA,
    COLUMNS,
    EASYR1_FEATURES,
    FEATURES,
    SOURCE_NAMES,
    to_easyr1,
    validate_row,
)

# --format name -> (features of the written rows, conversion from a validated TRL-layout row)
FORMATS = {"trl": (FEATURES, None), "easyr1": (EASYR1_FEATURES, to_easyr1)}

__all__ = [
    "ANSWERS",
    "ARROW_SCHEMA",
    "COLUMNS",
    "EASYR1_FEATURES",
    "FEATURES",
    "FORMATS",
    "SOURCE_NAMES",
    "Reject",
    "RejectReason",
    "to_easyr1",
    "validate_row",
]
