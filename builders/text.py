"""Text hygiene shared by every source: what must never reach a question or a response."""

from __future__ import annotations

import re

from critic_data.rl.prompts import strip_control_tokens
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


def _without_citations(text: str) -> str:
    return _remove(_CITATION, text) if "【" in text else text  # the cheap test first: most have none


def _without_image_tokens(text: str) -> str:
    return _remove(_IMAGE_TOKEN, text) if "<image>" in text else text


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
    """A candidate response without citation debris, chat-control markers (`<|im_end|>`) and
    surrounding whitespace."""
    text = _until_stable(text, strip_control_tokens, _without_citations)
    if " \n" in text or "\t\n" in text:
        text = _BLANK_RUNS.sub("\n", text)
    return text.strip()


def clean_question(text: str) -> str:
    """A question without `<image>` placeholders (the prompt carries its own image parts) or
    chat-control markers."""
    return _until_stable(text, strip_control_tokens, _without_image_tokens).strip()


def pair_problem(question: str, first: str, second: str) -> tuple[RejectReason, str] | None:
    """Why a cleaned question and two cleaned responses cannot make a verifiable pair, or None."""
    if not question:
        return RejectReason.EMPTY_QUESTION, "the question is empty once cleaned"
    if not first or not second:
        return RejectReason.EMPTY_RESPONSE, "a response is empty once cleaned"
    if first == second:
        return RejectReason.IDENTICAL_RESPONSES, "the two responses are the same text"
    return None
