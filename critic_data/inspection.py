"""`critic-data inspect PATH`: what a dataset teaches, or where a critic fails, before GPU-days go into it.

PATH is told apart by the files in it:
- a dataset folder (`build.json`; or a Hub dataset id, downloaded into the Hub cache first, once
  the Hub says it has it: a mistyped folder reads as OWNER/NAME too, `check_hub_repo`): its
  manifest read (`critic_data.manifest.read_manifest`), its shards checked to be the ones
  build.json records (`critic_data.hub.check_shard_bytes`, the rule push applies), then the
  figures of `critic_data.cards.statistics`; `--against OTHER` puts a second dataset's beside
  them; `--processor MODEL` adds each row's prompt tokens as the trainer counts them
  (`critic_data.rl.train.prompt_lengths`, the recipe's pixel bounds), how many rows
  `--max-prompt-length` would drop, and the length bias in tokens;
- an eval run (`results.jsonl`): accuracy per category with counts, with unparsed verdicts
  counted wrong and as half credit, position bias (how often the verdict is "1" or "2" against
  how often the truth is), the unparsed rate, and for `--both-orders` runs the position
  consistency per category (`eval_statistics`);
- a best-of-n run (`picks.jsonl`): accuracy of the pick, the first sample and the majority
  vote, and accuracy against N for every power of two up to N, replayed from the recorded
  matches (`best_of_n_statistics`);
- a difficulty run (`difficulty.jsonl`): rows per pass count (bins k/K), the share of rows whose
  GRPO group would have zero advantage, observed and expected from the rates, what each symmetric
  pass-rate band [k/K, 1-k/K] keeps and the share of rollouts it saves (the first, 0.125:0.875 at
  K = 8, is `build --pass-rate`'s default: it drops exactly the zero-advantage rows); `--against
  RUN2` shows how the rates moved over the rows both runs measured alike (`difficulty_statistics`).
A run's lines are read by the run's own record types (`critic_data.rl.records`: a line that is not
one is counted and left out), and every figure is the one its summary.json reports, computed by
`critic_data.rl.metrics`; each accuracy carries its Wilson 95% interval (`<name>_ci95`).
The report is the command's output, so it goes to stdout (`--json`: one JSON object instead,
for scripts); errors go to stderr as one line. `--plots DIR` writes PNG charts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from critic_data import UserError
from critic_data.cards import charts, statistics
from critic_data.files import json_lines
from critic_data.hub_client import check_hub_repo, is_repo_id
from critic_data.manifest import Manifest, read_manifest
from critic_data.rl import metrics
from critic_data.rl.client import percent
from critic_data.rl.options import OFFICIAL_MAX_PROMPT_LENGTH
from critic_data.rl.records import DIFFICULTY_LOG, Judgement, Pick, read_difficulty

# stdout: the report is what the command produces; wide when written to a file, not cut at 80 columns
console = Console(width=None if sys.stdout.isatty() else 160)


# --- what PATH is ------------------------------------------------------------------------------

def resolve(path: str) -> Path:
    """A local folder, or a Hub dataset id downloaded (or found) in the Hub cache."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    if folder.exists() or not is_repo_id(path):
        raise UserError(f"{path} is not a folder (nor a Hub dataset id OWNER/NAME)")
    check_hub_repo(path, path)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        return Path(snapshot_download(path, repo_type="dataset"))
    except RepositoryNotFoundError:
        raise UserError(f"could not download dataset {path} from the Hub: no such dataset, or it is private and your "
                        "token (HF_TOKEN or `hf auth login`) cannot read it") from None
    except Exception as error:  # the Hub client raises many types: offline, not found, refused
        raise UserError(f"could not download dataset {path} from the Hub ({type(error).__name__}: "
                        f"{' '.join(str(error).split())[:160]}); pass a local folder instead") from None


def kind_of(folder: Path) -> str:
    """dataset, eval, best-of-n or difficulty, by the files the folder holds."""
    for name, kind in (("build.json", "dataset"), ("results.jsonl", "eval"), ("picks.jsonl", "best-of-n"),
                       (DIFFICULTY_LOG, "difficulty")):
        if (folder / name).is_file():
            return kind
    raise UserError(f"{folder} is neither a dataset folder (build.json), an eval run (results.jsonl) nor a "
                    f"best-of-n run (picks.jsonl) or a difficulty run ({DIFFICULTY_LOG})")


