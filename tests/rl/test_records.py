"""The run records (rl/records.py): what a line of results.jsonl or picks.jsonl must hold to be read
back, tried with hostile lines; and that every recorded line reads back and writes out byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from critic_data.rl.records import Judgement, Match, Pick

GOLDEN = Path(__file__).parent / "golden"
NAN = float("nan")


def _judgement_line(**changes) -> dict:
    line = Judgement("g#0", "1", (2, 1), "2", {"group": "g", "keywords": ["mcq"]}, "... \\boxed{2}").to_json()
    return {**line, **changes}


def _without(line: dict, name: str) -> dict:
    return {key: value for key, value in line.items() if key != name}


def test_a_judgement_line_reads_back_as_written():
    line = _judgement_line()
    assert line["expected"] == "2" and line["correct"] is True
    judgement = Judgement.from_json(line, "mm-rlhf")
    assert judgement.to_json() == line and judgement.picked == 1 and judgement.category == "mcq"


@pytest.mark.parametrize("name", ["id", "label", "presented", "expected", "verdict", "correct", "completion"])
def test_a_judgement_without_a_field_is_not_one(name):
    assert Judgement.from_json(_without(_judgement_line(), name)) is None


@pytest.mark.parametrize("changes", [
    {"id": 3}, {"id": None},
    {"label": 1}, {"label": "Tie"}, {"label": NAN}, {"label": None},
    {"presented": [1.0, 2.0]}, {"presented": [True, 2]}, {"presented": [1, 1]}, {"presented": [1, 2, 3]},
    {"presented": "12"}, {"presented": [NAN, 2]},
    {"verdict": 2}, {"verdict": "3"}, {"verdict": NAN}, {"verdict": ["2"]},
    {"expected": "1"}, {"expected": 2}, {"expected": NAN},  # not the label in presented terms
    {"correct": False}, {"correct": 1}, {"correct": "true"}, {"correct": NAN},  # not what the verdict says
    {"completion": None}, {"completion": 5},
    {"group": 7}, {"keywords": "mcq"}, {"keywords": [1]}, {"category": None}, {"source": 3},
])
def test_a_judgement_with_a_field_of_another_type_or_value_is_not_one(changes):
    assert Judgement.from_json(_judgement_line(**changes)) is None


def test_a_judgement_keeps_the_fields_it_knows_and_ignores_others():
    judgement = Judgement.from_json(_judgement_line(score=0.3, rationale="x"))
    assert judgement is not None and judgement.to_json() == _judgement_line()


def test_a_benchmarks_judgement_carries_its_fields():
    """A resumed run scores by these: an MM-RLHF judgement without its id group cannot count in Acc+."""
    assert Judgement.from_json(_without(_judgement_line(), "group"), "mm-rlhf") is None
    assert Judgement.from_json(_without(_judgement_line(), "group")) is not None  # inspect reads any judgement
    vlrb = _without(_without(_judgement_line(), "group"), "keywords")
    assert Judgement.from_json(vlrb, "vl-rewardbench") is None
    assert Judgement.from_json({**vlrb, "category": "general"}, "vl-rewardbench").category == "general"
    assert Judgement.from_json({**vlrb, "source": None}, "built").category is None


# --- picks -----------------------------------------------------------------------------------------

def _pick_line(**changes) -> dict:
    """A knockout of 4 with a gold answer: judged, coin, too long."""
    matches = [Match((1, 0), "2", 0, "judge"), Match((2, 3), None, 3, "coin"), Match((0, 3), None, 0, "too-long")]
    pick = Pick("q", ["\\boxed{7}", "8", "\\boxed{7}", "\\boxed{9}"], 0, matches, ["7", "8", "7", "9"], "7", None, "7.")
    return {**pick.to_json(), **changes}


def test_a_pick_line_reads_back_as_written():
    line = _pick_line()
    assert (line["matches_played"], line["unparsed"], line["too_long"]) == (3, 1, 1)
    assert (line["pick_correct"], line["first_correct"], line["majority_correct"], line["any_correct"]) == (True,) * 4
    assert Pick.from_json(line).to_json() == line


@pytest.mark.parametrize("name", ["id", "candidates", "winner_index", "winner", "matches", "matches_played",
                                  "unparsed", "final_answers", "majority", "pick_correct", "first_correct",
                                  "majority_correct", "any_correct"])
def test_a_pick_without_a_field_is_not_one(name):
    assert Pick.from_json(_without(_pick_line(), name)) is None


def test_a_pick_from_before_too_long_was_recorded_reads_when_no_match_was_too_long():
    line = _pick_line()
    line["matches"][2] = {"shown": [0, 3], "verdict": "1", "winner": 0, "by": "judge"}
    line = _without({**line, "matches_played": 3}, "too_long")
    assert Pick.from_json(line).too_long == 0
    assert Pick.from_json(_without(_pick_line(), "too_long")) is None  # its too-long match says otherwise


def _with_match(index: int, **changes) -> dict:
    line = _pick_line()
    line["matches"][index] = {**line["matches"][index], **changes}
    return line


@pytest.mark.parametrize("line", [
    _pick_line(id=7), _pick_line(candidates=[]), _pick_line(candidates=["a", 2, "b", "c"]),
    _pick_line(winner_index=True), _pick_line(winner_index=-1), _pick_line(winner_index=4),
    _pick_line(winner_index=0.0),
    _pick_line(winner="something else"),
    _pick_line(final_answers=["7", "8", "7"]), _pick_line(final_answers=["7", "8", "7", 9]),
    _pick_line(majority=None), _pick_line(matches={}),
    _pick_line(matches_played=4), _pick_line(matches_played=3.0), _pick_line(unparsed=True),
    _pick_line(unparsed=0), _pick_line(too_long=0), _pick_line(too_long=NAN),
    _pick_line(answer=7), _pick_line(answer=NAN), _pick_line(pick_correct=False), _pick_line(any_correct=1),
    _pick_line(scores=[1, 2, 3]), _pick_line(scores=[0, True, 0, 0]),
    _with_match(0, shown=[0, 0]), _with_match(0, shown=[0, 4]), _with_match(0, shown=[1]),
    _with_match(0, shown=[1.0, 0]), _with_match(0, winner=2), _with_match(0, winner=False),
    _with_match(0, verdict="3"), _with_match(0, verdict=NAN), _with_match(0, by="vote"),
    _with_match(0, verdict="1"),  # the judge said "1": the one shown first, 1, would have won
    _with_match(0, by="coin"),  # a coin while the verdict named a position
    _with_match(1, by="judge"),  # the judge decided with no verdict
    _with_match(2, verdict="tie"),  # a match not sent has no verdict
], ids=lambda line: "")
def test_a_pick_with_a_field_of_another_type_or_value_is_not_one(line):
    assert Pick.from_json(line) is None


def test_a_pick_keeps_the_fields_it_knows_and_ignores_others():
    pick = Pick.from_json(_pick_line(seconds=3, note="x"))
    assert pick is not None and pick.to_json() == _pick_line()


def test_the_correctness_of_a_pick_follows_from_its_answers():
    pick = Pick.from_json(_pick_line(answer="9", pick_correct=False, first_correct=False, majority_correct=False))
    assert pick.right(3) and not pick.right(0) and pick.correctness()["any_correct"]
    assert Pick.from_json(_without(_pick_line(), "answer")).correctness() is None  # no gold answer: no figure


# --- what the writers wrote reads back, and writes out, byte for byte --------------------------------

@pytest.mark.parametrize("folder", sorted(GOLDEN.iterdir()), ids=lambda folder: folder.name)
def test_recorded_runs_read_back_and_write_out_byte_for_byte(folder):
    benchmark = json.loads((folder / "run.json").read_text()).get("benchmark")
    log, read = (("results.jsonl", lambda line: Judgement.from_json(line, benchmark)) if folder.name.startswith("eval")
                 else ("picks.jsonl", Pick.from_json))
    lines = (folder / log).read_text(encoding="utf-8").splitlines()
    assert [json.dumps(read(json.loads(line)).to_json(), ensure_ascii=False) for line in lines] == lines
