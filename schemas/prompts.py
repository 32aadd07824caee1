"""Critic prompts: how a (question, two responses) pair is put to the model.

A prompt is a *body* (the question and both responses, and which label names which response)
followed by the official think-then-answer instruction, verbatim, joined to the trimmed body with
one space, as LLaVA-Critic-R1's EasyR1 fork renders it (si0wang/LLaVA-Critic-R1@6fd42d1,
EasyR1/examples/format_prompt/math_format.jinja: `{{ content | trim }} You FIRST think ...`).

Two body styles (`--prompt-style`):
- `critic-data`: our own body, with [Question] / [Response 1] / [Response 2] sections.
- `llava-critic`: LLaVA-Critic's pairwise judge template (lmms-lab/llava-critic-7b's model card),
  the body the official RL set derives from; its exact text in the official set is unpublished.
Both end with one sentence naming the labels a rule checks ("1", "2", and "tie" when ties are
kept): the instruction says only "put the final answer in \\boxed{}".

A row records the id of the template that rendered it (`template` column), so evaluation and
Best-of-N render exactly the prompt a critic was trained on.
"""

from __future__ import annotations

import re

FORMAT_INSTRUCTION = (
    "You FIRST think about the reasoning process as an internal monologue and then provide the final answer. "
    "The reasoning process MUST BE enclosed within <think> </think> tags. The final answer MUST BE put in \\boxed{}."
)

# Chat-control markers such as <|image_pad|> or <|im_end|> (Qwen's, and most chat templates').
# A server tokenises them inside prompt text as the control tokens themselves: an image token
# in a response would break the image-token count of the request ("image features and image
# tokens do not match"), an <|im_end|> would end the user turn. Sampled text can hold them
# (servers that parse reasoning return content decoded with special tokens kept).
_CONTROL_TOKEN = re.compile(r"<\|[A-Za-z0-9_]{1,40}\|>")

_CRITIC_DATA = (
    "You are shown an image, a question about it, and two candidate responses. Judge which "
    "response answers the question better: more helpful, more accurate, and more faithful to "
    "what the image shows.\n\n"
    "[Question]\n{question}\n\n"
    "[Response 1]\n{response_1}\n\n"
    "[Response 2]\n{response_2}\n\n"
)
_LLAVA_CRITIC = (
    "Given an image and a corresponding question, please serve as an unbiased and fair judge to evaluate "
    "the quality of the answers provided by a Large Multimodal Model (LMM). Determine which answer is better "
    "and explain your reasoning with specific details. Your task is provided as follows:\n"
    "Question: [{question}]\n"
    "The first response: [{response_1}]\n"
    "The second response: [{response_2}]\n"
)

# template id -> body; the id is written into every row
TEMPLATES = {
    "pairwise-v2": _CRITIC_DATA + "The final answer is 1 if Response 1 is better, 2 if Response 2 is better.",
    "pairwise-tie-v2": _CRITIC_DATA + "The final answer is 1 if Response 1 is better, 2 if Response 2 is better, "
    "tie if they are equally good.",
    "llava-critic-v1": _LLAVA_CRITIC + "The final answer is 1 if the first response is better, 2 if the second "
    "response is better.",
    "llava-critic-tie-v1": _LLAVA_CRITIC + "The final answer is 1 if the first response is better, 2 if the second "
    "response is better, tie if they are equally good.",
}
# --prompt-style -> (template without ties, template of builds that keep ties)
PROMPT_STYLES = {
    "critic-data": ("pairwise-v2", "pairwise-tie-v2"),
    "llava-critic": ("llava-critic-v1", "llava-critic-tie-v1"),
}
DEFAULT_TEMPLATE, TIE_TEMPLATE = PROMPT_STYLES["critic-data"]


def strip_control_tokens(text: str) -> str:
    """`text` without chat-control markers (`<|...|>`), which are never content."""
    if "<|" not in text:  # the cheap test first: almost no text has one
        return text
    while (shorter := _CONTROL_TOKEN.sub("", text)) != text:  # removing one can join another
        text = shorter
    return text


def critic_body(template: str, question: str, response_1: str, response_2: str) -> str:
    """The body of the critic prompt, trimmed; chat-control markers in the question or a response
    are left out."""
    return TEMPLATES[template].format(question=strip_control_tokens(question),
                                   response_1=strip_control_tokens(response_1),
                                   response_2=strip_control_tokens(response_2)).strip()


def with_instruction(text: str) -> str:
    """`text` trimmed, then the official think/boxed instruction after one space."""
    return f"{text.strip()} {FORMAT_INSTRUCTION}"


def render_critic_prompt(template: str, question: str, response_1: str, response_2: str) -> str:
    """The text part of the critic prompt (the image parts come before it): body, then instruction."""
    return with_instruction(critic_body(template, question, response_1, response_2))


def conversational_prompt(text: str, n_images: int = 1) -> list[dict]:
    """A TRL conversational prompt: one user message, image parts first, then the text."""
    parts = [{"type": "image", "text": None} for _ in range(n_images)]
    parts.append({"type": "text", "text": text})
    return [{"role": "user", "content": parts}]
