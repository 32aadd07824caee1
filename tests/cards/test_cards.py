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

from critic_data.builders import SOURCES
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
    assert {name: s.num_examples for name, s in info.splits.items()} == {n: s["rows"] for n, s in manifest["splits"].items()}


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
    for key, value in manifest["options"].items():
        assert f"| `{key}` | `{value}` |" in text

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
        assert f"| {r['source']} | {r['split']} | {r['rows']} | {share:.1f}% | {r['answer_1']} | {r['answer_2']} |" in text
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


def test_charts_drawn_side_by_side_are_the_same_bytes_and_a_chart_that_fails_fails_here(cli_build, tmp_path,
                                                                                        monkeypatch):
    """A build's card process draws its charts in forked children at once (`child_setup`)."""
    from critic_data.builders.parallel import worker_started
    from critic_data.cards import charts
    from critic_data.cards.statistics import dataset_statistics

    named = [("this dataset", dataset_statistics(cli_build[0]))]
    one = charts.write_dataset_plots(named, tmp_path / "one")
    at_once = charts.write_dataset_plots(named, tmp_path / "at_once", child_setup=worker_started)
    assert [path.name for path in at_once] == [path.name for path in one] and len(one) == 3
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(one, at_once))

    def broken(named):
        raise ValueError("no room on the canvas")

    monkeypatch.setattr(charts, "_CHARTS", (charts._CHARTS[0], ("margins.png", broken, lambda named: True)))
    with pytest.raises(ValueError, match="no room on the canvas"):  # from the child's job, run again here
        charts.write_dataset_plots(named, tmp_path / "broken", child_setup=worker_started)
    assert (tmp_path / "broken" / "label_balance.png").is_file()


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


def test_the_official_composition_trains_on_every_row_and_its_card_says_what_differs_from_the_official_set(tmp_path):
    """`--prompt-style llava-critic` is the official RL set's style, which LLaVA-Critic-R1 trained on whole:
    its default --test-size is 0, so the README's one command gives no test split. The card lists what
    still differs (rows dropped, the presented order, the label sentence); other builds hold out 2%."""
    from critic_data.builders.options import BuildOptions

    write_llava_critic(tmp_path / "critic", n=40)
    command = [str(Path(sys.executable).parent / "critic-data"), "build", "--source", "llava_critic", "--input",
               str(tmp_path / "critic"), "--keep-ties", "all", "--prompt-style", "llava-critic", "--num-proc", "1"]
    for out, extra in (("official", []), ("held-out", ["--test-size", "0.5"])):
        result = subprocess.run([*command, "--out", str(tmp_path / out), *extra], capture_output=True, text=True, timeout=120)
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
