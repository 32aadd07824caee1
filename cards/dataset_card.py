"""The dataset card, rendered from a build's manifest (build.json) and the figures counted from its
data files (`statistics.card_statistics`): no hand-written numbers. Its prose on the sources (who
labelled them, what their licences mean) is said of the build's own sources only, and every text
of the data it quotes (an example row, option values) is escaped so that no text breaks the card.

The template ships as package data (`templates/dataset_card.md`); metadata goes through
huggingface_hub's card classes so it follows the Hub's rules. The card's charts are PNG files
in `plots/` beside it, linked by relative paths, so the Hub page shows them from the repo.
"""

from __future__ import annotations

import functools
import re
import shlex
import textwrap
from importlib.resources import files
from pathlib import Path

import jinja2
from huggingface_hub import DatasetCard, DatasetCardData

from critic_data.cards import LLAVA_CRITIC_CITATION, LLAVA_CRITIC_R1_CITATION
from critic_data.schemas import FORMATS, yaml_features
from critic_data.schemas.prompts import FORMAT_INSTRUCTION, TEMPLATES
from critic_data.schemas.rejects import RejectReason

# Least to most restrictive; a build's licence is that of its most restrictive source.
_LICENSE_ORDER = ("apache-2.0", "unknown", "cc-by-nc-4.0")

# The example row: its question and each response cut after EXAMPLE_FIELD characters or lines
# (each on its own, so that both responses show), wrapped at EXAMPLE_WIDTH, at most EXAMPLE_LINES
# lines in all (the last ones kept: the instruction ends the prompt).
EXAMPLE_FIELD, EXAMPLE_WIDTH, EXAMPLE_LINES = (700, 12), 100, 60

# Who labelled each source's preferences, and what its licence means for this data. Source facts
# the card states beside each source's spec (licence, citation), for the sources of a build only.
SOURCE_NOTES = {
    "vlfeedback": {"judge": "GPT-4V", "labels": "GPT-labelled: GPT-4V rated each completion 1-5 per aspect; the better "
                   "response has the higher mean over `--aspects`.",
                   "licence": "its authors state none: ask them before any use beyond research."},
    "rlhf_v": {"judge": None, "labels": "human: annotators corrected the hallucinated segments of a response, and the "
               "correction is the better response (the two differ only there).",
               "licence": "non-commercial use only."},
    "llava_rlhf": {"judge": None, "labels": "human: annotators chose the better of two LLaVA responses.",
                   "licence": "the Hub says apache-2.0, the project page CC BY-NC 4.0: taken as non-commercial."},
    "llava_critic": {"judge": "GPT-4o", "labels": "GPT-labelled: GPT-4o's verdict between the two responses (its "
                     "written justification is not kept).",
                     "licence": "its pairs are re-judged pairs of other datasets (VLFeedback, RLHF-V, LLaVA-RLHF), "
                     "whose terms still apply to them."},
}
# VL-RewardBench draws items from VLFeedback and RLHF-V (its `VLFeedback-...`, `RLHF-V-...` ids);
# LLaVA-Critic-113k holds re-judged pairs of both.
VL_REWARDBENCH_OVERLAP = ("vlfeedback", "rlhf_v", "llava_critic")

