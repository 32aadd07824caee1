"""The column-wise rendering of offered pairs (prepare.render, then layout.lay_out_pairs in the
order the build decides) against the row-level definitions of the prompt (schemas/prompts.py):
every template, both presented orders, one or several images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from critic_data.builders import prepare as prepare_module
from critic_data.builders.layout import lay_out_pairs
from critic_data.builders.options import BuildOptions
from critic_data.builders.pipeline import build
from critic_data.builders.prepare import render
from critic_data.builders.records import Example, Pair
from critic_data.schemas.prompts import PROMPT_STYLES, conversational_prompt, render_critic_prompt
from tests.snapshots import jpeg, write_vlfeedback_parquet

TEXTS = ["plain", "ünïcode — 漢字 🙂", "line one\nline two", "{braces} and {question}", "tab\tinside", "x" * 5000]


def _examples(n_images: int) -> list[tuple[int, Example, Pair, str]]:
    offered = []
    for index, (first, second) in enumerate(zip(TEXTS, TEXTS[1:] + TEXTS[:1])):
        images = [(jpeg(10 + index * 4 + k), f"{index}-{k}.jpg") for k in range(n_images)]
        item = Example("vlfeedback", str(index), f"question {index}: {first[:10]}", images,
                       [Pair(first, second, float(index))], 1)
        offered.append((index, item, item.pairs[0], f"vlfeedback-{index}"))
    return offered


@pytest.mark.parametrize("n_images", [1, 3])
@pytest.mark.parametrize("style", sorted(PROMPT_STYLES))
@pytest.mark.parametrize("keep_ties", [0, 2])
def test_rendered_columns_are_the_row_level_prompts_in_both_orders(n_images, style, keep_ties):
    options = BuildOptions(out=Path("unused"), prompt_style=style, keep_ties=keep_ties)
    offered = _examples(n_images)
    table = render(offered, None, options)
    template = options.template()
    labels = ["tie", "2"] if keep_ties else ["1", "2"]
    for answers in (labels * len(offered))[: len(offered)], (labels[::-1] * len(offered))[: len(offered)]:
        rows = lay_out_pairs(table, list(range(len(offered))), answers, options).to_pylist()
        for row, answer, (_, item, pair, row_id) in zip(rows, answers, offered, strict=True):
            assert (row["id"], row["source"], row["source_id"], row["question"]) == (row_id, "vlfeedback",
                                                                                     item.source_id,
                                                                                      item.question)
            assert (row["margin"], row["template"], row["answer"]) == (pair.margin, template, answer)
            assert row["images"] == [{"bytes": data, "path": name} for data, name in item.images]
            first, second = (pair.worse, pair.better) if answer == "2" else (pair.better, pair.worse)  # a tie: as given
            assert (row["response_1"], row["response_2"]) == (first, second)
            text = render_critic_prompt(template, item.question, first, second)
            assert row["prompt"] == conversational_prompt(text, n_images)


@pytest.mark.parametrize("parts", [[6], [3, 3], [1, 4, 1]])
def test_picked_rows_are_taken_in_order_whether_a_run_or_scattered(parts):
    """Within one part or across the parts a chunk was rendered in (`lay_out_pairs` goes part by part)."""
    options = BuildOptions(out=Path("unused"))
    offered = _examples(1)
    bounds = np.cumsum([0, *parts])
    table = pa.concat_tables([render(offered[a:b], None, options) for a, b in zip(bounds, bounds[1:])])
    assert [batch.num_rows for batch in table.to_batches()] == parts
    for picked in ([1, 2, 3, 4], [0, 2, 5], [5], [0, 1, 2, 3, 4, 5], [2, 3]):
        answers = ["2", "1", "1", "2", "2", "1"][: len(picked)]
        rows = lay_out_pairs(table, picked, answers, options).to_pylist()
        assert [row["id"] for row in rows] == [offered[i][3] for i in picked]
        assert [row["answer"] for row in rows] == answers
        assert [row["response_1"] for row in rows] == [
            offered[i][2].worse if answer == "2" else offered[i][2].better for i, answer in zip(picked, answers)]


def test_the_easyr1_layout_is_the_body_after_an_image_placeholder():
    options = BuildOptions(out=Path("unused"), format="easyr1", prompt_style="llava-critic")
    offered = _examples(1)
    answers = ["2", "1"] * 3
    rows = lay_out_pairs(render(offered, None, options), list(range(len(offered))), answers, options)
    assert rows.column_names == ["id", "source", "source_id", "image", "question", "answer", "template"]
    for row, answer, (_, item, pair, _) in zip(rows.to_pylist(), answers, offered, strict=True):
        assert row["image"] == {"bytes": item.images[0][0], "path": item.images[0][1]}
        first, second = (pair.worse, pair.better) if answer == "2" else (pair.better, pair.worse)
        body = render_critic_prompt(options.template(), item.question, first, second)
        assert row["question"] == "<image>" + body[: body.rindex(" You FIRST think")]
    with pytest.raises(ValueError, match="one image per row"):
        render(_examples(2), None, options)


def test_arrow_images_of_the_reader_are_taken_for_their_rows():
    options = BuildOptions(out=Path("unused"))
    offered = _examples(1)[:3]
    reversed_images = pa.array([[{"bytes": item.images[0][0], "path": f"arrow-{index}"}]
                                for index, item, _, _ in offered])
    table = render([offered[2], offered[0]], reversed_images, options)
    assert [row["images"][0]["path"] for row in table.to_pylist()] == ["arrow-2", "arrow-0"]


@pytest.mark.parametrize("broken, message", [
    (lambda item, pair: Pair(pair.better, pair.better, 1.0), "identical"),
    (lambda item, pair: Pair(pair.better, pair.worse, float("nan")), "margin"),
    (lambda item, pair: Pair(pair.better, pair.worse, -1.0), "margin"),
    (lambda item, pair: Pair(" ", pair.worse, 1.0), "response_1"),
    (lambda item, pair: Pair(pair.better, "A <image> cat.", 1.0), "response_2 holds the image placeholder"),
])
def test_a_row_that_breaks_the_schema_is_a_bug_not_a_row(broken, message):
    options = BuildOptions(out=Path("unused"))
    offered = _examples(1)
    index, item, pair, row_id = offered[1]
    offered[1] = (index, item, broken(item, pair), row_id)
    with pytest.raises(ValueError, match=message):
        render(offered, None, options)


@pytest.mark.slow
def test_pairs_are_rendered_in_parts_whose_text_fits_an_arrow_array(monkeypatch, tmp_path):
    """A batch whose prompts would pass Arrow's 2 GiB string-array limit is rendered in parts:
    the same bytes. (Simulated with a limit of one pair per part: 4 GB of real text is too much here.)"""
    offered = _examples(1)
    monkeypatch.setattr(prepare_module, "RENDER_TEXT_BYTES", 1)
    assert prepare_module._text_bounded(offered) == [(i, i + 1) for i in range(len(offered))]
    snapshot = tmp_path / "snapshot"
    write_vlfeedback_parquet(snapshot, n=30)
    written = {}
    for limit in (1, 1 << 30):
        monkeypatch.setattr(prepare_module, "RENDER_TEXT_BYTES", limit)
        out = tmp_path / f"out-{limit}"
        build(BuildOptions(out=out, inputs={"vlfeedback": snapshot}, test_size=0.3, num_proc=1))
        written[limit] = {path.name: path.read_bytes() for path in sorted((out / "data").glob("*.parquet"))}
    assert written[1] == written[1 << 30] and len(written[1]) == 2
