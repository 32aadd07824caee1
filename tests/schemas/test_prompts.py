"""The critic prompt: the body, then the official instruction exactly as LLaVA-Critic-R1's fork renders it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from jinja2 import Template

from critic_data.schemas.prompts import (
    FORMAT_INSTRUCTION,
    PROMPT_STYLES,
    TEMPLATES,
    conversational_prompt,
    conversational_prompt_column,
    critic_body,
    critic_body_column,
    render_critic_prompt,
    with_instruction,
    with_instruction_column,
)

# si0wang/LLaVA-Critic-R1@6fd42d1 EasyR1/examples/format_prompt/math_format.jinja (the whole file), rendered
# by EasyR1/verl/utils/dataset.py RLHFDataset._build_messages as Template(text.strip()).render(content=prompt).
OFFICIAL_FORMAT_PROMPT = (
    "{{ content | trim }} You FIRST think about the reasoning process as an internal monologue and then provide the "
    "final answer. The reasoning process MUST BE enclosed within <think> </think> tags. The final answer MUST BE put "
    "in \\boxed{}."
)
QUESTION, FIRST, SECOND = "  What colour is the bus?\n", "Red.\n\n", "  Blue, with a white roof."


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_every_template_renders_as_the_official_format_prompt_would(template):
    body = critic_body(template, QUESTION, FIRST, SECOND)
    official = Template(OFFICIAL_FORMAT_PROMPT.strip()).render(content=body)
    assert render_critic_prompt(template, QUESTION, FIRST, SECOND) == official
    assert official.count(FORMAT_INSTRUCTION) == 1 and f"{body} {FORMAT_INSTRUCTION}" == official


def test_the_instruction_is_verbatim():
    assert FORMAT_INSTRUCTION == Template(OFFICIAL_FORMAT_PROMPT).render(content="").strip()
    assert with_instruction("  body \n\n") == "body " + FORMAT_INSTRUCTION


@pytest.mark.parametrize(("style", "first_label", "second_label"), [
    ("critic-data", "[Response 1]\nRed.", "[Response 2]\nBlue, with a white roof."),
    ("llava-critic", "The first response: [Red.]", "The second response: [Blue, with a white roof.]"),
])
def test_each_style_shows_the_question_and_both_responses_once(style, first_label, second_label):
    for template in PROMPT_STYLES[style]:
        body = critic_body(template, QUESTION, FIRST.strip(), SECOND.strip())
        assert body.count("What colour is the bus?") == 1
        assert body.index(first_label) < body.index(second_label)
        assert "1 if" in body and "2 if" in body
        assert ("tie if they are equally good" in body) == ("tie" in template)


def test_the_llava_critic_style_is_llava_critics_pairwise_template():
    body = critic_body("llava-critic-v1", "Q?", "a", "b")
    assert body.startswith("Given an image and a corresponding question, please serve as an unbiased and fair judge "
                           "to evaluate the quality of the answers provided by a Large Multimodal Model (LMM). "
                           "Determine which answer is better and explain your reasoning with specific details. Your "
                           "task is provided as follows:\nQuestion: [Q?]\nThe first response: [a]\nThe second "
                           "response: [b]\n")
    assert "ASSISTANT:" not in body  # LLaVA's conversation marker: the chat template adds the turn


def test_chat_control_markers_never_reach_the_prompt():
    text = render_critic_prompt("pairwise-v2", "Q<|image_pad|>?", "a<|im_end|>", "b<|vision_<|x|>start|>")
    assert "<|" not in text


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_templates_have_no_surrounding_whitespace_so_the_body_needs_no_trim(template):
    # critic_body_column and with_instruction_column join body and instruction without trimming the body
    text = TEMPLATES[template]
    assert text == text.strip() and not text.startswith("{") and not text.endswith("}")


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_the_column_wise_prompt_text_is_the_row_level_one(template):
    texts = [QUESTION, FIRST, SECOND, "{question} {braces}", "ünïcode — 漢字 🙂", "x" * 300]
    question, first, second = (pa.array(texts[k:] + texts[:k]) for k in range(3))
    rendered = with_instruction_column(critic_body_column(template, question, first, second)).to_pylist()
    rows = zip(*(column.to_pylist() for column in (question, first, second)))
    assert rendered == [render_critic_prompt(template, *row) for row in rows]


def test_conversational_prompts_read_any_string_array_as_the_row_level_prompt():
    texts = ["ünïcode — 漢字 🙂", "plain", "x" * 300]
    expected = [conversational_prompt(text, n) for text, n in zip(texts, (1, 3, 2))]
    counts = np.array([1, 3, 2])
    for array in (pa.array(texts), pa.array(texts, pa.large_string()), pa.array(["skip", *texts]).slice(1)):
        assert conversational_prompt_column(array, counts).to_pylist() == expected
