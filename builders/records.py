"""The record types that flow from a source reader through the shared build steps."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple


class Pair(NamedTuple):
    """Two candidate responses to one question, the better one first."""

    better: str
    worse: str
    margin: float | None = None  # score gap, where the source has scores
    tie: bool = False  # equally good: `better`/`worse` is then arbitrary


@dataclass
class Example:
    """One input row after its source reader: the pairs it offers and how many it filtered."""

    source: str
    source_id: str
    question: str
    images: list[tuple[bytes, str | None]]  # (original encoded bytes, file name)
    pairs: list[Pair]
    pairs_formed: int  # every candidate pair the row gave, before any rule
    pairs_filtered: Counter = field(default_factory=Counter)  # rule -> pairs the source dropped
    notes: Counter = field(default_factory=Counter)  # per-row facts worth counting (e.g. unrated completions)
    origin: str | None = None  # the dataset a re-judged row comes from (LLaVA-Critic's `source`), if any
