"""The dataset card: Hub metadata read back by huggingface_hub's and datasets' own parsers, and a
body that reports the build (counts, rejects, balance, exact command, options, snippets,
citations) from build.json, and the figures of its data files (source mix, label balance, length
bias, margins) with their charts, the same bytes on every build. The card of a push, rendered
with the repo id, is in test_push.py.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard

from critic_data import cli_flags
from critic_data.builders import SOURCES
from critic_data.builders.options import BuildOptions
from critic_data.cards.dataset_card import build_license, render_dataset_card
from critic_data.hub import source_specs
from critic_data.schemas import FORMATS
from tests.snapshots import write_llava_critic, write_rlhf_v, write_vlfeedback_jsonl

RESOURCES = Path(datasets.__file__).parent / "utils" / "resources"  # the Hub's allowed metadata values


@pytest.fixture(scope="module")
def cli_build(tmp_path_factory) -> tuple[Path, list[str]]:
    """Two sources built by the real command, with an option value that needs shell quoting."""
    root = tmp_path_factory.mktemp("card")
    write_vlfeedback_jsonl(root / "vlf", n=40, seed=2)
    write_rlhf_v(root / "rlhfv", n=12, seed=2)
    argv = ["critic-data", "build", "--source", "vlfeedback,rlhf_v", "--input", f"vlfeedback={root / 'vlf'}",
            "--input", f"rlhf_v={root / 'rlhfv'}", "--out", str(root / "out"), "--seed", "7", "--test-size", "0.3",
            "--aspects", "Helpfulness,Visual Faithfulness", "--num-proc", "1"]
    result = subprocess.run([str(Path(sys.executable).parent / "critic-data"), *argv[1:]], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    return root / "out", argv


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "build.json").read_text())


@pytest.mark.slow
def test_metadata_is_read_back_by_the_hub_and_datasets_parsers(cli_build):
    out, _ = cli_build
    manifest = manifest_of(out)
    card = DatasetCard.load(out / "README.md")
    data = card.data

    assert DatasetCard(str(card)).data.to_dict() == data.to_dict()  # the card classes keep it as it is
    assert data.license == "cc-by-nc-4.0"  # RLHF-V's, the most restrictive of the two sources
    assert data.source_datasets == ["MMInstruction/VLFeedback", "openbmb/RLHF-V-Dataset"]
    assert data.task_categories == ["image-text-to-text"]
    assert set(data.size_categories) <= set(json.loads((RESOURCES / "size_categories.json").read_text()))
    assert set(data.language) <= set(json.loads((RESOURCES / "languages.json").read_text()))
    assert {"preference", "critic-data"} <= set(data.tags)

    # `configs` is what the viewer and load_dataset use: each split's pattern matches exactly its shards.
    configs = MetadataConfigs.from_dataset_card_data(data)
    data_files = {entry["split"]: entry["path"] for entry in configs["default"]["data_files"]}
    shards = [f for split in manifest["splits"].values() for f in split["files"]]
    for split, info in manifest["splits"].items():
        assert sorted(f for f in shards if fnmatch.fnmatch(f, data_files[split])) == sorted(info["files"])

    info = DatasetInfosDict.from_dataset_card_data(data)["default"]
    assert info.features.to_dict() == FORMATS["trl"]
    assert {name: s.num_examples for name, s in info.splits.items()} == {n: s["rows"]
                                                                         for n, s in manifest["splits"].items()}


def test_body_reports_the_build(cli_build):
    out, argv = cli_build
    manifest = manifest_of(out)
    text = (out / "README.md").read_text()

    for name, stats in manifest["sources"].items():
        c = stats["counts"]
        assert (f"| {name} | {c['rows_read']} | {c['rows_used']} | {c['rows_rejected']} | {c['pairs_formed']} | "
                f"{sum(c['pairs_filtered'].values())} | {c['duplicates_dropped']} | {c['pairs_kept']} |") in text
        for split, labels in stats["label_balance"].items():  # the build's count: the data files' too
            if sum(labels.values()):
                share = 100 * sum(labels.values()) / manifest["splits"][split]["rows"]
                assert (f"| {name} | {split} | {sum(labels.values())} | {share:.1f}% | {labels.get('1', 0)} | "
                        f"{labels.get('2', 0)} |") in text
        assert stats["rejects_by_reason"]  # the snapshots plant faults in both sources
        for reason, n in stats["rejects_by_reason"].items():
            assert f"| {name} | `{reason}` | {n} |" in text
        assert SOURCES[name].citation.strip() in text
    assert "@article{xiong2024llavacritic" in text and "@article{wang2025llavacriticr1" in text

    # The exact command, quoted so that pasting it into a shell runs the same build; its paths by
    # the folders' names only (they lie outside the working directory: a card names no local path).
    command = re.search(r"## How it was built\n\n```bash\n(.*)\n```", text).group(1)
    assert shlex.split(command) == [word.replace(f"{out.parent}/", "") for word in argv]
    for key in manifest["options"]:  # by their flags (test_the_options_are_named_by_the_flags_the_user_types)
        assert f"| `{cli_flags(BuildOptions)[key]}` |" in text

    assert 'load_dataset("OWNER/NAME")' in text  # a local build does not know its repo yet
    assert "critic-data train --recipe critic-r1 --dataset_name OWNER/NAME" in text
    assert "GRPOTrainer(" in text and "preference_reward" in text


def test_loading_snippet_runs(built_dataset, capsys):
    manifest = manifest_of(built_dataset)
    text = render_dataset_card(manifest, source_specs(manifest), repo_id=str(built_dataset))
    snippet = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(snippet, namespace)  # noqa: S102 - the card's own snippet, against the local folder
    assert namespace["ds"]["train"].num_rows == manifest["splits"]["train"]["rows"]
    assert namespace["row"]["answer"] in capsys.readouterr().out


def test_a_python_build_without_rejects_is_reported_as_such(built_dataset):
    manifest = copy.deepcopy(manifest_of(built_dataset))
    manifest["command"] = None
    for stats in manifest["sources"].values():
        stats["rejects_by_reason"] = {}
    text = render_dataset_card(manifest, source_specs(manifest))
    assert "Built from Python" in text and "```bash\ncritic-data build" not in text
    assert "| vlfeedback | none | 0 |" in text


@pytest.mark.parametrize("names, expected", [
    (["llava_critic"], "apache-2.0"),
    (["llava_critic", "vlfeedback"], "unknown"),
    (["vlfeedback", "rlhf_v", "llava_critic"], "cc-by-nc-4.0"),
])
def test_build_license_is_the_most_restrictive(names, expected):
    assert build_license([SOURCES[name] for name in names]) == expected


# --- the data's figures and charts (issue 13) ------------------------------------------------------

IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def test_the_card_shows_the_figures_of_the_data_files_and_embeds_their_charts(cli_build, tmp_path):
    from critic_data.cards.charts import write_dataset_plots
    from critic_data.cards.statistics import dataset_statistics

    out, _ = cli_build
    manifest = manifest_of(out)
    text = (out / "README.md").read_text(encoding="utf-8")
    stats = dataset_statistics(out)  # what `critic-data inspect` counts, computed here on its own

    # source mix and label balance per source and split
    assert {r["source"] for r in stats["rows"]} == {"vlfeedback", "rlhf_v"}
    for r in stats["rows"]:
        share = 100 * r["rows"] / manifest["splits"][r["split"]]["rows"]
        assert (f"| {r['source']} | {r['split']} | {r['rows']} | {share:.1f}% | {r['answer_1']} | {r['answer_2']} |"
                in text)
    # length bias per source
    for r in stats["length_bias"]:
        p10, *_, p90 = r["quantiles"]
        assert (f"| {r['source']} | {r['pairs']} | {r['better_longer']} | {r['worse_longer']} | "
                f"{100 * r['better_longer_share']:.1f}% | {r['median_ratio']:.2f} | {p10:.2f}–{p90:.2f} |") in text
    # the margin histogram of the scored source (RLHF-V has no scores: no column)
    counts = stats["margins"]["counts"]
    assert list(counts) == ["vlfeedback"] and sum(counts["vlfeedback"]) > 0
    assert "| margin | vlfeedback |" in text
    edges = stats["margins"]["edges"]
    for i, count in enumerate(counts["vlfeedback"]):
        label = f"{edges[i]:g}-{edges[i + 1]:g}" if i + 1 < len(edges) else f"≥{edges[-1]:g}"
        assert (f"| {label} | {count} |" in text) == (count > 0)

    # The charts are embedded by relative links to PNG files beside the card, and they are the
    # charts of these figures: drawn again from inspect's statistics, they are the same bytes.
    links = IMAGE_LINK.findall(text)
    assert links == ["plots/label_balance.png", "plots/length_ratio.png", "plots/margins.png"]
    assert sorted(f"plots/{p.name}" for p in (out / "plots").iterdir()) == sorted(links)
    redrawn = write_dataset_plots([("this dataset", stats)], tmp_path / "redrawn")
    for link in links:
        assert (out / link).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert (out / link).read_bytes() == (tmp_path / "redrawn" / Path(link).name).read_bytes(), link
    assert len(redrawn) == len(links)


@pytest.mark.slow
def test_two_builds_of_the_same_input_give_the_same_card_and_charts(tmp_path):
    from critic_data.builders.options import BuildOptions
    from critic_data.builders.pipeline import build

    write_vlfeedback_jsonl(tmp_path / "vlf", n=40, seed=4)
    out = tmp_path / "out"
    options = dict(out=out, inputs={"vlfeedback": tmp_path / "vlf"}, test_size=0.25, overwrite=True)
    first = build(BuildOptions(**options))
    before = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    second = build(BuildOptions(**options, num_proc=2))  # the build it replaces has plots/: still its own
    after = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert {Path("README.md"), Path("plots/label_balance.png"), Path("plots/margins.png")} <= set(before)
    assert set(after) == set(before)
    for path in before:
        if path.name != "build.json":
            assert after[path] == before[path], path
    # build.json may differ in the timings only, and the card renders none of them
    assert {**first, "timings": None} == {**second, "timings": None}
    assert "seconds" not in before[Path("README.md")].decode()
    slow = {**second, "timings": {"sources_seconds": {"vlfeedback": 99999.5}, "total_seconds": 123456.5}}
    assert render_dataset_card(slow, source_specs(slow)) == render_dataset_card(second, source_specs(second))


def test_an_easyr1_card_shows_what_its_layout_holds(tmp_path):
    from critic_data.builders.options import BuildOptions
    from critic_data.builders.pipeline import build

    write_vlfeedback_jsonl(tmp_path / "vlf", n=24, seed=1)
    build(BuildOptions(out=tmp_path / "out", inputs={"vlfeedback": tmp_path / "vlf"}, format="easyr1", test_size=0.0))
    text = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    assert IMAGE_LINK.findall(text) == ["plots/label_balance.png"]
    assert [p.name for p in (tmp_path / "out" / "plots").iterdir()] == ["label_balance.png"]
    assert "Length bias and score margins are not shown" in text and "### Length bias" not in text
    assert "response_1" not in text


def test_a_card_rendered_without_figures_has_no_statistics_section(built_dataset):
    text = render_dataset_card(manifest_of(built_dataset), source_specs(manifest_of(built_dataset)))
    assert "## Statistics" not in text and not IMAGE_LINK.findall(text)
    assert "(counted from the data files)" not in text


@pytest.mark.slow
def test_the_official_composition_trains_on_every_row_and_its_card_says_what_differs_from_the_official_set(tmp_path):
    """`--prompt-style llava-critic` is the official RL set's style, which LLaVA-Critic-R1 trained on whole:
    its default --test-size is 0, so the README's one command gives no test split. The card lists what
    still differs (rows dropped, the presented order, the label sentence); other builds hold out 2%."""
    from critic_data.builders.options import BuildOptions

    write_llava_critic(tmp_path / "critic", n=40)
    command = [str(Path(sys.executable).parent / "critic-data"), "build", "--source", "llava_critic", "--input",
               str(tmp_path / "critic"), "--keep-ties", "all", "--prompt-style", "llava-critic", "--num-proc", "1"]
    for out, extra in (("official", []), ("held-out", ["--test-size", "0.5"])):
        result = subprocess.run([*command, "--out", str(tmp_path / out), *extra], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
    official = manifest_of(tmp_path / "official")
    assert official["options"]["test_size"] == 0.0 and official["splits"]["test"]["rows"] == 0
    assert [p.name for p in (tmp_path / "official" / "data").iterdir()] == ["train-00000-of-00001.parquet"]
    card = " ".join((tmp_path / "official" / "README.md").read_text().split())
    assert "## Compared with the official RL set" in card
    assert "**Split**: none: every row is in `train`, as in the official run" in card
    assert "**Rows dropped**: 1 rows whose judge prompt or verdict does not parse" in card  # the row of no verdict
    assert ('"The final answer is 1 if the first response is better, 2 if the second response is better, tie if they '
            'are equally good."') in card
    assert "**Presented order**" in card and "**Ties**: kept, labelled `tie`" in card
    held_out = manifest_of(tmp_path / "held-out")
    assert held_out["splits"]["test"]["rows"] > 0
    assert f"{held_out['splits']['test']['rows']} rows (`--test-size 0.5`) are held out as `test`" in " ".join(
        (tmp_path / "held-out" / "README.md").read_text().split())
    # other prompt styles keep their 2%, and say nothing of the official set
    assert BuildOptions(out=tmp_path / "x").test_size == 0.02
    assert BuildOptions(out=tmp_path / "x", prompt_style="llava-critic", test_size=0.1).test_size == 0.1
    ours = {**official, "options": {**official["options"], "prompt_style": "critic-data"}}
    assert "official RL set" not in render_dataset_card(ours, source_specs(ours))


# --- a card worth publishing: an example, its uses and limits, its words, its flags (issue 23) --------

def card_markdown(text: str):
    """The card's body (after its YAML header) as markdown-it reads it: CommonMark, HTML allowed, with
    GitHub's tables, as the Hub shows it."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table"), text.split("\n---\n", 1)[1]


