"""The charts a user publishes (the dataset card's, `critic-data inspect --plots`): at least 800 px
wide, labelled axes, several ticks on the length-ratio log axis, legends that list what is drawn
and cover no bar, panels titled by folder name, a chance line on eval accuracy; folder names
with `$` or CJK characters drawn as written, with nothing but the report on the terminal.

The figures are caught as they are saved (`charts.save_figure`), so that each property is read
from the matplotlib objects of the real command's charts rather than from pixels.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from critic_data.cards import charts
from critic_data.cards.statistics import MARGIN_EDGES
from critic_data.inspection import inspect
from tests.cli import run_cli
from tests.critic_data.test_inspect import write_best_of_n_run

REPO = Path(__file__).resolve().parents[2]
# $-names that mathtext would read as math (a$b$c loses its $) or refuse (p$x^$q: a traceback)
HOSTILE_NAMES = ["run$1", "a$b$c", "p$x^$q", "数据集"]


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """The bundled sample built as `make demo` builds it (the README's chart is its margins)."""
    out = tmp_path_factory.mktemp("sample") / "vlfeedback-sample"
    result = run_cli("build", "--source", "vlfeedback", "--input", REPO / "sample" / "vlfeedback", "--out", out,
                     "--seed", "0")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def saved(monkeypatch, charts_drawn) -> dict:
    """file name -> the matplotlib Figure saved under it, for every chart drawn in this test (each drawn,
    none copied from an earlier test's: `charts_drawn`)."""
    figures = {}
    save = charts.save_figure

    def keep(drawing, path):
        figures[Path(path).name] = drawing
        return save(drawing, path)

    monkeypatch.setattr(charts, "save_figure", keep)
    return figures


def stats(rows=None, ratios=(0.9, 0.95, 1.0, 1.05, 1.1), tokens=False) -> dict:
    """Dataset statistics as `statistics.dataset_statistics` reports them, chosen by hand."""
    rows = rows or [{"source": "vlfeedback", "split": "train", "rows": 10, "answer_1": 6, "answer_2": 4, "ties": 0}]
    figures = {
        "rows": rows,
        "margins": {"edges": MARGIN_EDGES, "counts": {"vlfeedback": [1, 2, 3] + [0] * (len(MARGIN_EDGES) - 3)}},
        "length_bias": [{"source": "vlfeedback", "quantiles": list(ratios), "better_longer_share": 0.5}],
    }
    if tokens:
        figures["prompt_tokens"] = {"edges": [0, 100, 200], "histogram": {"train": [3, 2, 1]}, "budget": 200}
    return figures


def write_eval_run(folder: Path, categories: list[str]) -> Path:
    """results.jsonl and run.json as rl/evaluate.py writes them: per category one right, one wrong."""
    records = [{"id": f"{category}-{i}", "label": "1", "presented": [1, 2], "expected": "1", "verdict": verdict,
                "correct": verdict == "1", "completion": f"\\boxed{{{verdict}}}", "category": category}
               for category in categories for i, verdict in enumerate(("1", "2"))]
    folder.mkdir(parents=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    (folder / "run.json").write_text(json.dumps({"benchmark": "vl-rewardbench"}))
    return folder


def legend_labels(ax) -> set[str]:
    return {text.get_text() for text in ax.get_legend().get_texts()}


# --- size, axes, legends -------------------------------------------------------------------------

@pytest.mark.slow
def test_every_chart_is_at_least_800_px_wide_with_labelled_axes(tmp_path, saved):
    written = charts.write_dataset_plots([("one", stats(tokens=True))], tmp_path / "one")
    written += charts.write_dataset_plots([("one", stats(tokens=True)), ("two", stats())], tmp_path / "two")
    assert len(written) == 8
    for path in written:
        with Image.open(path) as image:
            assert image.width >= 800, path
    for name, drawing in saved.items():
        for ax in drawing.axes:
            assert ax.get_xlabel(), name
        assert drawing.axes[0].get_ylabel(), name


def test_the_length_ratio_log_axis_has_several_readable_ticks(tmp_path, saved):
    # ratios close to 1: a log2 axis ticked at powers of two alone would show only "1"
    charts.write_dataset_plots([("near one", stats(ratios=(0.9, 0.95, 1.0, 1.05, 1.1)))], tmp_path)
    ax = saved["length_ratio.png"].axes[0]
    low, high = ax.get_ylim()
    ticks = [tick for tick in ax.yaxis.get_majorticklocs() if low <= tick <= high]
    assert len(ticks) > 2 and 1.0 in ticks
    labels = [ax.yaxis.get_major_formatter()(tick, i) for i, tick in enumerate(ticks)]
    assert all(labels) and "1" in labels


def test_an_empty_responses_ratio_of_zero_or_infinity_draws_without_a_warning(tmp_path, saved, recwarn):
    charts.write_dataset_plots([("empty", stats(ratios=(0.0, 0.5, 1.0, 2.0, float("inf"))))], tmp_path)
    assert not [w for w in recwarn if "ylim" in str(w.message) or "log" in str(w.message)]
    ax = saved["length_ratio.png"].axes[0]
    assert 0 < ax.get_ylim()[0] < ax.get_ylim()[1] < float("inf")


@pytest.mark.slow
def test_legends_list_only_what_is_drawn_and_cover_no_bar(tmp_path, saved):
    no_ties = [{"source": "vlfeedback", "split": "train", "rows": 10, "answer_1": 6, "answer_2": 4, "ties": 0},
               {"source": "vlfeedback", "split": "test", "rows": 4, "answer_1": 2, "answer_2": 2, "ties": 0}]
    with_ties = [{**no_ties[0], "answer_1": 5, "ties": 1}]
    charts.write_dataset_plots([("no ties", stats(no_ties)), ("ties", stats(with_ties))], tmp_path)
    balance = saved["label_balance.png"]
    assert legend_labels(balance.axes[0]) == {'answer "1"', 'answer "2"', "half"}
    assert legend_labels(balance.axes[1]) == {'answer "1"', 'answer "2"', "tie", "half"}
    for name, drawing in saved.items():  # laid out as saved
        for ax in drawing.axes:
            legend = ax.get_legend().get_window_extent()
            assert ax.patches or name == "length_ratio.png"
            for bar in ax.patches:
                assert not legend.overlaps(bar.get_window_extent()), name


@pytest.mark.slow
def test_the_panels_of_two_datasets_are_titled_by_their_folder_names(sample, tmp_path, saved):
    first, second = tmp_path / "run$1", tmp_path / "other" / "a$b$c"
    shutil.copytree(sample, first)
    shutil.copytree(sample, second)
    inspect(str(first), against=str(second), plots=tmp_path / "plots", as_json=True)
    for name, drawing in saved.items():
        assert [ax.get_title() for ax in drawing.axes] == ["run$1", "a$b$c"], name
        assert not any(ax.title.get_parse_math() for ax in drawing.axes), name


def test_two_folders_of_one_name_are_titled_by_the_paths_given(sample, tmp_path, saved):
    shutil.copytree(sample, tmp_path / "a" / "data")
    shutil.copytree(sample, tmp_path / "b" / "data")
    inspect(str(tmp_path / "a" / "data"), against=str(tmp_path / "b" / "data"), plots=tmp_path / "plots", as_json=True)
    titles = [ax.get_title() for ax in saved["margins.png"].axes]
    assert titles == [str(tmp_path / "a" / "data"), str(tmp_path / "b" / "data")]


# --- runs ----------------------------------------------------------------------------------------

def test_eval_accuracy_has_a_chance_line_at_50_percent(tmp_path, saved):
    inspect(str(write_eval_run(tmp_path / "run", ["general", "hallucination"])), plots=tmp_path / "plots", as_json=True)
    drawing = saved["eval.png"]
    (accuracy,) = [ax for ax in drawing.axes if "accuracy" in ax.get_title()]
    chance = [line for line in accuracy.get_lines() if list(line.get_ydata()) == [50, 50]]
    assert chance and "chance" in chance[0].get_label()
    assert accuracy.get_ylim() == (0, 100)
    assert "chance (50%)" in legend_labels(accuracy)
    with Image.open(tmp_path / "plots" / "eval.png") as image:
        assert image.width >= 800


def test_best_of_n_chart_is_wide_labelled_and_its_legend_is_outside(tmp_path, saved):
    folder = write_best_of_n_run(tmp_path / "bon", "knockout")  # N = 8, answers given: a curve
    inspect(str(folder), plots=tmp_path / "plots", as_json=True)
    drawing = saved["best_of_n.png"]
    (ax,) = drawing.axes
    assert ax.get_xlabel() and ax.get_ylabel()
    assert {"knockout pick", "majority vote (N=8)", "any candidate (N=8)"} <= legend_labels(ax)
    assert not ax.get_legend().get_window_extent().overlaps(ax.get_window_extent())  # as laid out when saved
    with Image.open(tmp_path / "plots" / "best_of_n.png") as image:
        assert image.width >= 800


# --- names drawn as written ----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_dataset_folder_named_with_dollars_or_cjk_plots_silently(sample, tmp_path, name):
    folder = tmp_path / name
    shutil.copytree(sample, folder)
    result = run_cli("inspect", name, "--plots", tmp_path / "plots", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warn" not in result.stderr.lower() and "Traceback" not in result.stderr, result.stderr
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["label_balance.png", "length_ratio.png",
                                                                        "margins.png"]


@pytest.mark.slow
def test_an_eval_run_with_dollar_and_cjk_categories_plots_silently(tmp_path):
    folder = write_eval_run(tmp_path / "数据$x^$", ["$x^$", "幻觉", "a$b$c"])
    result = run_cli("inspect", folder, "--plots", tmp_path / "plots")
    assert result.returncode == 0, result.stderr
    assert "warn" not in result.stderr.lower() and "Traceback" not in result.stderr, result.stderr
    assert (tmp_path / "plots" / "eval.png").is_file()


def test_a_character_the_default_font_lacks_is_drawn_from_an_installed_font_that_has_it(tmp_path, saved):
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    default = FT2Font(font_manager.findfont(charts.FONT))
    others = [font for font in font_manager.fontManager.ttflist
              if font.name != charts.FONT and "LastResort" not in font.fname and font.weight == 400]
    found = next(((chr(code), font.name) for font in sorted(others, key=lambda f: f.name)
                  for code in sorted(FT2Font(font.fname).get_charmap()) if code > 127 and chr(code).isprintable()
                  and not default.get_char_index(code)), None)
    if found is None:
        pytest.skip("no installed font has a character that matplotlib's DejaVu Sans lacks")
    character, _ = found
    charts.write_dataset_plots([(f"data{character}", stats())], tmp_path)
    title = saved["label_balance.png"].axes[0].title
    families = title.get_fontfamily()
    assert families[0] == charts.FONT and len(families) > 1
    assert any(FT2Font(font_manager.findfont(family)).get_char_index(ord(character)) for family in families[1:])


# --- the same bytes ------------------------------------------------------------------------------

def test_the_readmes_margin_chart_is_the_sample_builds(sample, tmp_path):
    """docs/sample-margins.png is `critic-data inspect out/vlfeedback-sample --plots docs/`'s margins."""
    inspect(str(sample), plots=tmp_path, as_json=True)
    assert (tmp_path / "margins.png").read_bytes() == (REPO / "docs" / "sample-margins.png").read_bytes()
