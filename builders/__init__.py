"""Source builders and the shared build steps.

One module per source tells that source's whole story (how to read it, how it pairs, what
it rejects); `pipeline` holds what every source shares (image checks, dedup, order, split,
writing). `SOURCES` maps each `--source` name to its spec.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from critic_data.builders.options import BuildOptions
from critic_data.builders.records import Example
from critic_data.schemas import Reject


class SourceReader(Protocol):
    """A source's rows, in parts: each part can be read in another process, and reading the
    parts in order gives every row in input order. Readers must pickle cheaply."""

    files: list[Path]  # every file the build reads (fingerprinted into the manifest)
    layout: str  # which of the source's Hub layouts was found
    total_rows: int | None  # for the progress bar, when cheap to know
    parts: Sequence  # picklable part descriptors, in input order

    def read_part(self, part) -> Iterator[Example | Reject]: ...


@dataclass(frozen=True)
class SourceSpec:
    name: str
    hub_repo: str
    hub_files: tuple[str, ...]  # allow_patterns when fetching from the Hub
    license: str
    homepage: str
    citation: str
    summary: str
    open: Callable[[Path, BuildOptions], SourceReader]  # raises UserError on a malformed folder


def _registry() -> dict[str, SourceSpec]:
    # The order is the build order of `--source all`: a pair repeated in a later source
    # (LLaVA-Critic re-judges rows of the others) is kept from the earlier one.
    from critic_data.builders import llava_critic, llava_rlhf, rlhf_v, vlfeedback

    return {spec.name: spec for spec in (vlfeedback.SOURCE, rlhf_v.SOURCE, llava_rlhf.SOURCE, llava_critic.SOURCE)}


SOURCES = _registry()
