"""The `critic-data` command: one entry point, one sub-command per job.

Errors a user can cause (`UserError`) end as one line on stderr and exit code 2; an eval or
best-of-n run that finished with some items refused by the server exits 1; anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import inspect
import os
import sys
import typing
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from critic_data import UserError, __version__, cli_flags
from critic_data.builders.options import BuildOptions
from critic_data.push_limits import ATTEMPTS, DEFAULT_TIMEOUT, MAX_TIMEOUT, RETRY_WINDOW
from critic_data.rl.options import OFFICIAL_MAX_PROMPT_LENGTH, BestOfNOptions, DifficultyOptions, EvalOptions

app = typer.Typer(
    name="critic-data",
    help="Verifiable preference-RL datasets for multimodal critics: build, push, train, eval, best-of-n.",
    pretty_exceptions_enable=False,
    add_completion=False,
    # click's plain help: rich's option table cuts option names short at 80 columns ("--pairs-per-prom…")
    rich_markup_mode=None,
    context_settings={
        # TRL's spelling is ours too, as `train` takes both: --num_proc is --num-proc, best_of_n is best-of-n
        "token_normalize_func": lambda name: name.replace("_", "-"),
        "help_option_names": ["-h", "--help"],
        "max_content_width": sys.maxsize,  # as wide as the terminal (click stops at 80 columns)
    },
)
console = Console(stderr=True)
# The packages of the `rl` extra (pyproject.toml): `train` and `inspect --processor` need them.
TRAINING_EXTRA = ("torch", "torchvision", "transformers", "trl", "accelerate")
# The name TRL gives an option of ours, taken beside it (a TRL user's `--output_dir` on `build`).
TRL_NAMES = {"out": "--output-dir"}


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"critic-data {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                          callback=_print_version)] = False,
) -> None:
    """Verifiable preference-RL datasets for multimodal critics."""
    if ctx.invoked_subcommand is None:  # a bare `critic-data`: its usage, as click answers a missing command
        typer.echo(ctx.get_help(), err=True)
        raise typer.Exit(2)


def _options_command(name: str, options_class):
    """Register `run(options)` as the command `name`, its options made from `options_class`'s
    fields: each option's name, type, default and help are declared once, on the field
    (`critic_data.option`), and the dataclass checks the values (UserError: one line)."""
    hints, typed = typing.get_type_hints(options_class), cli_flags(options_class)
    parameters = []
    for spec in dataclasses.fields(options_class):
        cli = spec.metadata["cli"]
        # typer names an option without declared flags itself, by the rule cli_flags states (and makes a
        # switch's --no- form only then)
        flags = [cli["flag"]] if "flag" in cli else []
        if spec.name in TRL_NAMES:
            flags = [typed[spec.name], TRL_NAMES[spec.name]]
        missing = spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
        if missing or cli.get("required"):
            default = inspect.Parameter.empty
        else:
            default = cli.get("cli_default", spec.default)
        if cli.get("argument"):  # a positional argument (`critic-data difficulty DATASET`)
            declared = typer.Argument(help=spec.metadata["help"], show_default=False)
        else:
            declared = typer.Option(*flags, help=spec.metadata["help"], show_default=cli.get("show_default", True),
                                    metavar=f"<{cli['metavar']}>" if "metavar" in cli else None)
        annotation = Annotated[cli.get("type", hints[spec.name]), declared]
        parameters.append(inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                            annotation=annotation))

    def register(run):
        def command(**values):
            return run(options_class(**values))

        command.__signature__ = inspect.Signature(parameters)
        command.__doc__ = run.__doc__
        app.command(name)(command)
        return run

    return register


@_options_command("build", BuildOptions)
def build(options: BuildOptions) -> None:
    """Build a verifiable pairwise-critic dataset from its sources."""
    from critic_data.builders.pipeline import build as run_build

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    # Off when stderr is not a terminal: there the bar only leaves a blank line before an error.
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        manifest = run_build(options, progress=progress, argv=["critic-data", *sys.argv[1:]],
                             readers=_curation_readers(options))
    _print_build_summary(manifest, options.out)


def _curation_readers(options: BuildOptions):
    """What a curating build reads benchmarks and difficulty runs with (builders do not import rl/);
    None for a build that does not curate, which is spared rl/'s imports."""
    if not options.decontaminate and options.difficulty is None:
        return None
    from critic_data.builders.curation import Readers
    from critic_data.rl.evaluate import benchmark_items
    from critic_data.rl.records import read_difficulty

    return Readers(benchmark_items, read_difficulty)


