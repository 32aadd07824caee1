"""Text hygiene shared by every source: what must never reach a question or a response."""

from __future__ import annotations

import re

from critic_data.schemas import RejectReason

# Browsing debris left in GPT-4V answers, e.g. 【3†source】 (always inside 【...】 brackets).
_CITATION = re.compile(r"【[^【】]{0,40}】")
_IMAGE_TOKEN = re.compile(r"<image>\s*")
_BLANK_RUNS = re.compile(r"[ \t]+\n")


def _remove(pattern: re.Pattern, text: str) -> str:
    # repeat: removing one marker can join the pieces of another ("<ima<image>ge>")
    while (shorter := pattern.sub("", text)) != text:
        text = shorter
    return text


def clean_response(text: str) -> str:
    """A candidate response without citation debris and surrounding whitespace."""
    if "【" in text:  # the cheap test first: most responses have none
        text = _remove(_CITATION, text)
    if " \n" in text or "\t\n" in text:
        text = _BLANK_RUNS.sub("\n", text)
    return text.strip()


def clean_question(text: str) -> str:
    """A question without `<image>` placeholders (the prompt carries its own image parts)."""
    return _remove(_IMAGE_TOKEN, text).strip() if "<image>" in text else text.strip()


def pair_problem(question: str, first: str, second: str) -> tuple[RejectReason, str] | None:
    """Why a cleaned question and two cleaned responses cannot make a verifiable pair, or None."""
    if not question:
        return RejectReason.EMPTY_QUESTION, "the question is empty once cleaned"
    if not first or not second:
        return RejectReason.EMPTY_RESPONSE, "a response is empty once cleaned"
    if first == second:
        return RejectReason.IDENTICAL_RESPONSES, "the two responses are the same text"
    return None
