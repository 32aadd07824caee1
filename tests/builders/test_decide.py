"""The ordered step (decide.py): its decisions and counts are its return value, chunk by chunk."""

from __future__ import annotations

from pathlib import Path

from critic_data.builders.decide import Decider
from critic_data.builders.options import BuildOptions
from critic_data.builders.prepare import Candidate


def _tie(key: str, source: str = "vlfeedback") -> Candidate:
    return Candidate(source, key, "train", 0.25, True, id=f"{source}-{key}")


def test_each_chunk_returns_the_counts_of_its_own_candidates_and_the_tie_budget_spans_chunks():
    decider = Decider(BuildOptions(out=Path("unused"), keep_ties=3))
    first = decider.decide([_tie("a"), _tie("b"), _tie("a")])
    second = decider.decide([_tie("c"), _tie("d"), _tie("e", "rlhf_v")])
    assert first.answers == ["tie", "tie", None] and first.ids == ["vlfeedback-a", "vlfeedback-b", None]
    assert first.counts == {("kept", "train", "tie"): 2, ("duplicates", "vlfeedback"): 1}
    # one more vlfeedback tie fits the budget of 3; rlhf_v's budget is its own
    assert second.answers == ["tie", None, "tie"]
    assert second.counts == {("kept", "train", "tie"): 2, ("filtered", "tie_dropped"): 1}


def test_a_kept_pair_whose_id_is_taken_gets_one_from_its_key_and_the_candidate_is_left_as_it_was():
    decider = Decider(BuildOptions(out=Path("unused")))
    twins = [Candidate("vlfeedback", key, "train", 0.25, False, id="vlfeedback-same") for key in ("k1" * 8, "k2" * 8)]
    decided = decider.decide(twins)
    assert decided.ids == ["vlfeedback-same", "vlfeedback-" + "k2" * 8] and decided.answers == ["1", "2"]
    assert [c.id for c in twins] == ["vlfeedback-same", "vlfeedback-same"]