class _NoPandas:
    """An import finder that has no pandas (`_spare_pandas_import`)."""

    def find_spec(self, name, path=None, target=None):
        if name == "pandas":
            raise ModuleNotFoundError("pandas is not looked for during a build", name=name)


def _spare_pandas_import() -> None:
    """Spare a build's process, and its workers forked from it, pandas' import (0.2 s each).

    pyarrow imports pandas the first time it converts a Python list, only to ask whether the list
    is a pandas object; a build never hands it one. Once an import of pandas has failed, pyarrow
    skips that question for the rest of the process, and still imports pandas where a conversion
    needs it (`to_pandas`). Done by `main` only, in the CLI's own process: a program that calls
    `pipeline.build`, or the `build` command in-process, may hand pyarrow pandas objects later."""
    import pyarrow as pa

    if "pandas" in sys.modules:  # imported already: pyarrow has found it, nothing to spare
        return
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([0])  # pyarrow looks for pandas here, once
    finally:
        sys.meta_path.remove(finder)


def _print_build_summary(built: dict, out: Path) -> None:
    from critic_data.manifest import Manifest

    manifest = Manifest.from_dict(built)  # what the build wrote to build.json, read as every reader reads it
    table = Table(title=escape(f"built {out}"))
    table.caption = "rows: read = used + rejected; pairs: formed = kept + filtered + duplicates"
    for column in ("source", "read", "used", "rejected", "formed", "filtered", "duplicates", "kept"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for name, source in manifest.sources.items():
        c = source.counts
        table.add_row(name, *(str(v) for v in (c.rows_read, c.rows_used, c.rows_rejected, c.pairs_formed,
                                                sum(c.pairs_filtered.values()), c.duplicates_dropped, c.pairs_kept)))
    console.print(table)
    splits = ", ".join(f"{name} {split.rows}" for name, split in manifest.splits.items())
    console.print(f"splits: {splits}; {manifest.total_seconds:.1f}s; rejects in {out / 'rejects.jsonl'}", markup=False)
    # (a build that keeps no row at all is an error, so one split here has rows)
    advice = {"train": "lower --test-size to leave rows for training",
              "test": "raise --test-size for a test split, or check the rejects"}
    for name, split in manifest.splits.items():
        if not split.rows and (name != "test" or manifest.options["test_size"] > 0):
            console.print(f"[yellow]warning:[/yellow] the {name} split is empty and was not written; {advice[name]}")


PUSH_TIMEOUT_HELP = ("Seconds each request waits for the Hub (to connect, or for the next bytes of an answer). A "
                     "request that times out is not sent again, so a Hub that never answers ends the push within two "
                     f"timeouts. Connection errors, 408, 429 and 5xx are retried: at most {ATTEMPTS} tries per Hub "
                     f"call, none later than {RETRY_WINDOW} s after its first.")


@app.command()
def push(
    folder: Annotated[Path, typer.Argument(help="A dataset folder made by `critic-data build`, or a trained checkpoint "
                                                "folder.")],
    repo_id: Annotated[str, typer.Option(help="Hub repo to publish to: OWNER/NAME (created if missing).")],
    private: Annotated[bool, typer.Option(help="Create the repo private (has no effect on an existing repo).")] = False,
    revision: Annotated[str | None, typer.Option(help="Branch to push to (default main); a new branch is created from "
                                                      "main.")] = None,
    create_pr: Annotated[bool, typer.Option(help="Open a pull request instead of committing to the branch.")] = False,
    commit_message: Annotated[str | None,
                              typer.Option(help="Commit title (default: what is pushed, with row counts).")] = None,
    force: Annotated[bool, typer.Option(help="Replace a revision that already holds a different dataset or "
                                             "checkpoint.")] = False,
    include_rejects: Annotated[bool, typer.Option(help="Also upload rejects.jsonl (datasets).")] = False,
    dry_run: Annotated[bool, typer.Option(help="List what would be uploaded and where; contact nothing.")] = False,
    timeout: Annotated[float, typer.Option(help=PUSH_TIMEOUT_HELP)] = DEFAULT_TIMEOUT,
) -> None:
    """Publish a dataset or a checkpoint to the Hub in one commit.

    A folder made by `critic-data build`, or a checkpoint folder made by `critic-data train`."""
    from huggingface_hub import constants
    from huggingface_hub.utils import disable_progress_bars

    from critic_data.hub import plan_push, require_token
    from critic_data.hub import push as run_push

    if not 0 < timeout <= MAX_TIMEOUT:  # also refuses nan
        raise UserError(f"--timeout {timeout:g} is not a number of seconds from 0 to {MAX_TIMEOUT:g}; pass e.g. "
                        "--timeout 60")
    plan = plan_push(folder, repo_id, revision, include_rejects=include_rejects)
    if dry_run:
        console.print(_push_table(plan, create_pr))
        console.print(f"dry run: would push {len(plan.files)} files ({plan.summary}) in one commit; nothing was sent")
        return
    require_token()  # before the plan is shown: a push that cannot be sent shows nothing but how to log in
    # tqdm's redraws (\r, cursor moves) garble a log file or a CI log: plain lines say what is sent
    # instead. HF_HUB_DISABLE_PROGRESS_BARS=0 asks for the bars everywhere.
    if not sys.stderr.isatty() and constants.HF_HUB_DISABLE_PROGRESS_BARS is not False:
        disable_progress_bars()
    outcome = run_push(plan, private=private, create_pr=create_pr, commit_message=commit_message, force=force,
                       timeout=timeout, announce=lambda changed: _announce_upload(plan, create_pr, changed))
    if outcome.unchanged:
        console.print(f"nothing to do: {plan.url} @ {plan.revision} already holds this {plan.kind.name}; "
                      "no commit made", markup=False, highlight=False, soft_wrap=True)
        return
    if outcome.deleted:
        console.print(f"replaced: removed {len(outcome.deleted)} file(s) the folder no longer has "
                      f"({', '.join(outcome.deleted[:3])}{', ...' if len(outcome.deleted) > 3 else ''})", markup=False)
    console.print(f"pushed {plan.summary} to {plan.url} @ "
                  f"{plan.revision}{' (new branch)' if outcome.created_branch else ''}: "
                  f"{outcome.pr_url or outcome.commit_url}", highlight=False, soft_wrap=True, markup=False)


def _push_table(plan, create_pr: bool) -> Table:
    """What a push publishes where: each file with its size, and what the folder holds that is not sent."""
    table = Table(title=escape(f"{plan.kind.name} {plan.folder} -> {plan.url} @ {plan.revision}"
                               f"{' (pull request)' if create_pr else ''}"))
    table.add_column("path in repo")
    table.add_column("bytes", justify="right")
    for path in sorted(plan.files):
        table.add_row(escape(path) + (" (rendered for this repo)" if isinstance(plan.files[path], bytes) else ""),
                      f"{plan.size(path):,}")
    table.caption = escape(f"not uploaded: {', '.join(plan.left_out)}") if plan.left_out else None
    return table


def _announce_upload(plan, create_pr: bool, changed: list[str]) -> None:
    """The plan, then one plain line that the upload starts (what a log keeps of it: progress
    bars are only drawn on a terminal)."""
    console.print(_push_table(plan, create_pr))
    unchanged = len(plan.files) - len(changed)
    console.print(f"uploading {len(changed)} files ({sum(plan.size(path) for path in changed):,} bytes) in one commit"
                  + (f"; {unchanged} unchanged, already on the Hub" if unchanged else ""),
                  markup=False, highlight=False, soft_wrap=True)


# What `train --help` lists besides --recipe: the recipe fields most runs change. Their values are
# read from the shipped recipes as the help is shown, so the help cannot drift from the files.
TRAIN_OPTIONS = {
    "model_name_or_path": "The model to train: a Hub id, or a local folder.",
    "dataset_name": "Required: a folder built by `critic-data build`, or a Hub dataset id.",
    "dataset_revision": "The branch, tag or commit of a Hub --dataset_name; unset, main.",
    "output_dir": "Where checkpoints, the weights and the model card are written (a new or empty folder).",
    "max_steps": "Optimiser steps to train; unset (-1), --num_train_epochs decides.",
    "num_train_epochs": "Passes over the train split, unless --max_steps is set.",
    "per_device_train_batch_size": "Completions per device in each forward and backward pass.",
    "gradient_accumulation_steps": "Passes per optimiser step.",
    "num_generations": "Completions sampled per prompt (the GRPO group).",
    "use_vllm": "Sample with vLLM; false samples with transformers (slower; the only way without a GPU).",
    "vllm_mode": "colocate: vLLM on the training GPUs; server: a `vllm serve` at --vllm_server_base_url.",
    "report_to": "Where the metrics go: none, wandb, tensorboard, trackio.",
    "max_prompt_length": "Rows whose prompt is longer (in --prompt_length_unit) are dropped before training.",
    "prompt_length_unit": "characters: the official filter's measure; tokens: text and image tokens under the "
                          "pixel bounds.",
    "min_pixels": "Images with fewer pixels are upscaled (for the trainer and vLLM alike).",
    "max_pixels": "Images with more pixels are downscaled.",
}


class _TrainCommand(typer.core.TyperCommand):
    """`train`'s help: --recipe, then TRAIN_OPTIONS with the shipped recipes' values; TRL is not imported."""

    def format_options(self, ctx, formatter) -> None:
        import yaml

        from critic_data.rl import recipes

        super().format_options(ctx, formatter)
        shipped = {name: yaml.safe_load(path.read_text(encoding="utf-8")) for name, path in recipes().items()}
        rows = []
        for option, help_ in TRAIN_OPTIONS.items():
            # as a command line takes them (`--use_vllm false`); the term column is never wrapped
            values = [str(recipe[option]).lower() if isinstance(recipe.get(option), bool)
                      else str(recipe.get(option, "(unset)")) for recipe in shipped.values()]
            rows.append((f"--{option} {values[0] if len(set(values)) == 1 else ' | '.join(values)}", help_))
        with formatter.section("Recipe options most runs change"):
            formatter.write_text(f"Each with its value in the recipes ({' | '.join(shipped)} where they differ). "
                                 f"Any recipe field takes its TRL flag name: `critic-data train --recipe "
                                 f"{next(iter(shipped))} -h` lists them all.")
            formatter.write_paragraph()
            formatter.write_dl(rows)


# `-h` is TRL's: it lists every flag of the recipe
@app.command(cls=_TrainCommand,
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                               "help_option_names": ["--help"]})
def train(
    ctx: typer.Context,
    recipe: Annotated[str, typer.Option(help="critic-r1, critic-r1-plus, or the path of a recipe .yaml file.")],
) -> None:
    """Train a critic with TRL GRPO. Any recipe field can be overridden with TRL's flag names
    (--model_name_or_path, --dataset_name, --learning_rate, --max_steps, --use_vllm, --output_dir, ...)."""
    try:
        from critic_data.rl.train import train as run_train
    except ModuleNotFoundError as error:
        if (error.name or "").partition(".")[0] not in TRAINING_EXTRA:
            raise
        raise UserError("critic-data train needs the training extra: pip install 'critic-data[rl]'") from None

    run_train(recipe, list(ctx.args))