def _read_json(path: Path) -> dict:
    """A run's summary.json or run.json; {} when absent (an interrupted run has no summary)."""
    if path.exists() and not path.is_file():  # a FIFO would block the read forever
        raise UserError(f"{path} is not a regular file; remove it, or put the file the run wrote back")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError):
        raise UserError(f"{path} does not read as JSON; was the run interrupted while writing it?") from None
    return value if isinstance(value, dict) else {}


def _run_options(folder: Path) -> dict:
    """The options a run recorded: run.json, else an older run's summary.json `options`; {} when neither."""
    options = _read_json(folder / "run.json") or _read_json(folder / "summary.json").get("options")
    return options if isinstance(options, dict) else {}


def _records(path: Path, read) -> tuple[list, int]:
    """The records of a JSON-lines log as `read` makes them (`rl/records.py`), and how many lines
    are not records (an interrupted append leaves a line cut short: counted and left out, never fatal)."""
    records, bad = [], 0
    for _, _, line in json_lines(path):
        record = read(line) if isinstance(line, dict) else None
        if record is None:
            bad += 1
        else:
            records.append(record)
    return records, bad


# --- datasets ----------------------------------------------------------------------------------

def _token_counts(folder: Path, manifest: Manifest, model: Path) -> pl.LazyFrame:
    """Per row: split, source, answer, prompt tokens as the trainer counts them (`prompt_lengths`,
    with the model's processor under the recipes' pixel bounds), and each response's tokens."""
    import datasets
    import pyarrow.parquet as pq
    from datasets.table import InMemoryTable

    try:
        from trl import ModelConfig

        from critic_data.rl.train import CriticScriptArguments, load_processor, prompt_lengths
    except ImportError as error:
        raise UserError(f"--processor needs the training stack ({error.name} is not installed): "
                        "pip install 'critic-data[rl]'") from None

    datasets.disable_progress_bars()
    processor = load_processor(ModelConfig(model_name_or_path=str(model)), CriticScriptArguments(),
                               trust_remote_code=False)
    parts = []
    for split, paths in statistics.split_files(folder, manifest).items():
        for path in paths:
            table = pq.read_table(path, columns=["source", "answer", "response_1", "response_2", "prompt", "images"])
            lengths = prompt_lengths(datasets.Dataset(InMemoryTable(table.select(["prompt", "images"]))), processor)
            tokens = {name: [len(ids) for ids in processor.tokenizer(table[name].to_pylist(),
                                                                     add_special_tokens=False)["input_ids"]]
                      for name in ("response_1", "response_2")}
            parts.append(pl.DataFrame({"split": split, "source": table["source"].to_pylist(),
                                       "answer": table["answer"].to_pylist(), "prompt_tokens": lengths, **tokens},
                                      schema_overrides={"prompt_tokens": pl.Int64}))
    return pl.concat(parts).lazy()


def prompt_tokens(folder: Path, manifest: Manifest, model: Path, budget: int) -> tuple[dict, list[dict]]:
    """Prompt tokens per row as the trainer counts them, and the length bias in tokens.

    The processor is the model's own with the recipes' pixel bounds (`load_processor`); each
    shard is read once (its text and image columns) and measured by `prompt_lengths`, the
    function the trainer filters with. Returns the prompt figures (a histogram per split, and
    per source and split the rows over `budget`) and `length_bias` rows in tokens.
    """
    if manifest.format != "trl":
        raise UserError("--processor counts the TRL layout's prompts; this dataset was built with --format "
                        f"{manifest.format}, whose prompt the EasyR1 trainer assembles itself")
    if not model.is_dir():
        raise UserError(f"--processor {model}: no such folder; pass a local model folder")
    frame = _token_counts(folder, manifest, model)
    sources, splits = list(manifest.sources), list(manifest.splits)
    edges = [round(budget * k / 10) for k in range(10)] + [budget + 1]  # the last bin: rows the trainer drops
    by_split = statistics.histogram(frame, "prompt_tokens", edges, by="split")
    prompts = pl.col("prompt_tokens")
    table = (frame.group_by("source", "split")
             .agg(rows=pl.len(), median=prompts.median(), max=prompts.max(), over_budget=(prompts > budget).sum(),
                  unusable=prompts.is_null().sum())
             .collect()
             .sort(statistics.ordered("source", sources), statistics.ordered("split", splits)))
    pairs = statistics.better_and_worse(frame, pl.col("response_1"), pl.col("response_2"))
    figures = {"model": str(model), "budget": budget, "edges": edges,
               "histogram": {s: by_split["counts"][s] for s in splits if s in by_split["counts"]},
               "by_source": table.to_dicts()}
    return figures, statistics.length_bias(pairs, sources)


