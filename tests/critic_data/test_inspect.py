"""`critic-data inspect`: every figure against a value worked out by hand on a small build or run.

The dataset is built by the real pipeline from a VLFeedback snapshot written here row by row, so
its margins and response lengths are known (response texts are runs of one capital letter: their
length is their character count, and the tiny tokenizer has no merge for them, so it is their
token count too), plus RLHF-V's miniature snapshot with its five planted faults. Run folders are
written in the format rl/evaluate.py and rl/best_of_n.py write, the best-of-n matches played by
the real `knockout` / `round_robin` with a scripted judge.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from critic_data import UserError
from critic_data.cards.charts import write_dataset_plots
from critic_data.cards.statistics import MARGIN_EDGES, dataset_statistics
from critic_data.inspection import best_of_n_statistics, eval_statistics, inspect, write_run_plots
from critic_data.rl.best_of_n import final_answer, knockout, majority_vote, round_robin
from critic_data.rl.client import derive_seed
from critic_data.rl.evaluate import score
from critic_data.rl.metrics import knockout_winners, pick_summary
from critic_data.rl.records import Judgement, Match, Pick
from tests.cli import one_line_message, run_cli
from tests.snapshots import RLHF_V_FAULTS, _completion, jpeg, write_rlhf_v

# (better response, worse response, better rating, worse rating, image size): one VLFeedback row each.
ROWS = [
    ("B" * 40, "W" * 20, 5, 1, (64, 48)),  # margin 4, ratio 2
    ("C" * 30, "X" * 10, 5, 2, (64, 48)),  # margin 3, ratio 3
    ("D" * 20, "Y" * 40, 5, 3, (64, 48)),  # margin 2, ratio 0.5: the better one is shorter
    ("E" * 60, "Z" * 20, 4, 3, (64, 48)),  # margin 1, ratio 3
    ("F" * 25, "V" * 25, 4, 2, (64, 48)),  # margin 2, ratio 1: equal lengths are not "longer"
    ("G" * 50, "U" * 25, 3, 3, (32, 40)),  # a tie (kept with --keep-ties all): no margin, no length bias
]


def write_designed_vlfeedback(folder: Path) -> None:
    """ROWS, then a copy of row 0 (a duplicate), a row without its image and one with a single rated completion."""
    folder.mkdir(parents=True)
    rng = random.Random(0)
    lines = []
    with zipfile.ZipFile(folder / "merged_images.zip", "w") as archive:
        for i, (better, worse, good, bad, size) in enumerate(ROWS):
            completions = [_completion(rng, "x", (bad,) * 3, worse), _completion(rng, "x", (good,) * 3, better)]
            lines.append({"id": f"v{i}", "prompt": "What is shown?", "models": ["a", "b"], "completions": completions})
            archive.writestr(f"merged_images/v{i}.jpg", jpeg(i, size))
        lines.append({**lines[0], "id": "copy"})
        archive.writestr("merged_images/copy.jpg", jpeg(0, ROWS[0][4]))
        lines.append({**lines[1], "id": "no-image"})
        unrated = [_completion(rng, "x", ("N/A",) * 3, "H" * 9), _completion(rng, "x", (4,) * 3, "I" * 9)]
        lines.append({"id": "unrated", "prompt": "What is shown?", "models": ["a", "b"], "completions": unrated})
        archive.writestr("merged_images/unrated.jpg", jpeg(9))
    (folder / "vlfeedback_80k.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def _build(root: Path, name: str, **options) -> Path:
    from critic_data.builders.options import BuildOptions
    from critic_data.builders.pipeline import build

    out = root / name
    build(BuildOptions(out=out, sources=("vlfeedback", "rlhf_v"),
                       inputs={"vlfeedback": root / "vlf", "rlhf_v": root / "rlhfv"},
                       keep_ties="all", test_size=0.0, **options))
    return out


@pytest.fixture(scope="module")
def designed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inspect")
    write_designed_vlfeedback(root / "vlf")
    write_rlhf_v(root / "rlhfv", n=12)  # 7 rows used, one reject for each of RLHF_V_FAULTS
    return _build(root, "trl")


@pytest.fixture(scope="module")
def designed_easyr1(designed) -> Path:
    return _build(designed.parent, "easyr1", format="easyr1")


# --- datasets ------------------------------------------------------------------------------------

def test_rows_labels_and_ties_per_source_and_split(designed):
    rows = {(r["source"], r["split"]): r for r in dataset_statistics(designed)["rows"]}
    assert list(rows) == [("vlfeedback", "train"), ("rlhf_v", "train")]  # the build's order; test is empty
    vlf, rlhfv = rows["vlfeedback", "train"], rows["rlhf_v", "train"]
    assert (vlf["rows"], vlf["ties"], vlf["answer_1"] + vlf["answer_2"]) == (6, 1, 5)
    assert abs(vlf["answer_1"] - vlf["answer_2"]) == 1
    assert (rlhfv["rows"], rlhfv["ties"], sorted([rlhfv["answer_1"], rlhfv["answer_2"]])) == (7, 0, [3, 4])


def test_label_balance_per_split_equals_the_builds_own_count(built_dataset):
    manifest = json.loads((built_dataset / "build.json").read_text())
    rows = dataset_statistics(built_dataset)["rows"]
    assert {r["split"] for r in rows} == {"train", "test"}
    for r in rows:
        counted = manifest["sources"][r["source"]]["label_balance"][r["split"]]
        assert (r["answer_1"], r["answer_2"], r["ties"]) == (counted.get("1", 0), counted.get("2", 0),
                                                             counted.get("tie", 0))
        assert r["rows"] == manifest["splits"][r["split"]]["rows"]


def test_margin_histogram_of_the_scored_source(designed):
    margins = dataset_statistics(designed)["margins"]
    assert margins["edges"] == MARGIN_EDGES
    # margins 4, 3, 2, 1, 2 (the tie left out); RLHF-V has no score, so no histogram
    assert margins["counts"] == {"vlfeedback": [0, 0, 1, 0, 2, 0, 1, 0, 1]}


def test_length_bias_per_source(designed):
    bias = {r["source"]: r for r in dataset_statistics(designed)["length_bias"]}
    vlf = bias["vlfeedback"]
    # ratios 2, 3, 0.5, 3, 1: longer in 3 of 5, shorter in 1; sorted 0.5 1 2 3 3
    assert (vlf["pairs"], vlf["better_longer"], vlf["worse_longer"]) == (5, 3, 1)
    assert vlf["better_longer_share"] == pytest.approx(0.6)
    assert vlf["median_ratio"] == pytest.approx(2.0)
    assert vlf["quantiles"] == pytest.approx([0.7, 1.0, 2.0, 3.0, 3.0])  # p10 = 0.5 + 0.4 * (1 - 0.5)
    assert bias["rlhf_v"]["pairs"] == 7


def test_inspect_and_the_card_print_the_same_length_ratio_percentiles(designed, capsys):
    """One set of percentiles everywhere: the card's ratio column and inspect's table are both p10-p90."""
    inspect(str(designed))
    table = capsys.readouterr().out
    assert "p10-p90" in table and "p25" not in table
    assert "ratio p10–p90" in (designed / "README.md").read_text()
    # vlfeedback's ratios 0.5 1 2 3 3: p10 0.70, p90 3.00 (p25-p75 would print 1.00-3.00)
    assert "0.70-3.00" in table


def test_duplicates_and_rejects_by_reason_with_one_example(designed):
    stats = dataset_statistics(designed)
    assert stats["duplicates"] == [{"source": "vlfeedback", "dropped": 1, "of": {"vlfeedback": 1}},
                                   {"source": "rlhf_v", "dropped": 0, "of": {}}]
    rejects = {(r["source"], r["reason"]): r for r in stats["rejects"]}
    assert set(rejects) == {("vlfeedback", "image_missing"), ("vlfeedback", "rating_unparsable"),
                            *(("rlhf_v", reason) for reason in RLHF_V_FAULTS.values())}
    assert all(r["count"] == 1 for r in rejects.values())
    assert rejects["vlfeedback", "image_missing"]["example_id"] == "no-image"
    assert rejects["vlfeedback", "rating_unparsable"]["example_id"] == "unrated"
    assert all(r["example_detail"] for r in rejects.values())


def test_rejects_without_rejects_jsonl_keep_the_counts(designed, tmp_path):
    import shutil

    copy = shutil.copytree(designed, tmp_path / "from-hub")
    (copy / "rejects.jsonl").unlink()  # a pushed dataset has no rejects.jsonl unless --include-rejects
    rejects = dataset_statistics(copy)["rejects"]
    assert len(rejects) == 7 and all(r["count"] == 1 and r["example_id"] is None for r in rejects)


@pytest.mark.parametrize("damage", ["truncate", "remove"])
def test_a_damaged_or_missing_shard_is_one_line(designed, tmp_path, damage):
    import shutil

    copy = shutil.copytree(designed, tmp_path / "copy")
    [shard] = (copy / "data").glob("train-*.parquet")
    if damage == "truncate":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    else:
        shard.unlink()
    with pytest.raises(UserError, match="does not read|listed in build.json but missing") as raised:
        dataset_statistics(copy)
    assert "\n" not in str(raised.value)


@pytest.mark.slow
@pytest.mark.parametrize("swap", ["another build's shard of the same size", "the test shard"])
def test_a_shard_that_is_not_the_one_build_json_records_is_one_line(two_seeds, tmp_path, swap):
    import shutil

    first, other = two_seeds
    shard = "data/train-00000-of-00001.parquet"
    folder = shutil.copytree(first, tmp_path / "mixed")
    shutil.copy(other / shard if swap.startswith("another") else first / "data/test-00000-of-00001.parquet",
                folder / shard)
    assert dataset_statistics(folder)["rows"]  # the figures alone would report it as this dataset's
    result = _cli(str(folder))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and result.stdout == "", result.stderr
    line = " ".join(result.stderr.split())
    if swap.startswith("another"):
        assert line.endswith(f"{shard} is not the file this build wrote (content hash differs); rebuild or restore it")
    else:
        assert f"{folder} does not match its build.json: it says the train split has" in line


def test_image_sizes_and_images_per_row_from_headers(designed):
    images = dataset_statistics(designed)["images"]
    # 13 kept rows: 12 images of 64x48 (RLHF-V's and five VLFeedback ones) and the tie's 32x40
    assert images["per_row"] == {"1": 13} and images["images"] == 13 and images["unreadable"] == 0
    assert (images["width_min"], images["width_median"], images["width_max"]) == (32, 64, 64)
    assert (images["height_min"], images["height_median"], images["height_max"]) == (40, 48, 48)


def test_the_easyr1_layout_reports_what_applies(designed_easyr1):
    stats = dataset_statistics(designed_easyr1)
    assert stats["format"] == "easyr1" and stats["margins"] is None and stats["length_bias"] is None
    assert [(r["source"], r["rows"], r["ties"]) for r in stats["rows"]] == [("vlfeedback", 6, 1), ("rlhf_v", 7, 0)]
    assert stats["images"]["images"] == 13 and stats["images"]["width_min"] == 32


def test_inspect_never_decodes_an_image(designed, monkeypatch, capsys):
    from PIL import ImageFile

    def refuse(self, *args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(Image.Image, "load", refuse)
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    report = inspect(str(designed), as_json=True)
    assert report["images"]["images"] == 13 and report["images"]["unreadable"] == 0
    assert json.loads(capsys.readouterr().out)["images"]["width_min"] == 32


def _assert_pngs(paths: list[Path], names: set[str]) -> None:
    assert {p.name for p in paths} == names
    for path in paths:
        assert path.stat().st_size > 1000
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 100
            image.verify()


@pytest.mark.slow
def test_dataset_plots_are_valid_pngs_and_the_same_data_gives_the_same_bytes(designed, designed_easyr1, tmp_path):
    named = [("A", dataset_statistics(designed)), ("B", dataset_statistics(designed_easyr1))]
    first = write_dataset_plots(named, tmp_path / "one")
    _assert_pngs(first, {"label_balance.png", "margins.png", "length_ratio.png"})
    second = write_dataset_plots(named, tmp_path / "two")
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]


def test_against_puts_two_builds_side_by_side(designed, designed_easyr1, capsys):
    report = inspect(str(designed), against=str(designed_easyr1), as_json=True)
    printed = json.loads(capsys.readouterr().out)
    assert printed["dataset"]["format"] == "trl" and printed["against"]["format"] == "easyr1"
    assert report["against"]["length_bias"] is None
    inspect(str(designed), against=str(designed_easyr1))
    table = capsys.readouterr().out
    assert "rows A" in table and "rows B" in table and "not in the easyr1 layout" in table


def test_processor_counts_prompt_tokens_as_the_trainer_does(designed, tiny_qwen_dir, tmp_path, capsys):
    import datasets
    from trl import ModelConfig

    from critic_data.rl.train import CriticScriptArguments, load_processor, within_budget

    report = inspect(str(designed), processor=tiny_qwen_dir, max_prompt_length=630, plots=tmp_path, as_json=True)
    capsys.readouterr()
    tokens = report["prompt_tokens"]
    train = datasets.load_dataset(str(designed), split="train")
    processor = load_processor(ModelConfig(model_name_or_path=str(tiny_qwen_dir)), CriticScriptArguments(), False)
    _, dropped = within_budget(train, processor, 630, "train", None, log=False)
    assert 0 < dropped < 13  # the budget falls inside the prompts' range, so the check can fail both ways
    assert sum(r["over_budget"] for r in tokens["by_source"]) == dropped == tokens["histogram"]["train"][-1]
    assert sum(tokens["histogram"]["train"]) == 13 and tokens["edges"][-1] == 631
    # tokens == characters for these responses (no merges for a run of one capital): the character figures
    vlf = {r["source"]: r for r in report["length_bias_tokens"]}["vlfeedback"]
    assert (vlf["better_longer_share"], vlf["median_ratio"]) == (pytest.approx(0.6), pytest.approx(2.0))
    _assert_pngs([tmp_path / name
                  for name in ("label_balance.png", "margins.png", "length_ratio.png", "prompt_tokens.png")],
                 {"label_balance.png", "margins.png", "length_ratio.png", "prompt_tokens.png"})


# --- eval runs -----------------------------------------------------------------------------------

def _judgement(item: str, label: str, presented: tuple[int, int], verdict: str | None, **extra) -> dict:
    """A line of results.jsonl as rl/evaluate.py writes it."""
    return Judgement(item, label, presented, verdict, extra, f"... \\boxed{{{verdict}}}").to_json()


def _score(records: list[dict], benchmark: str) -> dict:
    """The summary.json figures of a run with these results.jsonl lines."""
    return score([Judgement.from_json(record, benchmark) for record in records], benchmark)


def _write_run(folder: Path, name: str, records: list[dict], run: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "run.json").write_text(json.dumps(run))
    return folder


def test_eval_accuracy_position_bias_and_unparsed_per_category(tmp_path):
    records = [
        _judgement("g1", "1", (1, 2), "1", category="general"),  # right
        _judgement("g2", "1", (2, 1), "1", category="general"),  # expected "2": wrong
        _judgement("g3", "2", (2, 1), "1", category="general"),  # right
        _judgement("g4", "2", (1, 2), None, category="general"),  # unparsed: wrong
        _judgement("h1", "1", (1, 2), "2", category="hallucination"),  # wrong
        _judgement("h2", "2", (1, 2), "2", category="hallucination"),  # right
    ]
    folder = _write_run(tmp_path / "run", "results.jsonl", records,
                        {"benchmark": "vl-rewardbench", "both_orders": False})
    with (folder / "results.jsonl").open("a") as handle:
        handle.write('{"id": "cut sh')  # an interrupted append: counted, left out
    report = eval_statistics(folder)
    rows = {r["category"]: r for r in report["categories"]}
    assert list(rows) == ["general", "hallucination", "all"] and report["lines_left_out"] == 1
    assert not report["both_orders"]
    expected = {  # judged, accuracy, unparsed, said "1", said "2", truth "1", truth "2"
        "general": (4, 0.5, 0.25, 0.75, 0.0, 0.5, 0.5),
        "hallucination": (2, 0.5, 0.0, 0.0, 1.0, 0.5, 0.5),
        "all": (6, 0.5, 1 / 6, 0.5, 1 / 3, 0.5, 0.5),
    }
    for category, values in expected.items():
        r = rows[category]
        got = (r["judgements"], r["accuracy"], r["unparsed_rate"], r["said_1"], r["said_2"], r["truth_1"], r["truth_2"])
        assert got == pytest.approx(values), category
    assert rows["all"]["accuracy"] == _score(records, "vl-rewardbench")["accuracy"]


def test_both_orders_position_consistency_per_category(tmp_path):
    records = [
        _judgement("a", "1", (1, 2), "1", source="vlfeedback"), _judgement("a", "1", (2, 1), "2", source="vlfeedback"),
        _judgement("b", "1", (1, 2), "1", source="vlfeedback"), _judgement("b", "1", (2, 1), "1", source="vlfeedback"),
        _judgement("c", "2", (1, 2), None, source="vlfeedback"),
        _judgement("c", "2", (2, 1), None, source="vlfeedback"),
        _judgement("d", "2", (1, 2), "2", source="rlhf_v"), _judgement("d", "2", (2, 1), "1", source="rlhf_v"),
    ]
    report = eval_statistics(_write_run(tmp_path / "run", "results.jsonl", records,
                                        {"benchmark": "built", "both_orders": True}))
    rows = {r["category"]: r for r in report["categories"]}
    assert report["both_orders"]
    # a and d name the same response both ways; b follows the position; c is never parsed
    assert (rows["vlfeedback"]["position_consistency"] == pytest.approx(1 / 3)
            and rows["vlfeedback"]["both_orders_items"] == 3)
    assert rows["rlhf_v"]["position_consistency"] == 1.0
    assert rows["all"]["position_consistency"] == _score(records, "built")["position_consistency"] == 0.5


def test_mm_rlhf_rows_count_in_their_first_keyword(tmp_path):
    records = [_judgement("7#0", "1", (1, 2), "1", group="7", keywords=["mcq", "long"]),
               _judgement("8#0", "1", (1, 2), "2", group="8", keywords=["safety"])]
    report = eval_statistics(_write_run(tmp_path / "run", "results.jsonl", records, {"benchmark": "mm-rlhf"}))
    assert {r["category"]: r["accuracy"] for r in report["categories"]} == {"mcq": 1.0, "safety": 0.0, "all": 0.5}


def test_judgements_without_a_category_are_other_and_the_overall_row_counts_each_once(tmp_path):
    """MM-RLHF rows whose image path names no keyword have no category: beside categorised rows they
    are "other", and the row over all counts each judgement once (it once counted them twice, as
    its own category "all" and in the overall row)."""
    records = [_judgement("7#0", "1", (1, 2), "1", group="7", keywords=["mcq"]),
               _judgement("8#0", "1", (1, 2), "2", group="8", keywords=[]),
               _judgement("9#0", "1", (1, 2), "1", group="9", keywords=[])]
    report = eval_statistics(_write_run(tmp_path / "run", "results.jsonl", records, {"benchmark": "mm-rlhf"}))
    rows = {r["category"]: (r["judgements"], r["accuracy"]) for r in report["categories"]}
    assert rows == {"mcq": (1, 1.0), "other": (2, 0.5), "all": (3, pytest.approx(2 / 3))}
    alone = eval_statistics(_write_run(tmp_path / "alone", "results.jsonl", records[1:], {"benchmark": "mm-rlhf"}))
    assert [(r["category"], r["judgements"]) for r in alone["categories"]] == [("all", 2)]


@pytest.mark.slow
def test_eval_plot_is_a_valid_png(tmp_path):
    records = [_judgement("g1", "1", (1, 2), "1", category="general"),
               _judgement("h1", "2", (1, 2), "1", category="hallucination")]
    report = eval_statistics(_write_run(tmp_path / "run", "results.jsonl", records, {"benchmark": "vl-rewardbench"}))
    _assert_pngs(write_run_plots(report, tmp_path / "plots"), {"eval.png"})


# --- best-of-n runs ------------------------------------------------------------------------------

# (question id, candidate qualities, final answers, gold): a judge that always prefers the higher
# quality makes Best-of-m the best of the first m candidates, so the curve is known by hand.
QUESTIONS = [
    ("q1", [3, 5, 1, 7, 2, 0, 8, 4], ["41", "42", "40", "42", "43", "44", "42", "45"], "42"),  # 1: no; 2, 4, 8: yes
    ("q2", [9, 1, 2, 3, 4, 5, 6, 7], ["7", "8", "8", "8", "8", "8", "8", "8"], "7"),  # right at every N
    ("q3", [1, 2, 3, 4, 5, 6, 7, 8], ["y", "x", "y", "y", "y", "y", "y", "y"], "x"),  # only Best-of-2 is right
]
CURVE = [(1, 1 / 3), (2, 1.0), (4, 2 / 3), (8, 2 / 3)]


def write_best_of_n_run(folder: Path, strategy: str, questions=QUESTIONS, seed: int = 0,
                        judge_rule: str = "quality") -> Path:
    """picks.jsonl, summary.json and run.json as rl/best_of_n.py writes them, matches played by its own strategies."""
    picks = []
    for qid, quality, answers, gold in questions:
        n = len(quality)

        async def judge(first: int, second: int, key: str, quality: list[int] = quality) -> Match:
            winner = first if judge_rule == "first" or quality[first] > quality[second] else second
            return Match((first, second), "1" if winner == first else "2", winner, "judge")

        scores = None
        if strategy == "knockout":
            winner, matches = asyncio.run(knockout(n, judge, seed, qid))
        else:
            winner, matches, scores = asyncio.run(round_robin(n, judge, seed, qid))
        candidates = [f"\\boxed{{{a}}}" for a in answers]
        finals = [final_answer(c) for c in candidates]
        picks.append(Pick(qid, candidates, winner, matches, finals, majority_vote(finals), scores, gold))
    n = len(questions[0][1])
    folder = _write_run(folder, "picks.jsonl", [p.to_json() for p in picks],
                        {"n": n, "strategy": strategy, "seed": seed})
    (folder / "summary.json").write_text(json.dumps({"n": n, "strategy": strategy, **pick_summary(picks)}))
    return folder


@pytest.mark.parametrize("strategy", ["knockout", "round-robin"])
def test_best_of_n_accuracy_against_n_from_the_recorded_matches(strategy, tmp_path):
    report = best_of_n_statistics(write_best_of_n_run(tmp_path / "run", strategy))
    assert [(p["n"], p["accuracy"]) for p in report["curve"]] == [(n, pytest.approx(a)) for n, a in CURVE]
    assert all(p["questions"] == 3 for p in report["curve"]) and report["curve_note"] is None
    # pick 2/3 (q1, q2); first sample 1/3 (q2); majority 1/3 (q1's "42" thrice); some candidate right in all 3
    assert report["accuracy"] == pytest.approx({"best_of_n": 2 / 3, "first_sample": 1 / 3, "majority_vote": 1 / 3,
                                                "any_candidate": 1.0})
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert report["accuracy"] == pytest.approx(summary["accuracy"])


def test_knockout_sub_brackets_when_n_is_not_a_power_of_two():
    # N = 6: (0,1) (2,3) (4,5), then (0's winner, 2's winner) with 4's winner waiting, then the final
    quality = [1, 0, 3, 2, 9, 5]

    async def judge(first, second, key):
        winner = first if quality[first] > quality[second] else second
        return Match((first, second), "1" if winner == first else "2", winner, "judge")

    winner, matches = asyncio.run(knockout(6, judge, 0, "q"))
    assert knockout_winners(6, matches) == {1: 0, 2: 0, 4: 2, 6: 4} and winner == 4
    broken = [replace(matches[0], shown=(0, 2)), *matches[1:]]  # not the bracket knockout plays
    assert knockout_winners(6, broken) is None


def test_round_robin_ties_are_broken_by_the_runs_seeded_coin(tmp_path):
    """A judge that always says "1" gives every candidate r_i = 0 at every N: the seeded coin picks."""
    questions = [(f"t{k}", [0] * 8, [str(i) for i in range(8)], "3") for k in range(6)]
    report = best_of_n_statistics(write_best_of_n_run(tmp_path / "run", "round-robin", questions, seed=5,
                                                      judge_rule="first"))
    expected = {m: sum(derive_seed(5, qid, "tie") % m == 3 for qid, *_ in questions) / 6 for m in (1, 2, 4, 8)}
    expected[1] = 0.0  # the first sample
    assert {p["n"]: p["accuracy"] for p in report["curve"]} == pytest.approx(expected)
    assert report["curve"][-1]["questions"] == 6  # every replay at N ends at the recorded pick


def test_a_pick_whose_matches_do_not_replay_is_left_out_and_said(tmp_path):
    folder = write_best_of_n_run(tmp_path / "run", "knockout")
    picks = [json.loads(line) for line in (folder / "picks.jsonl").read_text().splitlines()]
    # a well-formed match, of another bracket
    picks[2]["matches"][0] = {"shown": [0, 5], "verdict": "1", "winner": 0, "by": "judge"}
    (folder / "picks.jsonl").write_text("".join(json.dumps(p) + "\n" for p in picks))
    report = best_of_n_statistics(folder)
    assert [(p["n"], p["questions"]) for p in report["curve"]] == [(1, 2), (2, 2), (4, 2), (8, 2)]
    assert "1 question(s)" in report["curve_note"]


def test_best_of_n_without_answers_has_no_curve_and_says_why(tmp_path):
    folder = write_best_of_n_run(tmp_path / "run", "knockout")
    picks = [json.loads(line) for line in (folder / "picks.jsonl").read_text().splitlines()]
    (folder / "picks.jsonl").write_text("".join(json.dumps({k: v for k, v in p.items() if k != "answer"}) + "\n"
                                                for p in picks))
    report = best_of_n_statistics(folder)
    assert report["curve"] is None and report["accuracy"] is None and "answer" in report["curve_note"]


def test_best_of_n_plot_is_a_valid_png(tmp_path):
    report = best_of_n_statistics(write_best_of_n_run(tmp_path / "run", "knockout"))
    _assert_pngs(write_run_plots(report, tmp_path / "plots"), {"best_of_n.png"})


# --- the command ---------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return run_cli("inspect", *args)


def test_cli_json_parses_for_a_dataset_and_a_run(designed, tmp_path):
    result = _cli(str(designed), "--json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["kind"] == "dataset" and printed["margins"]["counts"]["vlfeedback"][8] == 1
    run = write_best_of_n_run(tmp_path / "run", "knockout")
    result = _cli(str(run), "--json", "--plots", str(tmp_path / "plots"))
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["kind"] == "best-of-n" and printed["plots"] == [str(tmp_path / "plots" / "best_of_n.png")]


@pytest.mark.parametrize(("make", "args", "message"), [
    (lambda tmp: tmp, [], "is neither a dataset folder (build.json), an eval run (results.jsonl) nor a best-of-n run"),
    (lambda tmp: tmp / "missing", [], "is not a folder"),
    (lambda tmp: write_best_of_n_run(tmp / "run", "knockout"), ["--against", "."],
     "--against and --processor apply to datasets"),
    (lambda tmp: tmp, ["--max-prompt-length", "100"], "--max-prompt-length needs --processor"),
    (lambda tmp: write_best_of_n_run(tmp / "run", "knockout"), ["--plots", "/dev/null/plots"],
     "cannot write the charts"),
])
def test_inspect_user_errors_are_one_line(make, args, message, tmp_path):
    result = _cli(str(make(tmp_path)), *args)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_a_folder_that_is_neither_is_a_user_error(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(UserError, match="neither a dataset folder"):
        inspect(str(tmp_path))


@pytest.mark.slow
def test_a_hub_id_is_downloaded_then_inspected(designed, tmp_path):
    """Pushed with `critic-data push` to the local Hub of tests/hub_server.py, inspected by its id."""
    from tests.hub_server import LocalHub, client_env

    hub = LocalHub(tmp_path / "hub", tokens={"hf_test_write": "write"}).start()
    try:
        env = client_env(tmp_path, hub.url, "hf_test_write")
        pushed = run_cli("push", designed, "--repo-id", "critic/designed", environ=env)
        assert pushed.returncode == 0, pushed.stderr
        result = run_cli("inspect", "critic/designed", "--json", environ=env)
        assert result.returncode == 0, result.stderr
        missing = run_cli("inspect", "critic/absent", environ=env)
    finally:
        hub.stop()
    printed, local = json.loads(result.stdout), dataset_statistics(designed)
    assert Path(printed["folder"]).is_relative_to(tmp_path / "hf-home")
    for figure in ("rows", "margins", "length_bias", "duplicates", "images"):
        assert printed[figure] == local[figure], figure
    # rejects.jsonl stays behind unless --include-rejects: the counts are build.json's, without examples
    assert [(r["reason"], r["count"], r["example_id"]) for r in printed["rejects"]] == \
        [(r["reason"], r["count"], None) for r in local["rejects"]]
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr
    assert ("critic/absent: no such folder, and the Hub" in missing.stderr
            and "has no dataset critic/absent" in missing.stderr)


# --- comparable numbers: unparsed verdicts both ways, every accuracy with its interval ------------

def test_eval_reports_unparsed_as_wrong_and_as_half_with_wilson_intervals(tmp_path):
    from critic_data.rl.client import percent
    from critic_data.rl.metrics import wilson_interval

    records = [
        _judgement("g1", "1", (1, 2), "1", category="general"),  # right
        _judgement("g2", "1", (2, 1), None, category="general"),  # unparsed: 0, or 1/2
        _judgement("g3", "tie", (2, 1), None, category="general"),  # unparsed on a tie: 0 either way
        _judgement("h1", "1", (1, 2), "2", category="hallucination"),  # wrong
        _judgement("h2", "2", (1, 2), None, category="hallucination"),  # unparsed: 0, or 1/2
    ]
    folder = _write_run(tmp_path / "run", "results.jsonl", records, {"benchmark": "vl-rewardbench"})
    report = eval_statistics(folder)
    rows = {r["category"]: r for r in report["categories"]}
    assert report["ci_method"] == "wilson"
    expected = {"general": (1 / 3, 1.5 / 3), "hallucination": (0.0, 0.25), "all": (1 / 5, 2 / 5)}
    for category, (accuracy, half) in expected.items():
        row = rows[category]
        assert (row["accuracy"], row["accuracy_unparsed_half"]) == pytest.approx((accuracy, half)), category
        assert row["accuracy_ci95"] == pytest.approx(wilson_interval(accuracy, row["judgements"]))
        assert row["accuracy_unparsed_half_ci95"] == pytest.approx(wilson_interval(half, row["judgements"]))
    summary = _score(records, "vl-rewardbench")  # inspect and the run's summary say the same
    assert rows["all"]["accuracy_unparsed_half"] == pytest.approx(summary["accuracy_unparsed_half"])
    assert rows["all"]["accuracy_ci95"] == pytest.approx(summary["accuracy_ci95"])
    printed = _cli(str(folder))
    assert printed.returncode == 0, printed.stderr
    table = " ".join(printed.stdout.replace("│", " ").split())
    assert "acc % (95% CI)" in table and "acc % unparsed 1/2 (95% CI)" in table and "Wilson" in table
    assert percent(rows["all"]["accuracy"], rows["all"]["accuracy_ci95"]) in table
    assert percent(rows["all"]["accuracy_unparsed_half"], rows["all"]["accuracy_unparsed_half_ci95"]) in table


def test_best_of_n_accuracies_and_curve_carry_wilson_intervals(tmp_path):
    from critic_data.rl.client import percent
    from critic_data.rl.metrics import wilson_interval

    folder = write_best_of_n_run(tmp_path / "run", "knockout")
    report = best_of_n_statistics(folder)
    assert report["ci_method"] == "wilson"
    for name, value in report["accuracy"].items():
        assert report["accuracy_ci95"][name] == pytest.approx(wilson_interval(value, 3))
    for point in report["curve"]:
        assert point["accuracy_ci95"] == pytest.approx(wilson_interval(point["accuracy"], point["questions"]))
    summary = json.loads((folder / "summary.json").read_text())  # the run's own summary: the same intervals
    assert summary["ci_method"] == "wilson" and summary["accuracy_ci95"].keys() == report["accuracy_ci95"].keys()
    assert all(summary["accuracy_ci95"][name] == pytest.approx(report["accuracy_ci95"][name])
               for name in summary["accuracy_ci95"])
    printed = _cli(str(folder))
    assert printed.returncode == 0, printed.stderr
    table = " ".join(printed.stdout.replace("│", " ").split())
    assert "acc % (95% CI)" in table and "Wilson" in table
    assert percent(report["accuracy"]["best_of_n"], report["accuracy_ci95"]["best_of_n"]) in table
    assert percent(report["curve"][0]["accuracy"], report["curve"][0]["accuracy_ci95"]) in table


# --- inspect: a build.json whose shape the figures cannot read -----------------------------------

ODD = {
    "counts null": lambda m: m["sources"]["vlfeedback"].update(counts=None),
    "a source entry null": lambda m: m["sources"].update(vlfeedback=None),
    "a split entry a list": lambda m: m["splits"].update(train=[]),
    "files null": lambda m: m["splits"]["train"].update(files=None),
    "files numbers": lambda m: m["splits"]["train"].update(files=[1]),
    "rejects_by_reason a list": lambda m: m["sources"]["vlfeedback"].update(rejects_by_reason=[1]),
    "a reject count a string": lambda m: m["sources"]["vlfeedback"].update(rejects_by_reason={"x": "many"}),
    "duplicates_of a list": lambda m: m["sources"]["vlfeedback"].update(duplicates_of=[1]),
    "duplicates_dropped negative": lambda m: m["sources"]["vlfeedback"]["counts"].update(duplicates_dropped=-3),
    "format unknown": lambda m: m.update(format="xyz"),
    "format null": lambda m: m.update(format=None),
    "format a list": lambda m: m.update(format=[]),
    "a shard listed twice": lambda m: m["splits"]["train"]["files"].append(m["splits"]["train"]["files"][0]),
}


@pytest.mark.parametrize("edit", ODD)
def test_inspect_of_a_build_json_it_cannot_read_is_one_line_naming_it(built_dataset, tmp_path, edit):
    folder = shutil.copytree(built_dataset, tmp_path / "dataset")
    _edit_json(folder / "build.json", ODD[edit])
    with pytest.raises(UserError) as caught:
        inspect(str(folder))
    assert f"{folder / 'build.json'} is not a critic-data manifest" in one_line_message(caught)


def test_inspect_of_a_build_json_nested_past_the_recursion_limit_is_one_line(built_dataset, tmp_path):
    folder = shutil.copytree(built_dataset, tmp_path / "dataset")
    text = (folder / "build.json").read_text().rstrip()
    (folder / "build.json").write_text(text[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(UserError) as caught:
        inspect(str(folder))
    assert str(folder / "build.json") in one_line_message(caught)


@pytest.mark.parametrize("where", ["absolute", "dotdot"])
def test_inspect_never_reads_a_listed_shard_outside_the_folder(built_dataset, tmp_path, where):
    """A build.json (one downloaded from the Hub, say) naming a parquet file elsewhere: refused, not
    reported as if it were the dataset's."""
    folder = shutil.copytree(built_dataset, tmp_path / "dataset")
    outside = shutil.copy(folder / "data" / "test-00000-of-00001.parquet", tmp_path / "elsewhere.parquet")
    listed = str(outside) if where == "absolute" else "data/../../elsewhere.parquet"
    _edit_json(folder / "build.json", lambda m: m["splits"]["test"].update(files=[listed]))
    with pytest.raises(UserError) as caught:
        inspect(str(folder))
    line = one_line_message(caught)
    assert listed in line and "outside the folder" in line