@app.command("inspect")
def inspect_(
    path: Annotated[str, typer.Argument(help="A dataset folder from `critic-data build` (or its Hub id), an eval run "
                                             "folder (results.jsonl), a best-of-n run folder (picks.jsonl) or a "
                                             "difficulty run folder (difficulty.jsonl).")],
    against: Annotated[str | None,
                       typer.Option(help="A second dataset (folder or Hub id): the same figures side by side; or, "
                                                "for a difficulty run, a second run: how pass rates moved.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")] = False,
    plots: Annotated[Path | None, typer.Option(help="Write PNG charts into this folder.")] = None,
    processor: Annotated[Path | None, typer.Option(help="A local model folder: count each row's prompt tokens with its "
                                                        "processor, as the trainer does (needs the rl extra: torch, "
                                                        "transformers).")] = None,
    max_prompt_length: Annotated[int | None, typer.Option(help="With --processor: the prompt budget whose drops to "
                                                               "count (default: the recipes' "
                                                               f"{OFFICIAL_MAX_PROMPT_LENGTH}, counted in tokens).",
                                                          show_default=False)] = None,
) -> None:
    """See what a dataset teaches, or where a critic fails.

    A dataset's labels, margins, length bias, images and rejects; an eval or best-of-n run's failures."""
    from critic_data.inspection import inspect as run_inspect

    run_inspect(path, against=against, as_json=json_, plots=plots, processor=processor,
                max_prompt_length=max_prompt_length)