def example_block(text: str) -> str:
    """The text of the code block under the card's "An example row" heading."""
    parser, body = card_markdown(text)
    tokens = parser.parse(body)
    start = next(i for i, t in enumerate(tokens) if t.type == "inline" and t.content == "An example row")
    return next(t for t in tokens[start:] if t.type == "fence").content.removesuffix("\n")


def first_train_row(folder: Path) -> dict:
    import pyarrow.parquet as pq

    shard = manifest_of(folder)["splits"]["train"]["files"][0]
    return pq.read_table(folder / shard,
                         columns=["id", "source_id", "prompt", "answer", "margin"]).slice(0, 1).to_pylist()[0]


def test_the_card_shows_the_first_train_row_as_the_model_sees_it(cli_build):
    out, _ = cli_build
    text = (out / "README.md").read_text(encoding="utf-8")
    row = first_train_row(out)
    parts = row["prompt"][0]["content"]
    assert [part["type"] for part in parts] == ["image", "text"]
    shown = example_block(text)
    # the image as <image>, then the prompt's text whole (short: wrapped for the page, never cut)
    assert shown.startswith("<image>\n") and "[…" not in shown
    assert shown.split() == ["<image>", *parts[1]["text"].split()]
    assert f"`{row['id']}`" in text and f"`{row['source_id']}`" in text
    assert f"Its `answer` is `{row['answer']}` (score margin {row['margin']:.2f})" in text
    # the same row however the card is rendered: again from the same shards, for a push
    from critic_data.hub import plan_push

    pushed = plan_push(out, "someone/critic-set").files["README.md"].decode()
    assert pushed.replace("someone/critic-set", "OWNER/NAME") == text