def test_a_listed_shard_that_is_a_fifo_is_one_line_and_never_opened(built_dataset, tmp_path):
    folder = shutil.copytree(built_dataset, tmp_path / "dataset")
    shard = folder / "data" / "train-00000-of-00001.parquet"
    shard.unlink()
    os.mkfifo(shard)
    with pytest.raises(UserError) as caught:
        inspect(str(folder))
    assert "data/train-00000-of-00001.parquet" in one_line_message(caught) and "not a regular file" in str(caught.value)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["runs[1]", "run*"])
def test_a_folder_whose_name_looks_like_a_glob_is_read_as_named(built_dataset, tmp_path, name):
    """polars reads a path as a glob pattern by default: `runs[1]` ended in "invalid glob
    pattern", and `run*` also read the shards of `runs-other` beside it (twice the rows)."""
    from critic_data.cards.statistics import dataset_statistics
    from critic_data.hub import plan_push

    folder = shutil.copytree(built_dataset, tmp_path / name)
    shutil.copytree(built_dataset, tmp_path / "runs-other")
    (tmp_path / "runs-other" / "rejects.jsonl").write_text("")
    expected = dataset_statistics(built_dataset)
    found = dataset_statistics(folder)
    for figure in ("rows", "margins", "length_bias", "rejects", "images"):
        assert found[figure] == expected[figure], figure
    assert plan_push(folder, "critic/vlf").files["README.md"]


