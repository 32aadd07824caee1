"""The dataset card, rendered from a build's manifest (build.json) and the figures counted from its
data files (`statistics.card_statistics`): no hand-written numbers.

The template ships as package data (`templates/dataset_card.md`); metadata goes through
huggingface_hub's card classes so it follows the Hub's rules. The card's charts are PNG files
in `plots/` beside it, linked by relative paths, so the Hub page shows them from the repo.
"""

from __future__ import annotations

import shlex
from importlib.resources import files
from pathlib import Path

import jinja2
from huggingface_hub import DatasetCard, DatasetCardData

from critic_data.cards import LLAVA_CRITIC_CITATION, LLAVA_CRITIC_R1_CITATION
from critic_data.schemas import FORMATS, yaml_features
from critic_data.schemas.prompts import TEMPLATES

# Least to most restrictive; a build's licence is that of its most restrictive source.
_LICENSE_ORDER = ("apache-2.0", "unknown", "cc-by-nc-4.0")

def _size_category(rows: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < bound:
            return label
    return "1M<n<10M"


def build_license(specs) -> str:
    licenses = [spec.license for spec in specs]
    return max(licenses, key=lambda lic: _LICENSE_ORDER.index(lic) if lic in _LICENSE_ORDER else len(_LICENSE_ORDER))


PLOTS = "plots"  # the folder of the card's charts, beside README.md


def card_figures(folder: Path, manifest: dict, plots: Path) -> tuple[dict, list[str]]:
    """The figures the card of the dataset `folder` shows, counted from its data files, and the
    names of their charts, written into `plots` (same data, same PNG bytes). `build` writes them
    into its output, `push` renders them again from the shards it checked."""
    from critic_data.cards.statistics import card_statistics

    statistics = card_statistics(folder, manifest)
    return statistics, card_plots(statistics, plots)


def card_plots(statistics: dict, plots: Path, child_setup=None) -> list[str]:
    """The card's charts of `statistics` (`card_statistics`), written into `plots`: their names.
    With `child_setup`: drawn side by side in forked children (see `write_dataset_plots`)."""
    from critic_data.cards.charts import write_dataset_plots

    # one fixed title, not the folder's name: the charts do not depend on where the build lies
    return [path.name for path in write_dataset_plots([("this dataset", statistics)], plots, child_setup)]


def _contents(manifest: dict, statistics: dict | None) -> list[dict]:
    """Rows, labels and ties per source and split: the data files' count when there are
    statistics, else build.json's (the same numbers: tests/test_inspect.py checks it)."""
    if statistics:
        return statistics["rows"]
    return [{"source": name, "split": split, "rows": sum(labels.values()), "answer_1": labels.get("1", 0),
             "answer_2": labels.get("2", 0), "ties": labels.get("tie", 0)}
            for name, stats in manifest["sources"].items() for split, labels in stats["label_balance"].items()
            if sum(labels.values())]


def _margin_rows(statistics: dict | None) -> list[tuple[str, list[int]]]:
    """The margin histogram as table rows: (bin, pairs per scored source), empty bins left out."""
    from critic_data.cards.charts import bin_labels

    margins = (statistics or {}).get("margins") or {"edges": [], "counts": {}}
    if not margins["counts"]:
        return []
    rows = zip(bin_labels(margins["edges"]), zip(*margins["counts"].values()))
    return [(label, list(counts)) for label, counts in rows if any(counts)]


def _against_the_official_set(manifest: dict) -> dict | None:
    """What a build of LLaVA-Critic-113k in the official RL set's prompt style does otherwise than that
    set (the figures the card's comparison needs); None for other builds."""
    critic = manifest["sources"].get("llava_critic")
    if manifest["options"].get("prompt_style") != "llava-critic" or critic is None:
        return None
    counts, reasons = critic["counts"], critic.get("rejects_by_reason", {})
    unparsable = reasons.get("prompt_unparsable", 0) + reasons.get("verdict_unparsable", 0)
    return {"test_rows": manifest["splits"].get("test", {}).get("rows", 0), "unparsable": unparsable,
            "rejected_otherwise": counts["rows_rejected"] - unparsable, "duplicates": counts["duplicates_dropped"],
            "filtered": sum(counts["pairs_filtered"].values()),
            "label_sentence": TEMPLATES[manifest["template"]].rsplit("\n", 1)[-1],
            "other_sources": [name for name in manifest["sources"] if name != "llava_critic"]}


def render_dataset_card(manifest: dict, specs: list, repo_id: str | None = None, statistics: dict | None = None,
                        plots: list[str] = ()) -> str:
    """The README.md of a built dataset folder, given the specs of its sources (in the manifest's
    order: licence, Hub repo, citation, summary); `repo_id` fills the loading snippet. With
    `statistics` and `plots` (what `card_figures` gives) the card shows the data's figures and
    embeds the charts, which must lie in `plots/` beside it."""
    names = list(manifest["sources"])
    if [spec.name for spec in specs] != names:
        raise ValueError(f"the card of sources {names} needs their specs, not {[spec.name for spec in specs]}")
    splits = {name: split for name, split in manifest["splits"].items() if split["rows"]}  # empty: no files
    total = sum(split["rows"] for split in splits.values())
    data = DatasetCardData(
        license=build_license(specs),
        task_categories=["image-text-to-text"],
        language=["en"],
        size_categories=[_size_category(total)],
        source_datasets=[spec.hub_repo for spec in specs],
        tags=["preference", "critic", "reward-modeling", "rlvr", "grpo", "multimodal", "llava-critic", "critic-data"],
        pretty_name="critic-data: " + ", ".join(names),
        # `datasets` keys its cache of a local folder on this metadata (not on file contents):
        # sizes and row counts here make a rebuilt folder load fresh, and let it verify row counts.
        dataset_info={
            "features": yaml_features(FORMATS[manifest["format"]]),
            "splits": [{"name": name, "num_bytes": s["bytes"], "num_examples": s["rows"]} for name, s in splits.items()],
            "download_size": sum(s["bytes"] for s in splits.values()),
            "dataset_size": sum(s["bytes"] for s in splits.values()),
        },
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": split, "path": f"data/{split}-*"} for split in splits],
            }
        ],
    )
    # What DatasetCard.from_template does, but strict: a field missing from the manifest stops
    # the card (push turns that into one line) instead of rendering as nothing.
    template = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(
        files("critic_data.cards").joinpath("templates/dataset_card.md").read_text())
    content = template.render(
        card_data=data.to_yaml(),
        **data.to_dict(),
        manifest=manifest,
        repo_id=repo_id or "OWNER/NAME",
        specs=specs,
        total=total,
        contents=_contents(manifest, statistics),
        split_rows={name: split["rows"] for name, split in splits.items()},
        statistics=statistics,
        margin_rows=_margin_rows(statistics),
        official=_against_the_official_set(manifest),
        plots={name: f"{PLOTS}/{name}" for name in plots},
        # Quoted so that it can be pasted back into a shell (e.g. --aspects "Visual Faithfulness").
        command=shlex.join(manifest["command"]) if manifest.get("command") else None,
        # each entry once: LLaVA-Critic is also the citation of the llava_critic source
        citations="\n\n".join(dict.fromkeys([*(spec.citation for spec in specs), LLAVA_CRITIC_CITATION,
                                              LLAVA_CRITIC_R1_CITATION])),
    )
    return str(DatasetCard(content))