@app.command()
def env() -> None:
    """Print the versions that matter for a bug report.

    python, torch + CUDA, transformers, trl, vllm, ..."""
    from critic_data.env import environment

    for name, value in environment().items():
        typer.echo(f"{name + ':':<17} {value}")


@_options_command("eval", EvalOptions)
def eval_(options: EvalOptions) -> None:
    """Measure a critic's accuracy on labelled pairs.

    The critic judges through an OpenAI-compatible server (`vllm serve`, `transformers serve`)."""
    from critic_data.rl.evaluate import run_eval, summary_table

    summary = _run_with_progress(run_eval, options, options.out / "results.jsonl")
    console.print(summary_table(summary))
    console.print(f"results in {options.out / 'results.jsonl'}, summary in {options.out / 'summary.json'}",
                  markup=False)
    _fail_if_incomplete(summary, "requests")


@_options_command("best-of-n", BestOfNOptions)
def best_of_n(options: BestOfNOptions) -> None:
    """Best-of-N: let a model pick the best of its own N answers.

    Sample N answers, let the same model judge them pairwise, keep the winner."""
    from critic_data.rl.best_of_n import run_best_of_n, summary_table

    summary = _run_with_progress(run_best_of_n, options, options.out / "picks.jsonl")
    console.print(summary_table(summary))
    console.print(f"picks in {options.out / 'picks.jsonl'}, summary in {options.out / 'summary.json'}", markup=False)
    _fail_if_incomplete(summary, "questions")


