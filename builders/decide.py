"""The ordered, single-threaded step: which offered pairs are kept, and each kept pair's label.

It sees every candidate of a build in input order (sources in build order), so its decisions
never depend on worker count: benchmark copies and pass rates out of band dropped (curation.py),
ties kept or dropped (the one place ties are decided, by
--keep-ties), duplicates dropped (exact copies, and across sources copies by content),
--balance-length, the presented order, which balances the labels, and each kept row's id, unique
in the dataset.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, NamedTuple

from critic_data.builders.duplicates import CrossSourceIndex
from critic_data.builders.options import BuildOptions
from critic_data.builders.prepare import Candidate

if TYPE_CHECKING:
    from critic_data.builders.curation import Curation

_DROPPED = (None, None)  # a dropped candidate's label and row id


class Decisions(NamedTuple):
    """What the ordered step decided about a chunk's candidates, in their order."""

    answers: list[str | None]  # each candidate's label ("1", "2", "tie"); None: dropped by a rule
    ids: list[str | None]  # each kept candidate's row id, unique in the dataset
    counts: Counter  # the pairs dropped (by rule, as duplicates) and kept, keyed as counts.py says


class Decider:
    """The ordered, single-threaded decisions: ties kept, duplicates dropped, length balance,
    presented order.

    A duplicate is a pair whose exact key (image bytes, question, responses) was kept before,
    or, in a build of several sources, whose content (`duplicates.py`) an earlier source kept.
    The copy kept first keeps its label: the earlier source's in build order (LLaVA-Critic re-judged
    the others' pairs: the original annotation wins), within a source the earlier row's. A
    duplicate whose label disagrees with the kept copy's (the other response preferred, or a tie
    against a preference) is counted apart, as a conflict, per source pair.

    A row's id (source, source id and responses, hashed) is unique but for input rows that share a
    source id and responses with another image or question: the first kept keeps it, a later one
    takes an id made from its exact key (numbered, should even that be taken). Input order decides
    which is first: ids are stable across runs and worker counts.

    Labels are balanced to within one row per (source, split) without a second pass: kept
    pairs are taken in couples in input order; the first of a couple is ordered by its keyed
    hash, the second gets the other label.

    --balance-length, per (source, split), in input order. L and S count the kept pairs whose
    better response has more / fewer characters than the worse one (equal lengths and ties are
    neither, and always kept); T(n) = options.length_tolerance(n), which never decreases. Rule:
    keep a pair unless it would make |L - S| > T(L + S). No rule deciding each pair as it comes
    drops fewer:
    - Such a rule must keep |L - S| <= T(L + S) after every pair, as the input may end there.
    - Let F be any choice of pairs meeting that after every pair, and G this rule's choice; with
      n = L + S and D = L - S of each, after every pair  n_G - n_F >= |D_G - D_F|  (*). It holds
      at the start (0 >= 0), and a pair of sign s (+1 longer, -1 shorter) keeps it: kept by both
      or by neither, nothing changes; kept by G alone, the left side grows by 1 and the right by
      at most 1; kept by F alone, G refused it, so s*D_G = T(n_G + 1) (as |D_G| <= T(n_G) <=
      T(n_G + 1) < |D_G + s|), while F took it, so s*D_F + 1 <= T(n_F + 1) <= T(n_G + 1) (n_F <=
      n_G by (*)): s*D_F < s*D_G, and both sides of (*) shrink by 1.
    - So n_G >= n_F at the end: G drops no more of these pairs than F, and neither drops others.
    A rule that sees the whole input first needs to drop only the fewest d with
    |L - S| - d <= T(L + S - d) (L, S of the input); this one can drop more: after a run of the
    side that ends up the minority (the input may end during it), or where the tolerance grew
    after a drop. With T = √n, a source without length bias loses few pairs to its chance ups
    and downs (tests/builders/test_balance_length.py measures both).
    """

    def __init__(self, options: BuildOptions, curation: Curation | None = None):
        self.options, self.curation = options, curation
        self.seen: dict[str, tuple[str, int]] = {}  # exact key -> source of the pair kept, the response it prefers
        self.ids: set[str] = set()  # of the rows kept
        self.earlier_sources = CrossSourceIndex()
        self.pending_label: dict[tuple[str, str], str | None] = defaultdict(lambda: None)
        self.lengths: dict[tuple[str, str], tuple[int, int]] = defaultdict(lambda: (0, 0))  # kept (L, S)
        self.ties_kept: Counter = Counter()  # per source

    def decide(self, candidates: list[Candidate], image: Callable[[int], bytes] | None = None) -> Decisions:
        """The decisions about a chunk's candidates, the next in input order; `image(i)` gives the
        first image of candidate i, which decontamination decodes when a benchmark's question matches."""
        copies = [None] * len(candidates)
        if candidates and candidates[0].content is not None:
            copies = self.earlier_sources.earlier_copies([c.content[0] for c in candidates],
                                                         [c.content[2] for c in candidates])
        if self.curation:
            self.curation.meet(candidates)
        counts: Counter = Counter()
        kept = [self._kept(candidate, copy, counts, partial(image, i) if image else bytes)
                for i, (candidate, copy) in enumerate(zip(candidates, copies))]
        return Decisions([answer for answer, _ in kept], [row_id for _, row_id in kept], counts)

    def source_done(self) -> None:
        self.earlier_sources.seal()

    def _kept(self, candidate: Candidate, earlier_copy: tuple[str, int] | None, counts: Counter,
              image: Callable[[], bytes]) -> tuple[str | None, str | None]:
        """The candidate's label and row id, (None, None) if it is dropped; what was decided is counted in `counts`."""
        curation = self.curation
        # a benchmark's copy first: dropped whatever else holds of it (curation.py)
        if curation and (rule := curation.contaminated(candidate, image, candidate.content and candidate.content[2])):
            counts["filtered", rule] += 1
            return _DROPPED
        if candidate.tie and not self.options.ties_allowed(self.ties_kept[candidate.source]):
            counts["filtered", "tie_dropped"] += 1  # the one place ties are decided
            return _DROPPED
        if self._is_duplicate(candidate, earlier_copy, counts):
            return _DROPPED
        if curation and (rule := curation.outside_band(candidate)):
            self._seen(candidate)  # a later copy is a duplicate, as in the build the pass rates were measured on
            counts["filtered", rule] += 1
            return _DROPPED
        if self.options.balance_length and candidate.longer:
            # before the pair is marked seen: a later copy of a pair dropped here is not a duplicate
            slot = (candidate.source, candidate.split)
            longer, shorter = self.lengths[slot]
            longer, shorter = longer + (candidate.longer > 0), shorter + (candidate.longer < 0)
            if abs(longer - shorter) > self.options.length_tolerance(longer + shorter):
                counts["filtered", "length_balance"] += 1
                return _DROPPED
            self.lengths[slot] = longer, shorter
        self._seen(candidate)
        row_id = self._unique_id(candidate)
        if candidate.origin is not None:
            counts["kept_by_origin", candidate.origin] += 1
        if candidate.tie:
            answer = "tie"
            self.ties_kept[candidate.source] += 1
        else:
            slot = (candidate.source, candidate.split)
            answer = self.pending_label[slot]
            if answer is None:
                answer = "1" if candidate.order < 0.5 else "2"
                self.pending_label[slot] = "2" if answer == "1" else "1"
            else:
                self.pending_label[slot] = None
        counts["kept", candidate.split, answer] += 1
        return answer, row_id

    def _seen(self, candidate: Candidate) -> None:
        """Mark the pair as kept: its later copies are duplicates."""
        self.seen[candidate.key] = candidate.source, candidate.preferred
        if candidate.content is not None:
            text, preferred, thumbnail = candidate.content
            self.earlier_sources.add(text, candidate.source, thumbnail, preferred)

    def _is_duplicate(self, candidate: Candidate, earlier_copy: tuple[str, int] | None, counts: Counter) -> bool:
        """Whether a copy of the pair was kept (counted by the source that kept it, and as a
        conflict when the copies' labels disagree)."""
        exact = self.seen.get(candidate.key)
        if exact is not None:
            (source, preferred), own = exact, candidate.preferred
        elif earlier_copy is not None:
            (source, preferred), own = earlier_copy, candidate.content[1]
        else:
            return False
        counts["duplicates", source] += 1
        if preferred != own:
            counts["conflicts", source] += 1
        return True

    def _unique_id(self, candidate: Candidate) -> str:
        """The kept pair's id, or, when a kept row has it already, one made from its exact key."""
        row_id = candidate.id
        if row_id in self.ids:
            row_id = base = candidate.key_id
            number = 1
            while row_id in self.ids:
                number += 1
                row_id = f"{base}-{number}"
        self.ids.add(row_id)
        return row_id
