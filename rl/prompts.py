"""Critic prompt templates: how a (question, two responses) pair is put to the model.

A row records the id of the template that rendered it (`template` column), so evaluation
and Best-of-N render exactly the prompt a critic was trained on.
"""

from __future__ import annotations

import re

# Chat-control markers such as <|image_pad|> or <|im_end|> (Qwen's, and most chat templates').
# A server tokenises them inside prompt text as the control tokens themselves: an image token
# in a response would break the image-token count of the request ("image features and image
# tokens do not match"), an <|im_end|> would end the user turn. Sampled text can hold them
# (servers that parse reasoning return content decoded with special tokens kept).
_CONTROL_TOKEN = re.compile(r"<\|[A-Za-z0-9_]{1,40}\|>")

# The think-then-answer instruction follows the reference setup (METHOD.md): reasoning as an
# internal monologue inside <think> </think>, the final answer in \boxed{}.
_THINK = (
    "You FIRST think about the reasoning process as an internal monologue and then give the "
    "final answer. The reasoning process MUST be enclosed within <think> </think> tags. "
)

_BODY = (
    "You are shown an image, a question about it, and two candidate responses. Judge which "
    "response answers the question better: more helpful, more accurate, and more faithful to "
    "what the image shows.\n\n"
    "[Question]\n{question}\n\n"
    "[Response 1]\n{response_1}\n\n"
    "[Response 2]\n{response_2}\n\n"
)

TEMPLATES = {
    "pairwise-v1": _BODY
    + _THINK
    + "The final answer MUST be put in \\boxed{{}}: \\boxed{{1}} if Response 1 is better, "
    "\\boxed{{2}} if Response 2 is better.",
    # Used for every row of a build that keeps ties (--keep-ties N > 0).
    "pairwise-tie-v1": _BODY
    + _THINK
    + "The final answer MUST be put in \\boxed{{}}: \\boxed{{1}} if Response 1 is better, "
    "\\boxed{{2}} if Response 2 is better, \\boxed{{tie}} if they are equally good.",
}

DEFAULT_TEMPLATE = "pairwise-v1"
TIE_TEMPLATE = "pairwise-tie-v1"


def strip_control_tokens(text: str) -> str:
    """`text` without chat-control markers (`<|...|>`), which are never content."""
    if "<|" not in text:  # the cheap test first: almost no text has one
        return text
    while (shorter := _CONTROL_TOKEN.sub("", text)) != text:  # removing one can join another
        text = shorter
    return text


def render_critic_prompt(template: str, question: str, response_1: str, response_2: str) -> str:
    """The text part of the critic prompt (the image parts come before it); chat-control
    markers in the question or a response are left out."""
    return TEMPLATES[template].format(question=strip_control_tokens(question),
                                      response_1=strip_control_tokens(response_1),
                                      response_2=strip_control_tokens(response_2))


def conversational_prompt(text: str, n_images: int = 1) -> list[dict]:
    """A TRL conversational prompt: one user message, image parts first, then the text."""
    parts = [{"type": "image", "text": None} for _ in range(n_images)]
    parts.append({"type": "text", "text": text})
    return [{"role": "user", "content": parts}]
