"""Reject records: one per input row that produced nothing because its data is defective.

Rule-based filtering (a score gap below the margin, a dropped tie, a duplicate) is not a
reject; it is counted per rule in the manifest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum


class RejectReason(StrEnum):
    JSON_INVALID = "json_invalid"                # the row's JSON does not parse
    ROW_MALFORMED = "row_malformed"              # parses, but a required field is missing or mistyped
    # no image in the row, the archive or the image root (or not a regular file)
    IMAGE_MISSING = "image_missing"
    IMAGE_UNDECODABLE = "image_undecodable"      # bytes that PIL cannot decode completely
    IMAGE_TOO_LARGE = "image_too_large"          # more pixels than --max-image-pixels (decompression bomb)
    IMAGE_FILE_TOO_LARGE = "image_file_too_large"  # more bytes than the image size cap; never read whole
    IMAGE_PATH_UNSAFE = "image_path_unsafe"      # path resolves outside --image-root; never opened
    IMAGE_AMBIGUOUS = "image_ambiguous"          # two image files for the row's id (x.jpg and x.png): none is guessed
    RATING_UNPARSABLE = "rating_unparsable"      # fewer than two completions with numeric ratings
    EMPTY_RESPONSE = "empty_response"            # fewer than two non-empty responses
    EMPTY_QUESTION = "empty_question"            # no question text left after cleaning
    IDENTICAL_RESPONSES = "identical_responses"  # the two candidates are the same text
    VERDICT_UNPARSABLE = "verdict_unparsable"    # no verdict could be read from the judge's text
    PROMPT_UNPARSABLE = "prompt_unparsable"      # question or responses not found in a judge prompt
    TEXT_UNENCODABLE = "text_unencodable"        # text with a lone surrogate (a JSON "\ud800" escape): not UTF-8


@dataclass(frozen=True)
class Reject:
    source: str
    source_id: str
    reason: RejectReason
    detail: str

    def to_json_dict(self) -> dict:
        record = asdict(self)
        record["reason"] = str(self.reason)
        return record