# The words of the card's counts, rules and reject reasons; the card explains those it shows.
COUNT_TERMS = {
    "rows read": "input rows of the source; each one is either used or rejected (read = used + rejected).",
    "rows used": "rows whose data passed every check; a used row gives zero or more pairs.",
    "rows rejected": "rows with defective data, by reason below; each is listed in `rejects.jsonl` of the build "
                     "folder.",
    "pairs formed": "candidate pairs of two responses to one image and question, before any rule "
                    "(formed = kept + filtered by rule + duplicates dropped).",
    "filtered by rule": "pairs dropped by a rule of this build's options (rules below): data that is fine, not kept.",
    "duplicates dropped": "pairs already kept once: within a source the same image, question and responses; across "
                          "sources the same normalised texts and a matching image thumbnail.",
    "pairs kept": "pairs written as rows of this dataset.",
}
RULE_TERMS = {  # identical_responses, a rule of VLFeedback's pairs too, is explained as a reason
    "below_margin": "the two responses' score gap is at or below `--margin`: too close to call.",
    "not_widest": "`--pairs-per-prompt max-gap` keeps one pair per row, the one with the widest score gap; "
                  "the row's other pairs are not the widest.",
    "tie_dropped": "a tie (equal scores, or a judge's \"equally good\") beyond what `--keep-ties` keeps.",
    "length_balance": "dropped by `--balance-length`, so that the better response is the longer one about as often "
                      "as the shorter one.",
    "gap_not_finite": "scores so far apart that their gap is not a finite number.",
    "contaminated": "a critic benchmark holds the pair's question and image (`--decontaminate`; see Curation).",
    "image_match": "a critic benchmark holds the pair's image under another question (`--drop-image-matches`).",
    "too_easy": "the measured model judged the pair right more often than `--pass-rate` keeps (see Curation).",
    "too_hard": "the measured model judged the pair right less often than `--pass-rate` keeps (see Curation).",
}
REASON_TERMS = {
    RejectReason.JSON_INVALID: "the row's JSON does not parse.",
    RejectReason.ROW_MALFORMED: "the row parses, but a required field is missing or of the wrong type.",
    RejectReason.IMAGE_MISSING: "no image in the row, the archive or the image root.",
    RejectReason.IMAGE_UNDECODABLE: "image bytes that do not decode completely.",
    RejectReason.IMAGE_TOO_LARGE: "an image of more pixels than `--max-image-pixels` (a decompression bomb guard).",
    RejectReason.IMAGE_FILE_TOO_LARGE: "an image file too large to read.",
    RejectReason.IMAGE_PATH_UNSAFE: "an image path leading outside `--image-root`; never opened.",
    RejectReason.IMAGE_AMBIGUOUS: "two image files for the row's id (such as x.jpg and x.png): none is guessed.",
    RejectReason.RATING_UNPARSABLE: "fewer than two completions with numeric ratings.",
    RejectReason.EMPTY_RESPONSE: "fewer than two non-empty responses.",
    RejectReason.EMPTY_QUESTION: "no question text left after cleaning.",
    RejectReason.IDENTICAL_RESPONSES: "the two responses are the same text: nothing to prefer.",
    RejectReason.VERDICT_UNPARSABLE: "no verdict could be read from the judge's text.",
    RejectReason.PROMPT_UNPARSABLE: "the question or the responses were not found in the judge's prompt.",
    RejectReason.TEXT_UNENCODABLE: "text that is not valid Unicode (a lone surrogate).",
}


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


def card_plots(statistics: dict, plots: Path) -> list[str]:
    """The card's charts of `statistics` (`card_statistics`), written into `plots`: their names."""
    from critic_data.cards.charts import write_dataset_plots

    # one fixed title, not the folder's name: the charts do not depend on where the build lies
    return [path.name for path in write_dataset_plots([("this dataset", statistics)], plots)]


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


def _printable(text: str) -> str:
    """`text` with its control characters shown as U+FFFD (a terminal showing the card would run
    them); tabs and line breaks are kept."""
    return re.sub(r"[\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f]", "\ufffd", text)


def _code(value, table: bool = False) -> str:
    """`value` as one inline code span that no text breaks out of: whitespace (line breaks
    included) collapsed, the fence one backtick longer than the longest run of backticks inside;
    in a `table` cell `|` escaped too (a cell's end, even inside code)."""
    text = " ".join(_printable(str(value)).split())
    text = text.replace("|", "\\|") if table else text
    fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    pad = " " if not text or text[0] == "`" or text[-1] == "`" else ""  # a backtick next to the fence would join it
    return f"{fence}{pad}{text}{pad}{fence}"


