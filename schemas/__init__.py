"""The output contract, declared once: row schema, reject records, build manifest.

The writer, the validator, the card and the tests all derive from these definitions.
"""

from critic_data.schemas.rejects import Reject, RejectReason
from critic_data.schemas.row import (
    ANSWERS,
    ARROW_SCHEMA,
    COLUMNS,
    FEATURES,
    SOURCE_NAMES,
    validate_row,
)

__all__ = [
    "ANSWERS",
    "ARROW_SCHEMA",
    "COLUMNS",
    "FEATURES",
    "SOURCE_NAMES",
    "Reject",
    "RejectReason",
    "validate_row",
]
