"""Critic prompt templates: how a (question, two responses) pair is put to the model.

A row records the id of the template that rendered it (`template` column), so evaluation
and Best-of-N render exactly the prompt a critic was trained on.
"""

from __future__ import annotations

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


def render_critic_prompt(template: str, question: str, response_1: str, response_2: str) -> str:
    """The text part of the critic prompt (the image parts come before it)."""
    return TEMPLATES[template].format(question=question, response_1=response_1, response_2=response_2)


def conversational_prompt(text: str, n_images: int = 1) -> list[dict]:
    """A TRL conversational prompt: one user message, image parts first, then the text."""
    parts = [{"type": "image", "text": None} for _ in range(n_images)]
    parts.append({"type": "text", "text": text})
    return [{"role": "user", "content": parts}]
