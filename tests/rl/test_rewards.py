"""The verifiable rewards: a table of completions and the score each reward must give."""

from __future__ import annotations

import pytest

from critic_data import UserError
from critic_data.rl.rewards import (
    DEFAULT_REWARDS,
    DEFAULT_WEIGHTS,
    REWARDS,
    boxed_verdict,
    format_reward,
    preference_reward,
    reward_function,
)

# (completion, label, expected preference_reward, expected format_reward), as the official reward
# grades them (rl/rewards.py cites it): the last "\boxed{" by position, MathRuler's grade_answer, the
# format regex after removing whitespace around <, > and /.
CASES = [
    ("<think>Response 2 is grounded.</think> \\boxed{2}", "2", 1.0, 1.0),
    ("<think>Response 2 is grounded.</think> \\boxed{2}", "1", 0.0, 1.0),
    ("< think >a</ think > \\boxed{1}", "1", 1.0, 1.0),                  # whitespace inside tags is normalised
    ("<think>a< / think >\\boxed{1}", "1", 1.0, 1.0),
    ("\n  <think>a</think>\\boxed{1}", "1", 1.0, 1.0),                    # whitespace before < goes too
    ("x <think>a</think>\\boxed{1}", "1", 1.0, 0.0),                      # the regex must match from the start
    ("<think>a</think> The answer is \\boxed{ 2 }.", "2", 1.0, 1.0),      # spaces in the box
    ("<think>a</think> \\boxed{\\text{2}}", "2", 1.0, 1.0),                # \text{} wrapper
    ("<think>a</think> \\boxed{\\textbf{2}}", "2", 1.0, 1.0),
    ("<think>a</think> \\boxed{\\text{Response 1}}", "1", 0.0, 1.0),      # a word is not the label
    ("<think>a</think> \\boxed{Response 1}", "1", 0.0, 1.0),
    ("<think>a</think> \\boxed{The first}", "1", 0.0, 1.0),
    ("<think>a</think> $\\boxed{2}$", "2", 1.0, 1.0),
    ("<think>a</think> \\boxed {2}", "2", 0.0, 0.0),                       # no "\boxed{": no answer, no format
    ("<think>a</think> \\boxed{1.0}", "1", 1.0, 1.0),                     # numeric normalisation
    ("<think>a</think> \\boxed{01}", "1", 1.0, 1.0),
    ("<think>a</think> \\boxed{{1}}", "1", 1.0, 1.0),
    ("<think>a</think> \\boxed{１}", "1", 1.0, 1.0),                       # full-width digit
    ("<think>a</think> \\boxed{1.}", "1", 1.0, 1.0),
    ("<think>a</think> \\boxed{(1)}", "1", 1.0, 1.0),
    ("<think>a</think> \\boxed{[2]}", "2", 1.0, 1.0),
    ("<think>a</think> \\boxed{one}", "1", 0.0, 1.0),
    ("<think>a</think> \\boxed{1/1}", "1", 0.0, 1.0),
    ("<think>\\boxed{1} at first</think> then \\boxed{2}", "2", 1.0, 1.0),  # the LAST box counts
    ("<think>a</think> \\boxed{2} no wait \\boxed{1}", "2", 0.0, 1.0),
    ("<think>a</think> \\boxed{1} then \\boxed{2", "1", 0.0, 1.0),       # unbalanced last box: no fall-back
    ("<think>a</think> \\boxed{}", "1", 0.0, 1.0),                         # empty box
    ("<think>a</think> \\boxed{1 or 2}", "1", 0.0, 1.0),                   # hedge
    ("<think>a</think> \\boxed{1, 2}", "1", 0.0, 1.0),
    # a quirk of MathRuler (and so of the official reward): paid as "1"
    ("<think>a</think> \\boxed{1 \\text{ and } 2}", "1", 1.0, 1.0),
    ("<think>a</think> \\boxed{1 \\text{ and } 2}", "2", 0.0, 1.0),
    ("<think>a</think> \\boxed{12}", "1", 0.0, 1.0),                       # another number
    ("<think>a</think> \\boxed{3}", "1", 0.0, 1.0),
    ("<think>a</think> \\boxed{2", "2", 0.0, 0.0),                         # unclosed box: the regex needs a }
    ("<think>a</think> \\boxed{2 and more text", "2", 0.0, 0.0),
    ("<think>a</think> \\boxed{{2}", "2", 0.0, 1.0),                       # braces unbalanced inside
    ("<think>a</think> the answer is 2", "2", 0.0, 0.0),                   # no box
    ("\\boxed{2}", "2", 1.0, 0.0),                                         # no think
    ("<think>a \\boxed{2}", "2", 1.0, 0.0),                                # think never closed
    ("I think <think>a</think> \\boxed{2}", "2", 1.0, 0.0),                # does not start with <think>
    ("<think>a \\boxed{2}</think>", "2", 1.0, 0.0),                        # box only inside the think
    ("<think>a</think><think>b</think>\\boxed{2}", "2", 1.0, 1.0),         # greedy .* spans both
    ("<think>\n\nmulti\nline\n</think>\n\\boxed{2}\n", "2", 1.0, 1.0),     # DOTALL
    ("", "1", 0.0, 0.0),
    ("<think>a</think> \\boxed{\\boxed{2}}", "2", 1.0, 1.0),               # the last box opened is the inner one
    ("<think>a</think> \\boxed{tie}", "tie", 1.0, 1.0),
    ("<think>a</think> \\boxed{Tie}", "tie", 1.0, 1.0),
    ("<think>a</think> \\boxed{tie}", "1", 0.0, 1.0),
    ("<think>" + "x" * 200_000 + "</think> \\boxed{1}", "1", 1.0, 1.0),   # 200k characters
    ("<think>a</think> \\boxed{" + "1+" * 50_000 + "1}", "1", 0.0, 1.0),
    ("<think>a</think> \\boxed{2}<|im_end|>", "2", 1.0, 1.0),
]