@_options_command("difficulty", DifficultyOptions)
def difficulty(options: DifficultyOptions) -> None:
    """Measure each row's pass rate: how often the model to train judges it right.

    Each row judged --samples times with the recipe's rollout sampling and graded by its rewards, through an
    OpenAI-compatible server; `critic-data inspect OUT` shows what a pass-rate band would keep."""
    from critic_data.rl.difficulty import run_difficulty, summary_table

    summary = _run_with_progress(run_difficulty, options, options.out / "difficulty.jsonl")
    console.print(summary_table(summary))
    console.print(f"rows in {options.out / 'difficulty.jsonl'}, summary in {options.out / 'summary.json'}",
                  markup=False)
    _fail_if_incomplete(summary, "rows")


def _fail_if_incomplete(summary: dict, what: str) -> None:
    """A run the server refused in part is not a success: say so, and exit 1 (the results
    written so far stay; --resume asks again for just the missing ones)."""
    if summary["failed"]:
        failed = summary["failed"]
        console.print(f"[red]error:[/red] {failed} {what if failed > 1 else what[:-1]} failed, left out of the results "
                      f"(first: {escape(str(summary['first_failure']))}); fix the cause and rerun with --resume",
                      highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _run_with_progress(run, options, log: Path) -> dict:
    """Run an eval/best-of-n job under a progress bar; an interrupt keeps what was written."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        # Off when stderr is not a terminal (logs, CI): a redrawn bar there is noise.
        with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
            return run(options, progress=progress)
    except KeyboardInterrupt:
        raise _Interrupted(f"interrupted; finished items are in {log}: rerun with --resume to continue") from None


class _Interrupted(Exception):
    """An interrupt with a command's own explanation (typer turns a bare one into exit code 130)."""


def _check_hf_endpoint() -> None:
    """huggingface_hub parses HF_ENDPOINT when it is imported, and a malformed one ends any command that
    imports it (a build too) in a traceback: say what is wrong first."""
    from urllib.parse import urlsplit

    endpoint = os.environ.get("HF_ENDPOINT")
    if not endpoint:
        return
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 - raises ValueError on a malformed host or port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"HF_ENDPOINT {endpoint!r} is not an http(s) URL; unset it to use huggingface.co, or fix it")


def _one_line(message: str) -> str:
    return message.replace("\r", "\\r").replace("\n", "\\n")  # a path may hold a line break


def main() -> None:
    """Run the CLI: a user's mistake (bad input, a bad option, an interrupt) ends in one line on stderr."""
    from typer.exceptions import TyperException

    # At exit, once the command has closed its files: spare the interpreter its collection of every
    # object left (a fifth of a second after a build, for memory the process gives back anyway; part
    # of the tenth `pipeline._tuned` measures). A caller that runs main() in its own process is not
    # affected until that process exits.
    atexit.register(gc.freeze)
    if sys.argv[1:2] == ["build"]:
        _spare_pandas_import()
    try:
        _check_hf_endpoint()
        result = app(prog_name="critic-data", standalone_mode=False)
    except UserError as error:
        console.print(f"[red]error:[/red] {escape(_one_line(str(error)))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except TyperException as error:  # typer's usage errors: a missing or unknown option, a value of the wrong type
        context = getattr(error, "ctx", None)
        command = context.command_path if context else "critic-data"
        listed = "options" if context and context.parent else "commands and options"  # the root's help: its commands
        console.print(f"[red]error:[/red] {escape(_one_line(error.format_message()))} (`{escape(command)} --help` "
                      f"lists the {listed})", highlight=False, soft_wrap=True)
        sys.exit(2)
    except _Interrupted as interrupted:
        console.print(str(interrupted), highlight=False, soft_wrap=True)
        sys.exit(130)
    if result == 130:  # typer turns an interrupt (Ctrl-C) into exit code 130, silently
        console.print("interrupted" + ("; --out is as it was" if "build" in sys.argv[1:2] else ""))
    if isinstance(result, int):  # typer.Exit(code) comes back as its code outside standalone mode
        sys.exit(result)


if __name__ == "__main__":
    main()
