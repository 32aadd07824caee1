"""Verifiable rewards for pairwise critic tasks, with TRL's reward-function signature.

`f(completions, **columns) -> list[float]`: `completions` holds strings or conversational
message lists; every other dataset column arrives as a keyword argument (a list per column).
A reward never raises on an odd completion: it scores it 0.0.

    r = 0.9 * preference_reward + 0.1 * format_reward        (alpha = 0.9, METHOD.md)

Rewards are registered by name (`REWARDS`), so a recipe lists them as
`reward_funcs: [preference, format]` with `reward_weights: [0.9, 0.1]`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable

from critic_data import UserError

_THINK = re.compile(r"^\s*<\s*think\s*>.*?<\s*/\s*think\s*>", re.DOTALL)
_BOXED = re.compile(r"\\boxed\s*\{")
# Wrappers a model may put around the label inside the box: \text{2}, \textbf{2}, \mathrm{2}.
_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf|textit)\s*\{([^{}]*)\}")
_LABEL = re.compile(r"^(?:response\s*)?(1|2|tie)$")


def completion_text(completion) -> str:
    """The assistant text of a completion given as a string or as a list of messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion:
        content = completion[-1].get("content", "") if isinstance(completion[-1], dict) else ""
        if isinstance(content, list):  # content parts: keep the text ones
            return "".join(p.get("text") or "" for p in content if isinstance(p, dict))
        return content if isinstance(content, str) else ""
    return ""


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} with balanced braces, or None when there is none."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i]
        # unbalanced: try the box before it
    return None


def parse_verdict(text: str) -> str | None:
    """The label ("1", "2" or "tie") named by the last box, or None if it names none cleanly."""
    content = last_boxed(text)
    if content is None:
        return None
    previous = None
    while previous != content:  # unwrap nested \text{\textbf{2}}
        previous, content = content, _WRAPPER.sub(r"\1", content)
    content = content.replace("$", "").strip().lower()
    content = re.sub(r"\s+", " ", content)
    match = _LABEL.match(content)
    return match.group(1) if match else None


def format_reward(completions, **_) -> list[float]:
    """1.0 when the completion opens with <think>, closes it, then holds a closed \\boxed{...}."""
    scores = []
    for completion in completions:
        text = completion_text(completion)
        think = _THINK.match(text)
        scores.append(1.0 if think and last_boxed(text[think.end():]) is not None else 0.0)
    return scores


def preference_reward(completions, answer, **_) -> list[float]:
    """1.0 when the last \\boxed{} names the labelled response (column `answer`), else 0.0."""
    return [
        1.0 if parse_verdict(completion_text(c)) == str(label).strip().lower() else 0.0
        for c, label in zip(completions, answer, strict=True)
    ]


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