HOSTILE = ("a | b || c\n---\n# Injected heading\n<script>alert(1)</script>\n```\n````\n~~~\n| x | y |\n|---|---|\n"
           "[link](javascript:alert(1)) ![pixel](http://example.com/x.png) <!-- open comment $$x$$ \\boxed{2} &amp; "
           "<details><summary>x</summary>\n\x1b[2J\x07 bell")


def hostile_snapshot(folder: Path) -> None:
    """A VLFeedback snapshot whose every question and response is made of what breaks Markdown and
    HTML, one response a very long line, another very many lines (each text its row's own)."""
    write_vlfeedback_jsonl(folder, n=16, seed=5, quirks=False)
    path = folder / "vlfeedback_80k.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        row["prompt"] = f"{HOSTILE} question of {row['id']}?"
        for k, completion in enumerate(row["completions"]):
            filler = (f"{'word ' * 900}\n" if k % 2 else "\n".join(f"line {i} ``" for i in range(150)))
            completion["response"] = f"{HOSTILE}\nresponse {k} of {row['id']}\n{filler}\n```"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def card_structure(text: str) -> list[tuple]:
    """The card's blocks as markdown-it reads them (headings with their text, tables, lists, code),
    without the text of paragraphs and code blocks."""
    parser, body = card_markdown(text)
    tokens = parser.parse(body)
    return [(t.type, t.tag, tokens[i + 1].content if t.type == "heading_open" else None)
            for i, t in enumerate(tokens) if t.type not in ("inline", "text")]


