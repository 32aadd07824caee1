"""The output contract, declared once: the sources, the row schema and the critic prompt text a row
carries (prompts.py), and reject records.

The writer, the validator, the card, eval and the tests all derive from these definitions. The row
schema is built with `datasets` (about a second to import), so it is loaded when first asked for:
`critic_data.schemas.RejectReason` or `.prompts` do not pull it in.
"""

# The sources a row may come from, in build order: a pair repeated in a later source (LLaVA-Critic
# re-judges rows of the others) is kept from the earlier one.
SOURCE_NAMES = ("vlfeedback", "rlhf_v", "llava_rlhf", "llava_critic")

from critic_data.schemas.rejects import Reject, RejectReason  # noqa: E402 - after the constant row.py reads

_ROW_SCHEMA = ("ANSWERS", "ARROW_SCHEMA", "COLUMNS", "EASYR1_FEATURES", "FEATURES", "FORMATS",
               "validate_columns")


def __getattr__(name: str):
    if name in _ROW_SCHEMA:
        from critic_data.schemas import row

        value = getattr(row, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SOURCE_NAMES", "Reject", "RejectReason", *_ROW_SCHEMA]
