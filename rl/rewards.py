"""Verifiable rewards for pairwise critic tasks, graded as LLaVA-Critic-R1's reward grades them.

The official reward (si0wang/LLaVA-Critic-R1@6fd42d1, EasyR1/examples/reward_function/math.py):
- the completion is first normalised: whitespace around `<`, `>` and `/` is removed;
- format: 1.0 when the whole completion matches `<think>.*</think>.*\\boxed\\{.*\\}.*` (DOTALL;
  the braces need not balance);
- preference: 1.0 when MathRuler's `grade_answer(extract_boxed_content(completion), label)` holds:
  the LAST `\\boxed{` (an unbalanced last box is no answer, with no fall-back to an earlier one),
  compared after MathRuler's normalisation (`1.0`, `01`, `{1}`, `\\text{1}`, a full-width `１` all
  equal "1"; "Response 1" does not).

    r = 0.9 * preference_reward + 0.1 * format_reward        (math.py:32-40: format_weight 0.1)

Both follow TRL's reward signature `f(completions, **columns) -> list[float]`: `completions` holds
strings or conversational message lists; every other dataset column arrives as a keyword argument.
A reward never raises on an odd completion: a training run of days must not end on one sample.
Rewards are registered by name (`REWARDS`), so a recipe lists them as `reward_funcs: [preference, format]`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable

from mathruler.grader import extract_boxed_content, grade_answer

from critic_data import UserError
from critic_data.schemas import ANSWERS

_AROUND_TAG_CHARS = re.compile(r"\s*(<|>|/)\s*")
_FORMAT = re.compile(r"<think>.*</think>.*\\boxed\{.*\}.*", re.DOTALL)


def completion_text(completion) -> str:
    """The assistant text of a completion given as a string or as a list of messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion:
        content = completion[-1].get("content", "") if isinstance(completion[-1], dict) else ""
        if isinstance(content, list):  # content parts: keep the text ones
            texts = (p.get("text") for p in content if isinstance(p, dict))
            return "".join(text for text in texts if isinstance(text, str))
        return content if isinstance(content, str) else ""
    return ""


def normalize_completion(text: str) -> str:
    """The official normalisation: no whitespace around `<`, `>` and `/` (`< /think >` -> `</think>`)."""
    return _AROUND_TAG_CHARS.sub(r"\1", text)


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (MathRuler's rule), or None when there is none or it is
    unbalanced."""
    if r"\boxed{" not in text:
        return None
    content = extract_boxed_content(text)
    # MathRuler says "None" for an unbalanced last box; a box that holds "None" is told apart by its text
    return None if content == "None" and r"\boxed{None}" not in text else content


def _grade(text: str, label: str) -> bool:
    try:
        return bool(grade_answer(extract_boxed_content(normalize_completion(text)), label))
    except Exception:  # noqa: BLE001 - sympy can fail in many ways on model text; that sample scores 0
        return False


def boxed_verdict(text: str) -> str | None:
    """The label ("1", "2" or "tie") the completion's last \\boxed{} names by the reward's rule, or None:
    the verdict eval and best-of-n read, so that it names a label exactly when the reward pays for it."""
    return next((label for label in ANSWERS if _grade(text, label)), None)


def format_reward(completions, **_) -> list[float]:
    """1.0 when the normalised completion is `<think>...</think>...\\boxed{...}...` as a whole."""
    return [1.0 if _FORMAT.fullmatch(normalize_completion(completion_text(c))) else 0.0 for c in completions]


def preference_reward(completions, answer, **_) -> list[float]:
    """1.0 when the last \\boxed{} grades equal to the labelled response (column `answer`), else 0.0."""
    return [1.0 if label is not None and _grade(completion_text(c), str(label)) else 0.0
            for c, label in zip(completions, answer, strict=True)]


REWARDS: dict[str, Callable[..., list[float]]] = {
    "preference": preference_reward,
    "format": format_reward,
}
DEFAULT_REWARDS = ("preference", "format")
DEFAULT_WEIGHTS = (0.9, 0.1)


def reward_function(name: str) -> Callable[..., list[float]]:
    """A reward by registry name (`preference`, `format`) or by dotted import path (`pkg.module.func`)."""
    if name in REWARDS:
        return REWARDS[name]
    module, _, attribute = name.rpartition(".")
    if not module:
        raise UserError(f"unknown reward {name!r}: use one of {', '.join(REWARDS)} or a dotted import path")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as error:
        raise UserError(f"cannot import reward {name!r}: {error}") from None
