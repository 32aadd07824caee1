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
Best-of-N render exactly the prompt a critic was trained on. The build renders the same text a
column at a time (`critic_body_column`, `with_instruction_column`, `conversational_prompt_column`,
each tested equal to its row-level definition here).
"""

from __future__ import annotations

import re
from string import Formatter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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


def critic_body_column(template: str, question: pa.Array, response_1: pa.Array, response_2: pa.Array) -> pa.Array:
    """`critic_body` of each row, column-wise, for text without chat-control markers (the build's,
    which text.py has cleaned of them). A body starts and ends with the template's own text,
    which has no surrounding whitespace (a test checks every template): it needs no trim."""
    pieces = {"question": question, "response_1": response_1, "response_2": response_2}
    parts = [part for literal, name, _, _ in Formatter().parse(TEMPLATES[template])
             for part in (literal, pieces[name] if name else "") if not isinstance(part, str) or part]
    return pc.binary_join_element_wise(*parts, "")


def with_instruction_column(bodies: pa.Array) -> pa.Array:
    """`with_instruction` of each of `critic_body_column`'s bodies (which need no trim)."""
    return pc.binary_join_element_wise(bodies, FORMAT_INSTRUCTION, " ")


def conversational_prompt_column(texts: pa.Array, image_counts: np.ndarray) -> pa.Array:
    """`conversational_prompt` column-wise: per row, one user message holding an image part per
    image, then the text part. `texts`: text without nulls."""
    texts = texts.cast(pa.string())  # 32-bit offsets, read below (a large_string's are 64-bit)
    ends = np.cumsum(image_counts + 1)
    is_text = np.zeros(int(ends[-1]), dtype=bool)
    is_text[ends - 1] = True
    kinds = pc.if_else(pa.array(is_text), "text", "image")
    # each part's text, null in an image part: the texts' own bytes, under offsets that give an
    # image part none of them (no copy of the text)
    bounds = np.frombuffer(texts.buffers()[1], np.int32)[texts.offset : texts.offset + len(texts) + 1]
    row = np.repeat(np.arange(len(texts)), image_counts + 1)
    offsets = np.concatenate((bounds[:1], np.where(is_text, bounds[row + 1], bounds[row]))).astype(np.int32)
    text = pa.StringArray.from_buffers(len(is_text), pa.py_buffer(offsets), texts.buffers()[2],
                                       pa.array(is_text).buffers()[1])
    content = pa.ListArray.from_arrays(pa.array(np.concatenate(([0], ends)), pa.int32()),
                                       pa.StructArray.from_arrays([kinds, text], names=["type", "text"]))
    message = pa.StructArray.from_arrays([pa.repeat(pa.scalar("user"), len(texts)), content], names=["role", "content"])
    return pa.ListArray.from_arrays(pa.array(np.arange(len(texts) + 1), pa.int32()), message)