def test_the_table_covers_what_the_issue_lists():
    assert len(CASES) >= 40
    assert {preference for _, _, preference, _ in CASES} == {0.0, 1.0}
    assert {form for _, _, _, form in CASES} == {0.0, 1.0}


@pytest.mark.parametrize(("completion", "label", "preference", "form"), CASES)
def test_reward_table(completion, label, preference, form):
    assert preference_reward([completion], answer=[label]) == [preference]
    assert format_reward([completion]) == [form]


@pytest.mark.parametrize(("completion", "label", "preference", "form"), CASES)
def test_conversational_completions_score_like_strings(completion, label, preference, form):
    as_message = [{"role": "assistant", "content": completion}]
    as_parts = [{"role": "assistant", "content": [{"type": "text", "text": completion}]}]
    for conversational in (as_message, as_parts):
        assert preference_reward([conversational], answer=[label]) == [preference]
        assert format_reward([conversational]) == [form]


def test_batch_with_trl_keyword_columns():
    """TRL passes every dataset column and more as keyword arguments; rewards ignore what they do not need."""
    completions = ["<think>x</think>\\boxed{1}", "<think>x</think>\\boxed{2}", "\\boxed{2}"]
    columns = {"answer": ["1", "1", "2"], "prompts": [[]] * 3, "question": ["q"] * 3, "margin": [1.0, None, 2.0],
               "trainer_state": None, "completion_ids": [[1], [2], [3]]}
    assert preference_reward(completions, **columns) == [1.0, 0.0, 1.0]
    assert format_reward(completions, **columns) == [1.0, 1.0, 0.0]


@pytest.mark.parametrize("odd", [None, 3, [], [{}], [{"role": "assistant"}], [{"content": None}],
                                 [{"content": [{"type": "image"}, {"type": "text", "text": None}]}], {"content": "x"},
                                 "\\boxed{" * 500, "}" * 100 + "\\boxed{2}"])
def test_odd_completions_score_zero_and_never_raise(odd):
    assert format_reward([odd]) == [0.0]
    assert preference_reward([odd], answer=["1"]) == [0.0]


def test_labels_are_compared_as_text():
    assert preference_reward(["\\boxed{2}"], answer=[2]) == [1.0]
    assert preference_reward(["\\boxed{2}"], answer=[" 2 "]) == [1.0]
    assert preference_reward(["\\boxed{2}"], answer=[None]) == [0.0]


@pytest.mark.parametrize(("completion", "label", "preference", "form"), CASES)
def test_eval_reads_the_verdict_by_the_reward_rule(completion, label, preference, form):
    """eval and best-of-n read a verdict with boxed_verdict: it names the label exactly when the reward pays."""
    assert (boxed_verdict(completion) == label) == (preference == 1.0)


def test_boxed_verdict():
    assert boxed_verdict("\\boxed{TIE}") == "tie"
    assert boxed_verdict("\\boxed{2.0}") == "2"
    assert boxed_verdict("\\boxed{Response 1}") is None
    assert boxed_verdict("no verdict") is None
    assert boxed_verdict("\\boxed{both}") is None


def test_registry_and_default_weights():
    assert REWARDS["preference"] is preference_reward and REWARDS["format"] is format_reward
    assert dict(zip(DEFAULT_REWARDS, DEFAULT_WEIGHTS, strict=True)) == {"preference": 0.9, "format": 0.1}


def test_reward_function_by_name_or_import_path():
    assert reward_function("preference") is preference_reward
    assert reward_function("critic_data.rl.rewards.format_reward") is format_reward
    with pytest.raises(UserError, match="unknown reward"):
        reward_function("accuracy")
    with pytest.raises(UserError, match="cannot import reward"):
        reward_function("critic_data.rl.rewards.no_such_reward")
    with pytest.raises(UserError, match="cannot import reward"):
        reward_function("no_such_package.reward")


# --- rewards never raise on an odd completion --------------------------------------------------------

@pytest.mark.parametrize("parts", [
    [{"type": "text", "text": 3}],
    [{"type": "text", "text": ["\\boxed{1}"]}],
    [{"type": "text", "text": {"a": 1}}, {"type": "text", "text": "\\boxed{1}"}],
])
def test_content_parts_whose_text_is_not_text_never_raise(parts):
    completion = [{"role": "assistant", "content": parts}]
    assert format_reward([completion]) == [0.0]
    expected = 1.0 if any(p["text"] == "\\boxed{1}" for p in parts) else 0.0  # the text parts still count
    assert preference_reward([completion], answer=["1"]) == [expected]
