"""The dataset card: Hub metadata read back by huggingface_hub's and datasets' own parsers, and a
body that reports the build (counts, rejects, balance, exact command, options, snippets,
citations) from build.json. The card of a push, rendered with the repo id, is in test_push.py.
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
from critic_data.cards import build_license, render_dataset_card
from critic_data.schemas import FORMATS
from tests.snapshots import write_rlhf_v, write_vlfeedback_jsonl

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
    assert info.features == FORMATS["trl"][0]
    assert {name: s.num_examples for name, s in info.splits.items()} == {n: s["rows"] for n, s in manifest["splits"].items()}


def test_body_reports_the_build(cli_build):
    out, argv = cli_build
    manifest = manifest_of(out)
    text = (out / "README.md").read_text()

    for name, stats in manifest["sources"].items():
        c = stats["counts"]
        assert (f"| {name} | {c['rows_read']} | {c['rows_used']} | {c['rows_rejected']} | {c['pairs_formed']} | "
                f"{sum(c['pairs_filtered'].values())} | {c['duplicates_dropped']} | {c['pairs_kept']} |") in text
        for split, labels in stats["label_balance"].items():
            if sum(labels.values()):
                assert (f"| {name} | {split} | {sum(labels.values())} | {labels.get('1', 0)} | "
                        f"{labels.get('2', 0)} |") in text
        assert stats["rejects_by_reason"]  # the snapshots plant faults in both sources
        for reason, n in stats["rejects_by_reason"].items():
            assert f"| {name} | `{reason}` | {n} |" in text
        assert SOURCES[name].citation.strip() in text
    assert "@article{xiong2024llavacritic" in text and "@article{wang2025llavacriticr1" in text

    # The exact command, quoted so that pasting it into a shell runs the same build.
    command = re.search(r"## How it was built\n\n```bash\n(.*)\n```", text).group(1)
    assert shlex.split(command) == argv
    for key, value in manifest["options"].items():
        assert f"| `{key}` | `{value}` |" in text

    assert 'load_dataset("OWNER/NAME")' in text  # a local build does not know its repo yet
    assert "critic-data train --recipe critic-r1 --dataset_name OWNER/NAME" in text
    assert "GRPOTrainer(" in text and "preference_reward" in text


def test_loading_snippet_runs(built_dataset, capsys):
    manifest = manifest_of(built_dataset)
    text = render_dataset_card(manifest, repo_id=str(built_dataset))
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
    text = render_dataset_card(manifest)
    assert "Built from Python" in text and "```bash\ncritic-data build" not in text
    assert "| vlfeedback | none | 0 |" in text


@pytest.mark.parametrize("names, expected", [
    (["llava_critic"], "apache-2.0"),
    (["llava_critic", "vlfeedback"], "unknown"),
    (["vlfeedback", "rlhf_v", "llava_critic"], "cc-by-nc-4.0"),
])
def test_build_license_is_the_most_restrictive(names, expected):
    assert build_license(names) == expected
