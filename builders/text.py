"""Text hygiene shared by every source: what must never reach a question or a response.

`<image>` is removed from both: it is the image placeholder of the sources' chat formats (LLaVA's),
never content. Left in a text, it would be one placeholder too many where it is read as one: the
EasyR1 fork splits its prompt at every `<image>` (a row then asks for two images and has one), and
LLaVA-style processors expand it into image features. Other spellings (`<Image>`, `<img>`, MMMU's
`<image 1>`) are plain text to both, and can be what a text means (HTML's `<img>` tag): kept.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from critic_data.schemas import IMAGE_PLACEHOLDER, RejectReason
from critic_data.schemas.prompts import strip_control_tokens

# Browsing debris left in GPT-4V answers, e.g. 【3†source】 (always inside 【...】 brackets).
_CITATION = re.compile(r"【[^【】]{0,40}】")
_IMAGE_TOKEN = re.compile(re.escape(IMAGE_PLACEHOLDER) + r"\s*")
_BLANK_RUNS = re.compile(r"(?<![ \t])[ \t]++\n")  # starts only where a run starts: each run read once
# What `str.strip()` removes (every character whose `isspace()` is true), and the invisible
# characters it keeps: zero-width space, non-joiner and joiner, word joiner, byte-order mark.
# A text of only these is empty.
_BLANK = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
          "\u2009\u200a\u2028\u2029\u202f\u205f\u3000" "\u200b\u200c\u200d\u2060\ufeff")


def _remove(pattern: re.Pattern, text: str) -> str:
    # repeat: removing one marker can join the pieces of another ("<ima<image>ge>")
    while (shorter := pattern.sub("", text)) != text:
        text = shorter
    return text


def _without_citations(text: str) -> str:
    return _remove(_CITATION, text) if "【" in text else text  # the cheap test first: most have none


def _without_image_tokens(text: str) -> str:
    return _remove(_IMAGE_TOKEN, text) if IMAGE_PLACEHOLDER in text else text


def _until_stable(text: str, *removals) -> str:
    """Apply the removals until none changes the text: one kind of marker removed can join the
    pieces of another ("<|im【3†source】_end|>")."""
    while True:
        cleaned = text
        for remove in removals:
            cleaned = remove(cleaned)
        if cleaned == text:
            return text
        text = cleaned


def clean_response(text: str) -> str:
    """A candidate response without citation debris, chat-control markers (`<|im_end|>`), `<image>`
    placeholders and surrounding whitespace (zero-width characters included)."""
    if "<|" in text or "【" in text or IMAGE_PLACEHOLDER in text:  # the cheap test first: almost no response holds one
        text = _until_stable(text, strip_control_tokens, _without_citations, _without_image_tokens)
    if " \n" in text or "\t\n" in text:
        text = _BLANK_RUNS.sub("\n", text)
    return text.strip(_BLANK)


def clean_responses(texts: pa.Array) -> pa.Array:
    """`clean_response` of every text of a string array (a null, a response that is not text,
    becomes ""), over the whole array at once: the rare text holding a marker or blanks before a
    line break is cleaned one by one. TypeError for an array of another type (numbers, bytes),
    whose values are not text: read those one by one."""
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type) or pa.types.is_null(texts.type)):
        raise TypeError(f"responses of type {texts.type} are not text")
    texts = pc.fill_null(texts.cast(pa.string()), "")
    cleaned = pc.utf8_trim(texts, characters=_BLANK)
    special = _special(texts)
    if special.any():
        where = np.flatnonzero(special)
        one_by_one = pa.array([clean_response(text) for text in texts.take(where).to_pylist()], pa.string())
        cleaned = pc.replace_with_mask(cleaned, pa.array(special), one_by_one)
    return cleaned


def _special(texts: pa.StringArray) -> np.ndarray:
    """Which texts (no nulls) may hold `<|`, `【`, `<image>` or a blank before a line break: those
    `clean_response` must see. Each literal is searched on its own (a regular expression finds a
    literal fast, an alternation or a class slowly), the blanks in the array's bytes: a text is marked
    when a line break in it follows a space or a tab (the space may end the text before: marked anyway)."""
    special = pc.or_(pc.match_substring_regex(texts, r"<\|"), pc.match_substring_regex(texts, "【"))
    special = pc.or_(special, pc.match_substring_regex(texts, IMAGE_PLACEHOLDER))
    special = special.to_numpy(zero_copy_only=False)
    if not len(texts):
        return special
    offsets = np.frombuffer(texts.buffers()[1], np.int32)[texts.offset : texts.offset + len(texts) + 1]
    data = np.frombuffer(texts.buffers()[2] or b"", np.uint8)[offsets[0] : offsets[-1]]
    breaks = np.flatnonzero(data[1:] == ord("\n")) + 1
    blank_before = breaks[np.isin(data[breaks - 1], (ord(" "), ord("\t")))] + offsets[0]
    special[np.searchsorted(offsets, blank_before, side="right") - 1] = True
    return special


def clean_question(text: str) -> str:
    """A question without `<image>` placeholders (the prompt carries its own image parts),
    chat-control markers or surrounding whitespace (zero-width characters included)."""
    return _until_stable(text, strip_control_tokens, _without_image_tokens).strip(_BLANK)


def row_id(value, position: str) -> str:
    """A row's id as text; its `position` in the input when it has none: missing, empty, or only
    whitespace (an output row's `source_id` is never blank)."""
    text = "" if value is None else str(value)
    return text if text.strip() else position


def pair_problem(question: str, first: str, second: str) -> tuple[RejectReason, str] | None:
    """Why a cleaned question and two cleaned responses cannot make a verifiable pair, or None."""
    if not question:
        return RejectReason.EMPTY_QUESTION, "the question is empty once cleaned"
    if not first or not second:
        return RejectReason.EMPTY_RESPONSE, "a response is empty once cleaned"
    if first == second:
        return RejectReason.IDENTICAL_RESPONSES, "the two responses are the same text"
    return None