# --- inspect: run folders ------------------------------------------------------------------------

def _eval_run(folder: Path) -> Path:
    records = [_judgement(f"i{k}", "1", (1, 2), "1" if k % 2 else "2") for k in range(6)]
    return _write_run(folder, "results.jsonl", records, {"benchmark": "built"})


@pytest.mark.parametrize("n", ["8", 10**9, 0, -4, True, None])
def test_a_best_of_n_run_json_with_an_odd_n_replays_the_recorded_candidates(tmp_path, n):
    """n is what picks.jsonl records (one final answer per candidate), whatever run.json says: a
    string used to end in a traceback, 10**9 in a bracket of a billion candidates."""
    folder = write_best_of_n_run(tmp_path / "run", "knockout")
    _edit_json(folder / "run.json", lambda run: run.update(n=n))
    started = time.monotonic()
    report = best_of_n_statistics(folder)
    assert report["n"] == 8 and [point["n"] for point in report["curve"]] == [1, 2, 4, 8]
    assert time.monotonic() - started < 10


def test_a_pick_without_candidates_is_left_out_not_fatal(tmp_path):
    folder = write_best_of_n_run(tmp_path / "run", "knockout")
    lines = (folder / "picks.jsonl").read_text().splitlines()
    first = {**json.loads(lines[0]), "final_answers": []}
    (folder / "picks.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    (folder / "run.json").unlink()
    (folder / "summary.json").unlink()
    report = best_of_n_statistics(folder)
    assert (report["n"], report["questions"], report["lines_left_out"]) == (8, 2, 1)


@pytest.mark.parametrize("kind", ["eval", "best-of-n"])
def test_a_summary_whose_options_are_not_an_object_is_read_as_absent(tmp_path, kind):
    folder = _eval_run(tmp_path / "run") if kind == "eval" else write_best_of_n_run(tmp_path / "run", "knockout")
    (folder / "run.json").unlink()
    (folder / "summary.json").write_text(json.dumps({"options": [1, 2]}))
    report = eval_statistics(folder) if kind == "eval" else best_of_n_statistics(folder)
    assert report["kind"] == kind and report["questions" if kind == "best-of-n" else "judgements"] in (3, 6)


@pytest.mark.slow
def test_a_run_json_that_is_a_fifo_is_one_line_not_a_hang(tmp_path):
    folder = _eval_run(tmp_path / "run")
    (folder / "run.json").unlink()
    os.mkfifo(folder / "run.json")
    result = run_cli("inspect", folder)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "run.json is not a regular file" in result.stderr


def _edit_json(path: Path, edit) -> None:
    value = json.loads(path.read_text())
    edit(value)
    path.write_text(json.dumps(value))