def dataset_report(folder: Path, model: Path | None, budget: int) -> dict:
    from critic_data.hub import check_shard_bytes

    manifest = read_manifest(folder)
    check_shard_bytes(folder, manifest)  # figures of another build's shard would be reported as this one's
    report = {"kind": "dataset", **statistics.dataset_statistics(folder, manifest)}
    if model is not None:
        report["prompt_tokens"], report["length_bias_tokens"] = prompt_tokens(folder, manifest, model, budget)
    return report


# --- eval runs ---------------------------------------------------------------------------------

def _category_figures(category: str, judgements: list[Judgement]) -> dict:
    twice = metrics.judged_twice(judgements)
    figures = metrics.accuracies(judgements)
    return {"category": category, "judgements": len(judgements), "items": len(metrics.by_item(judgements)),
            "accuracy": figures["accuracy"], "accuracy_unparsed_half": figures["accuracy_unparsed_half"],
            "unparsed_rate": metrics.unparsed_rate(judgements), **metrics.position_bias(judgements),
            "both_orders_items": len(twice) or None, "position_consistency": metrics.position_consistency(twice),
            "accuracy_ci95": figures["accuracy_ci95"],
            "accuracy_unparsed_half_ci95": figures["accuracy_unparsed_half_ci95"]}


def eval_statistics(folder: Path) -> dict:
    """Accuracy (unparsed wrong, and unparsed half), position bias, unparsed rate and (both orders)
    position consistency per category (`Judgement.category`), then over all when there are several."""
    records, bad = _records(folder / "results.jsonl", Judgement.from_json)
    if not records:
        raise UserError(f"{folder / 'results.jsonl'} holds no judgement; was the run stopped before the first?")
    run = _run_options(folder)
    frame = pl.DataFrame({"category": [r.category for r in records], "index": range(len(records))},
                         schema_overrides={"category": pl.String})
    groups = {category: [records[i] for i in indices] for category, indices in
              frame.group_by("category").agg("index").sort("category", nulls_last=True).iter_rows()}
    if len(groups) == 1:  # one row, named after its category; "all" when the benchmark has none
        [(category, judgements)] = groups.items()
        categories = [_category_figures(category or "all", judgements)]
    else:  # one row per category, judgements without one as "other", then one over all
        categories = [_category_figures(category or "other", judgements) for category, judgements in groups.items()]
        categories.append(_category_figures("all", records))
    return {"kind": "eval", "folder": str(folder), "benchmark": run.get("benchmark"),
            "both_orders": bool(run.get("both_orders")) or any(row["both_orders_items"] for row in categories),
            "judgements": len(records), "lines_left_out": bad, "ci_method": "wilson", "categories": categories}


# --- best-of-n runs ----------------------------------------------------------------------------

def best_of_n_statistics(folder: Path) -> dict:
    """Accuracy of the pick, the first sample, the majority vote and any candidate, and accuracy
    against N (1, 2, 4, ... up to N, and N itself) replayed from the recorded matches."""
    picks, bad = _records(folder / "picks.jsonl", Pick.from_json)
    if not picks:
        raise UserError(f"{folder / 'picks.jsonl'} holds no pick; was the run stopped before the first question?")
    run = _run_options(folder)
    n = len(picks[0].candidates)  # the N played, whatever run.json says
    strategy, seed = run.get("strategy", "knockout"), run.get("seed", 0)
    summary = metrics.pick_summary(picks)
    report = {"kind": "best-of-n", "folder": str(folder), "n": n, "strategy": strategy, "questions": len(picks),
              "answered": summary["answered"], "lines_left_out": bad,
              "unparsed_judgements": summary["unparsed_judgements"], "too_long_matches": summary["too_long_matches"],
              "accuracy": summary.get("accuracy"), "curve": None, "curve_note": None}
    if not summary["answered"]:
        report["curve_note"] = "no question has a gold answer: accuracy needs `answer` in questions.jsonl"
        return report
    report |= {"accuracy_ci95": summary["accuracy_ci95"], "ci_method": summary["ci_method"]}
    if strategy not in ("knockout", "round-robin"):
        report["curve_note"] = f"strategy {strategy!r}: no replay known, so no accuracy against N"
        return report
    report["curve"], left_out = metrics.accuracy_against_n(picks, strategy, seed)
    if left_out:
        report["curve_note"] = (f"{left_out} question(s) whose matches do not replay to the recorded pick are left "
                                "out of the curve")
    return report