def _fenced(text: str, info: str = "text") -> str:
    """`text` as a fenced code block whose fence is longer than any run of backticks in it: nothing
    inside (Markdown, HTML, a line of ``` or ---) is read as anything but text."""
    text = _printable(text)
    fence = "`" * max(3, max(map(len, re.findall("`+", text)), default=0) + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def _excerpt(example: dict) -> str:
    """The example's text as the card shows it: its question and responses (where the row has
    them as columns) each cut after EXAMPLE_FIELD characters or lines, the whole wrapped at
    EXAMPLE_WIDTH and at most EXAMPLE_LINES lines (the middle ones left out); every cut marked."""
    text, (characters, line_count) = example["text"], EXAMPLE_FIELD
    for field in ("question", "response_1", "response_2"):
        whole = example.get(field) or ""
        if len(whole) > characters or len(whole.splitlines()) > line_count:  # long: no match by chance elsewhere
            kept = "\n".join(whole.splitlines()[:line_count])[:characters]
            text = text.replace(whole, f"{kept} [… {len(whole) - len(kept):,} more characters]", 1)
    lines = []
    for line in text.splitlines():  # a lone \r too: Markdown would end a line there
        lines += textwrap.wrap(line, EXAMPLE_WIDTH, break_on_hyphens=False, drop_whitespace=True) or [""]
    if len(lines) > EXAMPLE_LINES:
        head, tail = EXAMPLE_LINES * 3 // 4, EXAMPLE_LINES // 4
        lines = [*lines[:head], f"[… {len(lines) - head - tail:,} more lines]", *lines[-tail:]]
    return "\n".join(lines)


def _options(manifest: dict, option_flags: dict[str, str] | None) -> list[tuple[str, str | None]]:
    """The resolved options as the command line takes them: (flag, value), a list comma-joined,
    `--input` as SOURCE=DIR, a switch on or off; None for a value left unset. Without
    `option_flags` (field name -> flag) the options keep their field names."""
    shown = []
    for name, value in manifest["options"].items():
        if isinstance(value, bool):
            value = "on" if value else "off"
        elif isinstance(value, list):
            value = ",".join(map(str, value))
        elif isinstance(value, dict):
            value = " ".join(f"{key}={path}" for key, path in value.items())
        shown.append(((option_flags or {}).get(name, name), None if value is None else str(value)))
    return shown


def _curation(manifest: dict) -> dict | None:
    """What the card's Curation section shows (None: the build curated nothing): per benchmark its
    snapshot and counts; the difficulty run's band, counts and pass-count histogram."""
    contamination, difficulty = manifest.get("contamination"), manifest.get("difficulty")
    if not contamination and not difficulty:
        return None
    benchmarks = []
    for name, found in (contamination or {}).items():
        origin = found["origin"]
        snapshot = (f"{origin['repo_id']}@{origin['commit']}" if origin.get("kind") == "hub"
                    else f"local snapshot, its {len(origin.get('files', []))} file(s) fingerprinted in build.json")
        benchmarks.append({"name": name, "snapshot": snapshot, **found})
    histogram = []
    if difficulty:
        samples = difficulty["samples"]
        histogram = [(k, k / samples, n, kept) for k, (n, kept) in enumerate(
            zip(difficulty["pass_count_histogram"], difficulty["pass_count_histogram_kept"], strict=True))]
    return {"benchmarks": benchmarks, "rules": list(dict.fromkeys(b["rule"] for b in benchmarks)),
            "difficulty": difficulty, "histogram": histogram}


def _glossary(manifest: dict) -> tuple[dict[str, str], dict[str, str]]:
    """What the words of the card's counts mean, and each rule and reject reason the card shows
    (in the order the tables show them); a code of unknown meaning is left out."""
    codes = {**RULE_TERMS, **REASON_TERMS}
    shown = [code for stats in manifest["sources"].values()
             for code in (*stats["counts"]["pairs_filtered"], *stats["rejects_by_reason"])]
    return COUNT_TERMS, {code: codes[code] for code in dict.fromkeys(shown) if code in codes}


def _limitations(manifest: dict, specs: list, contents: list[dict]) -> dict:
    """What the card's limitations section says of this build's sources: each one's labels and
    licence, the GPT judges among them, the label balance per split and the sources whose rows
    VL-RewardBench may hold."""
    balance: dict[str, dict[str, int]] = {}
    for row in contents:
        split = balance.setdefault(row["split"], {"1": 0, "2": 0, "tie": 0})
        for key, count in (("1", row["answer_1"]), ("2", row["answer_2"]), ("tie", row["ties"])):
            split[key] += count
    notes = [(spec, SOURCE_NOTES[spec.name]) for spec in specs]
    return {"notes": notes, "judges": list(dict.fromkeys(note["judge"] for _, note in notes if note["judge"])),
            "balance": balance, "overlap": [spec.name for spec in specs if spec.name in VL_REWARDBENCH_OVERLAP]}


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


def _metadata(manifest: dict, specs: list, splits: dict[str, dict]) -> DatasetCardData:
    """The card's YAML header, for the Hub and `datasets`: licence, sources, features, the
    non-empty `splits` and where their files are."""
    total = sum(split["rows"] for split in splits.values())
    return DatasetCardData(
        license=build_license(specs),
        task_categories=["image-text-to-text"],
        language=["en"],
        size_categories=[_size_category(total)],
        source_datasets=[spec.hub_repo for spec in specs],
        tags=["preference", "critic", "reward-modeling", "rlvr", "grpo", "multimodal", "llava-critic", "critic-data"],
        pretty_name="critic-data: " + ", ".join(manifest["sources"]),
        # `datasets` keys its cache of a local folder on this metadata (not on file contents):
        # sizes and row counts here make a rebuilt folder load fresh, and let it verify row counts.
        dataset_info={
            "features": yaml_features(FORMATS[manifest["format"]]),
            "splits": [{"name": name, "num_bytes": s["bytes"], "num_examples": s["rows"]}
                       for name, s in splits.items()],
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


@functools.cache
def _card_template() -> jinja2.Template:
    """The card's template, compiled once a process (0.2 s; push renders the card twice). What
    DatasetCard.from_template does, but strict: a field missing from the manifest stops the card
    (push turns that into one line) instead of rendering as nothing."""
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined)
    environment.filters.update(code=_code, fenced=_fenced)
    return environment.from_string(files("critic_data.cards").joinpath("templates/dataset_card.md").read_text())


def render_dataset_card(manifest: dict, specs: list, repo_id: str | None = None, statistics: dict | None = None,
                        plots: list[str] = (), option_flags: dict[str, str] | None = None) -> str:
    """The README.md of a built dataset folder, given the specs of its sources (in the manifest's
    order: licence, Hub repo, citation, summary); `repo_id` fills the loading snippet. With
    `statistics` and `plots` (what `card_figures` gives) the card shows the data's figures, an
    example row and the charts, which must lie in `plots/` beside it. `option_flags` (each build
    option's command-line flag, `critic_data.cli_flags(BuildOptions)`) names the options as the
    user types them."""
    names = list(manifest["sources"])
    if [spec.name for spec in specs] != names:
        raise ValueError(f"the card of sources {names} needs their specs, not {[spec.name for spec in specs]}")
    splits = {name: split for name, split in manifest["splits"].items() if split["rows"]}  # empty: no files
    total = sum(split["rows"] for split in splits.values())
    data = _metadata(manifest, specs, splits)
    template = _card_template()
    contents = _contents(manifest, statistics)
    example = (statistics or {}).get("example")
    content = template.render(
        card_data=data.to_yaml(),
        **data.to_dict(),
        manifest=manifest,
        repo_id=repo_id or "OWNER/NAME",
        specs=specs,
        total=total,
        contents=contents,
        example=example and {**example, "text": _excerpt(example), "width": EXAMPLE_WIDTH},
        limitations=_limitations(manifest, specs, contents),
        glossary=_glossary(manifest),
        options=_options(manifest, option_flags),
        instruction=FORMAT_INSTRUCTION,
        split_rows={name: split["rows"] for name, split in splits.items()},
        statistics=statistics,
        margin_rows=_margin_rows(statistics),
        official=_against_the_official_set(manifest),
        curation=_curation(manifest),
        plots={name: f"{PLOTS}/{name}" for name in plots},
        # Quoted so that it can be pasted back into a shell (e.g. --aspects "Visual Faithfulness").
        command=shlex.join(manifest["command"]) if manifest.get("command") else None,
        # each entry once: LLaVA-Critic is also the citation of the llava_critic source
        citations="\n\n".join(dict.fromkeys([*(spec.citation for spec in specs), LLAVA_CRITIC_CITATION,
                                              LLAVA_CRITIC_R1_CITATION])),
    )
    return str(DatasetCard(content))