@pytest.mark.slow
def test_hostile_texts_in_the_example_row_cannot_break_the_card(tmp_path):
    from critic_data.builders.pipeline import build
    from critic_data.cards.dataset_card import EXAMPLE_LINES, EXAMPLE_WIDTH

    write_vlfeedback_jsonl(tmp_path / "plain", n=16, seed=5, quirks=False)
    hostile_snapshot(tmp_path / "hostile")
    for name in ("plain", "hostile"):
        build(BuildOptions(out=tmp_path / f"{name}-out", inputs={"vlfeedback": tmp_path / name}, test_size=0.25))
    plain = (tmp_path / "plain-out" / "README.md").read_text(encoding="utf-8")
    text = (tmp_path / "hostile-out" / "README.md").read_text(encoding="utf-8")

    # The same blocks as the card of plain texts: no heading, table, list, rule or HTML of their own,
    # and the example's text inside its one code block.
    assert card_structure(text) == card_structure(plain)
    parser, body = card_markdown(text)
    assert not [t for t in parser.parse(body) if t.type in ("html_block", "html_inline")]
    for inline in (t for t in parser.parse(body) if t.type == "inline"):
        assert not [child for child in inline.children if child.type == "html_inline"], inline.content
    html = parser.render(body)
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<details" not in html and 'href="javascript' not in html and 'src="http://example.com' not in html
    assert "\x1b" not in text and "\x07" not in text  # a terminal showing the card runs no escape

    shown = example_block(text)
    assert "<script>alert(1)</script>" in shown and "# Injected heading" in shown and "| x | y |" in shown
    # Each long text cut on its own where marked, so that both responses show (one of very many
    # lines, one of a very long line), and the instruction that ends the prompt; every line at most
    # EXAMPLE_WIDTH characters, at most EXAMPLE_LINES lines.
    row = first_train_row(tmp_path / "hostile-out")
    question, first, second = re.split(r"\n\[(?:Response 1|Response 2)\]\n", shown.split("\n[Question]\n", 1)[1])
    for text_shown in (question, first, second):
        assert text_shown.startswith("a | b || c\n---\n# Injected heading")
    assert f"question of {row['source_id']}?" in question
    for response in (first, second):
        assert re.search(rf"response \d of {row['source_id']}\b", response)
        assert len(re.findall(r"\[… [\d,]+ more characters\]", response)) == 1
    assert shown.endswith("The final answer MUST BE put in \\boxed{}.")
    lines = shown.split("\n")
    assert len(lines) <= EXAMPLE_LINES + 1 and max(map(len, lines)) <= EXAMPLE_WIDTH
    assert len(text) < len(plain) + 10_000  # a row of texts of any length gives a card of about this size

    # The easyr1 layout's question holds the whole prompt: too long, its middle lines are left out.
    build(BuildOptions(out=tmp_path / "easyr1", inputs={"vlfeedback": tmp_path / "hostile"}, format="easyr1"))
    easyr1 = (tmp_path / "easyr1" / "README.md").read_text(encoding="utf-8")
    shown = example_block(easyr1)
    lines = shown.split("\n")
    assert lines[0].startswith("<image>You are shown") and re.fullmatch(r"\[… [\d,]+ more lines\]",
                                                                        lines[EXAMPLE_LINES * 3 // 4])
    assert len(lines) == EXAMPLE_LINES + 1 and max(map(len, lines)) <= EXAMPLE_WIDTH
    assert shown.endswith("2 if Response 2 is better.")
    assert "<script" not in card_markdown(easyr1)[0].render(card_markdown(easyr1)[1])


def test_the_card_says_what_the_data_is_for_who_labelled_it_and_what_may_overlap_a_benchmark(tmp_path):
    """Only of the sources in the build: their labellers, licences and benchmark overlap."""
    from critic_data.builders.pipeline import build
    from tests.snapshots import write_llava_rlhf

    write_vlfeedback_jsonl(tmp_path / "vlf", n=30, seed=1)
    write_rlhf_v(tmp_path / "rlhfv", n=12, seed=1)
    write_llava_rlhf(tmp_path / "rlhf", tmp_path / "coco", n=12, seed=1)
    write_llava_critic(tmp_path / "critic", n=12, seed=1)
    inputs = {"vlfeedback": tmp_path / "vlf", "rlhf_v": tmp_path / "rlhfv", "llava_rlhf": tmp_path / "rlhf",
              "llava_critic": tmp_path / "critic"}
    out = tmp_path / "out"
    build(BuildOptions(out=out, sources=tuple(inputs), inputs=inputs, image_root=tmp_path / "coco", test_size=0.2))
    manifest = manifest_of(out)

    def section(text: str) -> str:
        return " ".join(text.split("## Intended use and limitations\n", 1)[1].split("\n## ", 1)[0].split())

    every = section((out / "README.md").read_text(encoding="utf-8"))
    assert "training and evaluating multimodal critics with verifiable rewards" in every
    for name, judge in (("vlfeedback", "GPT-4V"), ("llava_critic", "GPT-4o")):
        assert f"- {name}: GPT-labelled: {judge}" in every
    for name in ("rlhf_v", "llava_rlhf"):
        assert f"- {name}: human:" in every
    for name in inputs:
        assert f"- {name}: `{SOURCES[name].license}`;" in every
    assert "VL-RewardBench" in every and "rows of vlfeedback, rlhf_v, llava_critic may hold" in every
    # the biases it names are the figures the card measured
    from critic_data.cards.statistics import card_statistics

    for row in card_statistics(out, manifest)["length_bias"]:
        assert (f"{row['source']} {100 * row['better_longer'] / row['pairs']:.1f}% / "
                f"{100 * row['worse_longer'] / row['pairs']:.1f}%") in every
    train = [r for r in card_statistics(out, manifest)["rows"] if r["split"] == "train"]
    assert f"train {sum(r['answer_1'] for r in train)} / {sum(r['answer_2'] for r in train)}" in every

    def of(names: list[str]) -> str:  # the card of a build of these sources only
        one = {**manifest, "sources": {name: manifest["sources"][name] for name in names}}
        return section(render_dataset_card(one, [SOURCES[name] for name in names]))

    humans = of(["llava_rlhf"])
    assert "- llava_rlhf: human:" in humans and "GPT" not in humans and "OpenAI" not in humans
    assert "VL-RewardBench" not in humans and "vlfeedback" not in humans and "rlhf_v" not in humans
    assert "`cc-by-nc-4.0`" in humans and "`apache-2.0`" not in humans
    corrected = of(["rlhf_v"])
    assert "VL-RewardBench" in corrected and "rows of rlhf_v may hold" in corrected and "GPT" not in corrected
    assert "GPT-4o" in of(["llava_critic"]) and "GPT-4V" not in of(["llava_critic"])


def test_the_card_explains_the_words_of_its_tables_and_only_those(cli_build):
    from critic_data.cards.dataset_card import COUNT_TERMS, REASON_TERMS, RULE_TERMS
    from critic_data.schemas.rejects import RejectReason

    out, _ = cli_build
    manifest = manifest_of(out)
    text = (out / "README.md").read_text(encoding="utf-8")
    glossary = text.split("What the words of these tables mean:\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    explained = [re.match(r"- (\*\*(.+?)\*\*|`(.+?)`): ", line).group(2, 3) for line in glossary]
    words = [word for word, _ in explained if word]
    codes = [code for _, code in explained if code]
    header = re.search(r"\| source \| rows read \|.*\|", text).group(0)
    assert words == [word for word in COUNT_TERMS if f"| {word} |" in header] == list(COUNT_TERMS)
    shown = {code for stats in manifest["sources"].values()
             for code in (*stats["counts"]["pairs_filtered"], *stats["rejects_by_reason"])}
    assert shown and set(codes) == shown and len(codes) == len(shown)
    assert "length_balance" not in codes and "image_ambiguous" not in text  # not in this build: not explained
    assert set(REASON_TERMS) == set(RejectReason)  # every reason a build can count has its words
    assert {"below_margin", "not_widest", "tie_dropped", "length_balance"} <= set(RULE_TERMS)


def test_the_options_are_named_by_the_flags_the_user_types(cli_build):
    import typer

    from critic_data.cli import app

    out, _ = cli_build
    manifest = manifest_of(out)
    text = (out / "README.md").read_text(encoding="utf-8")
    table = re.search(r"\| option \| value \|\n\|---\|---\|\n((?:\|.*\|\n)+)", text).group(1)
    rows = dict(re.fullmatch(r"\| `(.+?)` \| (.+) \|", line).groups() for line in table.splitlines())
    # every flag is one `critic-data build` takes, each option of build.json is there by its flag
    build_command = typer.main.get_command(app).commands["build"]
    taken = {opt for param in build_command.params for opt in param.opts}
    assert set(rows) <= taken and len(rows) == len(manifest["options"])
    assert rows["--source"] == "`vlfeedback,rlhf_v`" and rows["--input"].startswith("`vlfeedback=vlf rlhf_v=")
    assert rows["--aspects"] == "`Helpfulness,Visual Faithfulness`"  # as typed, comma-separated
    assert rows["--pairs-per-prompt"] == "`max-gap`" and rows["--keep-ties"] == "`0`"
    assert rows["--max-shard-size"] == f"`{manifest['options']['max_shard_bytes']}`"
    assert rows["--revision"] == "not set" and rows["--balance-length"] == "`off`"
    assert "pairs_per_prompt" not in table and "`keep_ties`" not in text


def test_an_option_value_cannot_break_the_options_table(built_dataset):
    manifest = copy.deepcopy(manifest_of(built_dataset))
    manifest["options"]["out"] = "runs|`x``\n# heading"
    text = render_dataset_card(manifest, source_specs(manifest), option_flags=cli_flags(BuildOptions))
    parser, body = card_markdown(text)
    assert "<td><code>runs|`x`` # heading</code></td>" in parser.render(body)
    assert card_structure(text) == card_structure(render_dataset_card(manifest_of(built_dataset),
                                                                      source_specs(manifest)))