# --- output ------------------------------------------------------------------------------------

def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


_TEXT_COLUMNS = ("copy kept by", "example", "value")


def _side_by_side(title: str, named: list[tuple[str, dict]], keys: list[str], values: list[str], rows_of) -> Table:
    """A table keyed by `keys` with the `values` columns once per dataset; `rows_of(stats)` maps
    a key tuple to its cells."""
    table = Table(title=escape(title), title_justify="left")
    for key in keys:
        table.add_column(key)
    for name, _ in named:
        for value in values:
            table.add_column(value if len(named) == 1 else f"{value} {name}",
                             justify="left" if value in _TEXT_COLUMNS else "right")
    cells = [rows_of(stats) for _, stats in named]
    for key in dict.fromkeys(k for found in cells for k in found):
        row = [*key, *(cell for found in cells for cell in found.get(key, ["-"] * len(values)))]
        table.add_row(*map(Text, row))  # Text: a "[...]" in a reject's detail is not rich markup
    return table


def print_datasets(named: list[tuple[str, dict]]) -> None:
    for name, stats in named:
        console.print(f"{name}: {stats['folder']} (--format {stats['format']})", highlight=False, markup=False)
    console.print(_side_by_side("rows and labels", named, ["source", "split"], ["rows", '"1"', '"2"', "ties"],
                                lambda s: {(r["source"], r["split"]): [str(r["rows"]), str(r["answer_1"]),
                                                                       str(r["answer_2"]), str(r["ties"])]
                                           for r in s["rows"]}))
    counts = [(s["margins"] or {"counts": {}})["counts"] for _, s in named]  # per dataset: source -> count per bin
    if any(counts):
        labels = charts.bin_labels(statistics.MARGIN_EDGES)
        sources = dict.fromkeys(source for found in counts for source in found)
        shown = [(source, i) for source in sources for i in range(len(labels))
                 if any(found[source][i] for found in counts if source in found)]  # bins with pairs in either dataset

        def margin_rows(s):
            found = (s["margins"] or {"counts": {}})["counts"]
            return {(source, labels[i]): [str(found[source][i])] for source, i in shown if source in found}
        console.print(_side_by_side("score margin of kept pairs (ties left out)", named, ["source", "margin"],
                                    ["pairs"], margin_rows))
    if any(s["length_bias"] for _, s in named):
        def bias_rows(s):
            return {(r["source"], unit): [str(r["pairs"]), _pct(r["better_longer_share"]), f"{r['median_ratio']:.2f}",
                                          f"{r['quantiles'][0]:.2f}-{r['quantiles'][-1]:.2f}"]
                    for unit, key in (("chars", "length_bias"), ("tokens", "length_bias_tokens"))
                    for r in s.get(key) or []}
        console.print(_side_by_side("length bias: better response vs worse (ties left out)", named,
                                    ["source", "unit"], ["pairs", "better longer %", "median ratio", "ratio p10-p90"],
                                    bias_rows))
    if any(s["format"] == "easyr1" for _, s in named):
        console.print("margins and length bias: not in the easyr1 layout (no responses, no margin)")
    if any(s.get("prompt_tokens") for _, s in named):
        console.print(_side_by_side(
            "prompt tokens as the trainer counts them", named, ["source", "split"],
            ["rows", "median", "max", "over budget", "unusable"],
            lambda s: {(r["source"], r["split"]): [str(r["rows"]), f"{r['median']:.0f}" if r["median"] is not None
                                                   else "-",
                                                   str(r["max"]), str(r["over_budget"]), str(r["unusable"])]
                       for r in (s.get("prompt_tokens") or {}).get("by_source", [])}))
        for name, s in named:
            if s.get("prompt_tokens"):
                tokens = s["prompt_tokens"]
                dropped = sum(r["over_budget"] for r in tokens["by_source"])
                console.print(f"{name}: --max-prompt-length {tokens['budget']} counted in tokens (train's "
                              f"prompt_length_unit: tokens) would drop {dropped} rows "
                              f"(processor of {tokens['model']})", highlight=False, markup=False)
    console.print(_side_by_side("duplicates dropped", named, ["source"], ["pairs", "copy kept by"], _duplicate_rows))
    console.print(_side_by_side("rejects by reason", named, ["source", "reason"], ["rows", "example"], _reject_rows))
    console.print(_side_by_side("images (headers only)", named, ["figure"], ["value"], _image_rows))


def _duplicate_rows(stats: dict) -> dict:
    return {(r["source"],): [str(r["dropped"]), ", ".join(f"{k} {v}" for k, v in r["of"].items()) or "-"]
            for r in stats["duplicates"]}


def _reject_rows(stats: dict) -> dict:
    return {(r["source"], r["reason"]): [str(r["count"]), _example(r)] for r in stats["rejects"]}


def _example(reject: dict) -> str:
    if reject["example_id"] is None:
        return "-"
    return f"{reject['example_id']}: {reject['example_detail']}"[:90]


def _image_rows(stats: dict) -> dict:
    images = stats["images"]
    sides = {f"{side} min/median/max": [f"{images[f'{side}_min']}/{images[f'{side}_median']:.0f}/"
                                        f"{images[f'{side}_max']}"
                                        if images[f"{side}_median"] is not None else "-"]
             for side in ("width", "height")}
    return {("images per row",): [", ".join(f"{k}: {v}" for k, v in images["per_row"].items())],
            **{(key,): value for key, value in sides.items()},
            ("headers unreadable",): [str(images["unreadable"])]}


def print_eval(report: dict) -> None:
    table = Table(title=escape(f"eval {report['folder']} ({report['benchmark'] or 'benchmark unknown'}): "
                               f"{report['judgements']} judgements"), title_justify="left")
    columns = ["category", "judged", "items", "acc % (95% CI)", "acc % unparsed 1/2 (95% CI)", "unparsed %",
               'said "1" %', 'truth "1" %', 'said "2" %', 'truth "2" %'] + (
                   ["consistent %", "both-order items"] if report["both_orders"] else [])
    for column in columns:
        table.add_column(column, justify="left" if column == "category" else "right")
    for row in report["categories"]:
        cells = [row["category"], str(row["judgements"]), str(row["items"]),
                 percent(row["accuracy"], row["accuracy_ci95"]),
                 percent(row["accuracy_unparsed_half"], row["accuracy_unparsed_half_ci95"]),
                 _pct(row["unparsed_rate"]), _pct(row["said_1"]), _pct(row["truth_1"]), _pct(row["said_2"]),
                 _pct(row["truth_2"])]
        if report["both_orders"]:
            cells += [_pct(row["position_consistency"]), str(row["both_orders_items"] or 0)]
        table.add_row(*map(Text, cells))
    table.caption = ('acc: an unparsed verdict is wrong; unparsed 1/2: it scores half, as lmms-eval\'s coin does on '
                     'average. 95% CI: Wilson. position bias: a critic that favours a position says "1" (or "2") more '
                     'often than the truth is')
    console.print(table)
    if report["lines_left_out"]:
        console.print(f"{report['lines_left_out']} line(s) of results.jsonl are not judgements and were left out")


def print_best_of_n(report: dict) -> None:
    table = Table(title=escape(f"best-of-{report['n']} ({report['strategy']}) {report['folder']}: "
                               f"{report['questions']} questions, {report['answered']} with an answer"),
                  title_justify="left")
    table.add_column("selection")
    table.add_column("acc % (95% CI)", justify="right")
    for name, value in (report["accuracy"] or {}).items():
        table.add_row(name.replace("_", " "), percent(value, report["accuracy_ci95"][name]))
    for point in report["curve"] or []:
        table.add_row(f"best of {point['n']} (replayed, {point['questions']} questions)",
                      percent(point["accuracy"], point["accuracy_ci95"]))
    table.caption = (f"unparsed judgements {report['unparsed_judgements']}, over --max-model-len "
                     f"{report['too_long_matches']}; 95% CI: Wilson")
    console.print(table)
    for note in (report["curve_note"],
                 f"{report['lines_left_out']} line(s) of picks.jsonl are not picks and were left out"
                 if report["lines_left_out"] else None):
        if note:
            console.print(note, highlight=False, markup=False)


def write_run_plots(report: dict, folder: Path) -> list[Path]:
    """eval: accuracy and position bias per category; best-of-n: accuracy against N (no chart
    without a curve)."""
    folder.mkdir(parents=True, exist_ok=True)
    if report["kind"] == "best-of-n" and not report["curve"]:
        return []
    name, draw = ("eval.png", charts.eval_chart) if report["kind"] == "eval" else ("best_of_n.png",
                                                                                   charts.best_of_n_chart)
    shown = [Path(report["folder"]).name, report.get("benchmark") or "", report.get("strategy") or "",
             *(row["category"] for row in report.get("categories") or [])]
    with charts.plain_text(" ".join(shown)):
        return [charts.save_figure(draw(report), folder / name)]


def inspect(path: str, against: str | None = None, as_json: bool = False, plots: Path | None = None,
            processor: Path | None = None, max_prompt_length: int | None = None) -> dict:
    """Compute, print (or print as JSON) and plot the figures of PATH; return them."""
    if max_prompt_length is not None and processor is None:
        raise UserError("--max-prompt-length needs --processor MODEL: prompt tokens are counted with the model's "
                        "processor")
    budget = OFFICIAL_MAX_PROMPT_LENGTH if max_prompt_length is None else max_prompt_length
    if budget < 1:
        raise UserError(f"--max-prompt-length must be at least 1, not {budget}")
    folder = resolve(path)
    if (kind := kind_of(folder)) == "difficulty":
        return inspect_difficulty(folder, against, as_json, plots, processor)
    if kind != "dataset" and (against or processor):
        raise UserError(f"{path} is a{'n' if kind == 'eval' else ''} {kind} run; --against and --processor apply to "
                        "datasets")
    if kind == "dataset":
        named = [("A" if against else Path(path).name or path, dataset_report(folder, processor, budget))]
        if against is not None:
            other = resolve(against)
            if kind_of(other) != "dataset":
                raise UserError(f"--against {against} is not a dataset folder (no build.json); it compares two "
                                "datasets")
            named.append(("B", dataset_report(other, processor, budget)))
        report = named[0][1] if against is None else {"kind": "datasets", "dataset": named[0][1],
                                                      "against": named[1][1]}
    else:
        report = eval_statistics(folder) if kind == "eval" else best_of_n_statistics(folder)
    written = []
    if plots is not None:
        # A published chart names its datasets: each panel is titled by its folder's name (the
        # tables' A and B are named by the lines above them), by the paths given when both are one.
        titles = [Path(given).name or given for given in (path, against)[:len(named)]] if kind == "dataset" else []
        if len(set(titles)) < len(titles):
            titles = [path, against]
        try:
            written = (charts.write_dataset_plots([(title, stats) for title, (_, stats) in zip(titles, named)], plots)
                       if kind == "dataset" else write_run_plots(report, plots))
        except OSError as error:
            raise UserError(f"--plots {plots}: cannot write the charts there ({error.strerror or error}); "
                            "pass a folder you can write") from None
    if as_json:
        print(json.dumps({**report, "plots": [str(p) for p in written]}, ensure_ascii=False))
    else:
        if kind == "dataset":
            print_datasets(named)
        else:
            (print_eval if kind == "eval" else print_best_of_n)(report)
        if written:
            console.print(f"plots: {', '.join(str(p) for p in written)}", highlight=False, markup=False, soft_wrap=True)
    return report


# --- difficulty runs ---------------------------------------------------------------------------

def difficulty_statistics(folder: Path, against: str | None = None) -> dict:
    """A difficulty run's figures (`metrics.difficulty_summary`), the histogram with each bin's share,
    and with `against` how the pass rates moved from this run to that one (`metrics.rate_transitions`)."""
    run = read_difficulty(folder)
    rows = list(run.rows.values())
    if not rows:
        raise UserError(f"{folder / DIFFICULTY_LOG} holds no row; was the run stopped before the first?")
    figures = metrics.difficulty_summary(rows, run.samples, dict(run.identity["rewards"]))
    histogram = [{"passes": k, "pass_rate": k / run.samples, "rows": count, "share": count / len(rows)}
                 for k, count in enumerate(figures["histogram"])]
    report = {"kind": "difficulty", "folder": str(folder), "model": run.identity.get("model"),
              "recipe": run.identity.get("recipe"), "dataset": run.dataset, "lines_left_out": run.lines_left_out,
              **figures, "histogram": histogram, "against": None}
    if against is not None:
        other = Path(against).expanduser()
        if not (other / DIFFICULTY_LOG).is_file():
            raise UserError(f"--against {against} is not a difficulty run (no {DIFFICULTY_LOG}); it compares two "
                            "difficulty runs, e.g. a base model's and a trained checkpoint's")
        second = read_difficulty(other)
        report["against"] = {"folder": str(other), "model": second.identity.get("model"),
                             "same_dataset": second.dataset == run.dataset,
                             **metrics.rate_transitions(run.rows, second.rows)}
    return report


def print_difficulty(report: dict) -> None:
    samples = report["samples"]
    zero = report["zero_advantage"]
    console.print(f"difficulty {report['folder']}: {report['model']} on {report['rows']} rows x {samples} samples "
                  f"(recipe {report['recipe']}); mean pass rate {_pct(report['mean_pass_rate'])}%, mean format rate "
                  f"{_pct(report['mean_format_rate'])}%", highlight=False, markup=False, soft_wrap=True)
    histogram = Table(title="rows per pass rate", title_justify="left")
    for column in ("pass rate", "rows", "share %"):
        histogram.add_column(column, justify="right")
    for bin_ in report["histogram"]:
        histogram.add_row(f"{bin_['passes']}/{samples}", str(bin_["rows"]), _pct(bin_["share"]))
    console.print(histogram)
    console.print(f"zero advantage (a group of {samples} whose preference rewards all agree): "
                  f"{_pct(zero['observed'])}% of rows observed, {_pct(zero['expected'])}% expected from the rates "
                  f"(mean of p^{samples} + (1-p)^{samples}); {_pct(zero.get('observed_all_rewards'))}% with every "
                  "weighted reward alike", highlight=False, markup=False, soft_wrap=True)
    console.print(_bands_table(report["bands"]))
    if report["against"]:
        _print_transitions(report["against"], samples)
    if report["lines_left_out"]:
        console.print(f"{report['lines_left_out']} line(s) of {DIFFICULTY_LOG} are not rows of this run and were "
                      "left out", highlight=False, markup=False)


def _bands_table(bands: list[dict]) -> Table:
    table = Table(title="what a pass-rate band keeps (build --difficulty RUN --pass-rate LOW:HIGH)",
                  title_justify="left")
    for column in ("band", "rows kept", "rows dropped", "rollouts saved %", "zero advantage left % (expected)"):
        table.add_column(column, justify="right")
    for band in bands:
        table.add_row(f"{band['band'][0]:g}:{band['band'][1]:g}", str(band["rows_kept"]), str(band["rows_dropped"]),
                      _pct(band["compute_saved"]), _pct(band["zero_advantage_kept"]["expected"]))
    table.caption = ("closed bands; each row costs K rollouts, so the rollouts saved are the rows dropped. The "
                     "expected zero advantage of the rows kept is what a fresh group of K would still show")
    return table


def _print_transitions(moved: dict, samples: int) -> None:
    table = Table(title=escape(f"pass rates moved: rows (this run, down) -> {moved['folder']} ({moved['model']}, "
                               "across)"), title_justify="left")
    size = len(moved["table"][0]) - 1
    table.add_column("this run")
    for k in range(size + 1):
        table.add_column(f"{k}/{size}", justify="right")
    for k, counts in enumerate(moved["table"]):
        if any(counts):
            table.add_row(f"{k}/{samples}", *(str(count) if count else "." for count in counts))
    console.print(table)
    change = "-" if moved["mean_change"] is None else f"{100 * moved['mean_change']:+.1f}"
    console.print(f"rows in both {moved['rows_in_both']}: mean change {change} points; rose {moved['rose']}, same "
                  f"{moved['same']}, fell {moved['fell']}. Left out: {moved['other_content']} with other content "
                  f"(another build), {moved['only_first']} only here, {moved['only_second']} only there"
                  + ("" if moved["same_dataset"] else "; the runs measured different datasets"),
                  highlight=False, markup=False, soft_wrap=True)


def inspect_difficulty(folder: Path, against: str | None, as_json: bool, plots: Path | None,
                       processor: Path | None) -> dict:
    """`inspect` on a difficulty run: its figures as tables, or as one JSON object."""
    if plots is not None or processor is not None:
        raise UserError(f"{folder} is a difficulty run; --plots and --processor apply to datasets and eval or "
                        "best-of-n runs (--json gives the run's figures to a script)")
    report = difficulty_statistics(folder, against)
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print_difficulty(report)
    return report
