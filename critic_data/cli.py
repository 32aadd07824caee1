"""The `critic-data` command: one entry point, one sub-command per job.

Errors a user can cause (`UserError`) end as one line on stderr and exit code 2; an eval or
best-of-n run that finished with some items refused by the server exits 1; anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from critic_data import UserError
from critic_data.rl.client import DEFAULT_TIMEOUT, TIMEOUT_HELP

app = typer.Typer(
    name="critic-data",
    help="Verifiable preference-RL datasets for multimodal critics: build, push, train, eval, best-of-n.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Verifiable preference-RL datasets for multimodal critics."""


def _parse_size(text: str) -> int:
    import re

    units = {"": 1, "b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30}
    # ASCII digits only ("²" is a digit to str.isdigit, not to float), and few enough for a float
    size = re.fullmatch(r"\s*(\d{1,15}(?:\.\d{0,15})?|\.\d{1,15})\s*([kmg]?b)?\s*", text, re.IGNORECASE | re.ASCII)
    if size is None:
        raise UserError(f"--max-shard-size {text!r} is not a size; write e.g. 500MB or 2GB")
    return int(float(size[1]) * units[(size[2] or "").lower()])


def _split_names(values: list[str]) -> list[str]:
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def _resolve_inputs(sources: list[str], inputs: list[str]) -> dict[str, Path]:
    """`--input DIR` for a single source, or `--input SOURCE=DIR` (repeatable)."""
    resolved: dict[str, Path] = {}
    for value in inputs:
        name, sep, folder = value.partition("=")
        if sep and name in sources:
            source, path = name, Path(folder)
        elif len(sources) == 1 and not (sep and name.isidentifier() and not Path(value).exists()):
            source, path = sources[0], Path(value)
        else:
            raise UserError(f"--input {value!r}: with several sources write --input SOURCE=DIR, SOURCE one of {', '.join(sources)}")
        if source in resolved:
            raise UserError(f"--input given twice for {source}: {resolved[source]} and {path}; pass one folder per source")
        resolved[source] = path
    return resolved


@app.command()
def build(
    source: Annotated[list[str], typer.Option(help="Source(s) to build: vlfeedback, rlhf_v, llava_rlhf, llava_critic, or all. Repeatable or comma-separated.")],
    out: Annotated[Path, typer.Option(help="Output dataset folder (Hub layout).")],
    input: Annotated[list[str], typer.Option("--input", help="Local snapshot folder: DIR for one source, SOURCE=DIR for several. Without it the source is fetched from the Hub.")] = [],  # noqa: B006
    image_root: Annotated[Path | None, typer.Option(help="Folder of COCO train2017 images (llava_rlhf).")] = None,
    revision: Annotated[str | None, typer.Option(help="Hub revision to fetch when no --input is given.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the presented order and the split.")] = 0,
    margin: Annotated[float, typer.Option(help="Keep a scored pair when its score gap exceeds this.")] = 0.6,
    pairs_per_prompt: Annotated[str, typer.Option(help="max-gap: the widest pair per row; all: every pair over the margin.")] = "max-gap",
    aspects: Annotated[list[str], typer.Option(help="VLFeedback rating aspects averaged into a score (repeatable or comma-separated).")] = ["Helpfulness", "Ethical Considerations", "Visual Faithfulness"],  # noqa: B006
    keep_ties: Annotated[str, typer.Option(help="Keep up to N tied pairs per source, or all of them, labelled 'tie' (default 0: drop ties).")] = "0",
    prompt_style: Annotated[str, typer.Option(help="Critic prompt body: critic-data (ours) or llava-critic (LLaVA-Critic's pairwise judge template, the official RL set's); both end in the official think/boxed instruction.")] = "critic-data",
    balance_length: Annotated[bool, typer.Option(help="Per source and split, drop the fewest pairs (each decided in input order) so that the pairs whose better response is the longer one (more characters) and those whose better response is the shorter one differ by at most √n, n being their sum (the longer-better share is 50% ± 50%/√n: as even as n fair coin flips come out two times in three; equal lengths count as neither). Dropped pairs are counted as pairs_filtered.length_balance.")] = False,
    test_size: Annotated[float, typer.Option(help="Fraction of (image, question) groups in the test split.")] = 0.02,
    max_shard_size: Annotated[str, typer.Option(help="Roll over to a new parquet shard past this size.")] = "500MB",
    max_image_pixels: Annotated[int, typer.Option(help="Reject images with more pixels than this.")] = 89_478_485,
    image_check: Annotated[str, typer.Option(help="structure: headers parse and the data is complete (fast); decode: also decode every image.")] = "structure",
    num_proc: Annotated[int, typer.Option(help="Worker processes that read, check and pair the input (the output does not depend on it).")] = os.cpu_count() or 1,
    format: Annotated[str, typer.Option("--format", help="trl: conversational prompt for TRL (default); easyr1: flat question/answer/images.")] = "trl",
    overwrite: Annotated[bool, typer.Option(help="Replace --out if it holds a previous critic-data build (and nothing else).")] = False,
) -> None:
    """Build a verifiable pairwise-critic dataset from one or more sources."""
    from critic_data.builders import SOURCES
    from critic_data.builders.options import BuildOptions
    from critic_data.builders.pipeline import build as run_build

    names = list(dict.fromkeys(_split_names(source)))  # a source named twice is built once
    if "all" in names:
        names = list(SOURCES)
    unknown = [name for name in names if name not in SOURCES]
    if unknown or not names:
        raise UserError(f"unknown source {', '.join(unknown) or '(none)'}; choose from {', '.join(SOURCES)} or all")
    try:
        options = BuildOptions(
            out=out,
            sources=tuple(names),
            inputs=_resolve_inputs(names, input),
            image_root=image_root,
            revision=revision,
            seed=seed,
            margin=margin,
            pairs_per_prompt=pairs_per_prompt,
            aspects=tuple(_split_names(aspects)),
            keep_ties=keep_ties,
            prompt_style=prompt_style,
            balance_length=balance_length,
            test_size=test_size,
            max_shard_bytes=_parse_size(max_shard_size),
            max_image_pixels=max_image_pixels,
            image_check=image_check,
            format=format,
            overwrite=overwrite,
        )
    except ValueError as error:
        raise UserError(str(error)) from None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    # Off when stderr is not a terminal: there the bar only leaves a blank line before an error.
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        manifest = run_build(options, num_proc=num_proc, progress=progress, argv=["critic-data", *sys.argv[1:]])
    _print_build_summary(manifest, out)


def _print_build_summary(manifest: dict, out: Path) -> None:
    table = Table(title=f"built {out}")
    table.caption = "rows: read = used + rejected; pairs: formed = kept + filtered + duplicates"
    for column in ("source", "read", "used", "rejected", "formed", "filtered", "duplicates", "kept"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for name, stats in manifest["sources"].items():
        c = stats["counts"]
        table.add_row(name, *(str(v) for v in (c["rows_read"], c["rows_used"], c["rows_rejected"], c["pairs_formed"],
                                                sum(c["pairs_filtered"].values()), c["duplicates_dropped"], c["pairs_kept"])))
    console.print(table)
    splits = ", ".join(f"{name} {split['rows']}" for name, split in manifest["splits"].items())
    console.print(f"splits: {splits}; {manifest['timings']['total_seconds']:.1f}s; rejects in {out / 'rejects.jsonl'}")
    # (a build that keeps no row at all is an error, so one split here has rows)
    advice = {"train": "lower --test-size to leave rows for training",
              "test": "raise --test-size for a test split, or check the rejects"}
    for name, split in manifest["splits"].items():
        if not split["rows"] and (name != "test" or manifest["options"]["test_size"] > 0):
            console.print(f"[yellow]warning:[/yellow] the {name} split is empty and was not written; {advice[name]}")


# Kept in step with critic_data.hub (ATTEMPTS, RETRY_WINDOW, DEFAULT_TIMEOUT); a test checks the first two.
PUSH_TIMEOUT_HELP = ("Seconds each request waits for the Hub (to connect, or for the next bytes of an answer). A request "
                     "that times out is not sent again, so a Hub that never answers ends the push within two timeouts. "
                     "Connection errors, 408, 429 and 5xx are retried: at most 4 tries per Hub call, none later than "
                     "60 s after its first.")


@app.command()
def push(
    folder: Annotated[Path, typer.Argument(help="A dataset folder made by `critic-data build`, or a trained checkpoint folder.")],
    repo_id: Annotated[str, typer.Option(help="Hub repo to publish to: OWNER/NAME (created if missing).")],
    private: Annotated[bool, typer.Option(help="Create the repo private (has no effect on an existing repo).")] = False,
    revision: Annotated[str | None, typer.Option(help="Branch to push to (default main); a new branch is created from main.")] = None,
    create_pr: Annotated[bool, typer.Option(help="Open a pull request instead of committing to the branch.")] = False,
    commit_message: Annotated[str | None, typer.Option(help="Commit title (default: what is pushed, with row counts).")] = None,
    force: Annotated[bool, typer.Option(help="Replace a revision that already holds a different dataset or checkpoint.")] = False,
    include_rejects: Annotated[bool, typer.Option(help="Also upload rejects.jsonl (datasets).")] = False,
    dry_run: Annotated[bool, typer.Option(help="List what would be uploaded and where; contact nothing.")] = False,
    timeout: Annotated[float, typer.Option(help=PUSH_TIMEOUT_HELP)] = 60.0,
) -> None:
    """Publish a dataset or a checkpoint folder to the Hugging Face Hub in one commit."""
    from critic_data.hub import MAX_TIMEOUT, plan_push, push as run_push

    if not 0 < timeout <= MAX_TIMEOUT:  # also refuses nan
        raise UserError(f"--timeout {timeout:g} is not a number of seconds from 0 to {MAX_TIMEOUT:g}; pass e.g. --timeout 60")
    plan = plan_push(folder, repo_id, revision, include_rejects=include_rejects)
    table = Table(title=f"{plan.kind.name} {folder} -> {plan.url} @ {plan.revision}{' (pull request)' if create_pr else ''}")
    table.add_column("path in repo")
    table.add_column("bytes", justify="right")
    for path in sorted(plan.files):
        table.add_row(path + (" (rendered for this repo)" if isinstance(plan.files[path], bytes) else ""), f"{plan.size(path):,}")
    table.caption = f"not uploaded: {', '.join(plan.left_out)}" if plan.left_out else None
    console.print(table)
    if dry_run:
        console.print(f"dry run: would push {len(plan.files)} files ({plan.summary}) in one commit; nothing was sent")
        return
    outcome = run_push(plan, private=private, create_pr=create_pr, commit_message=commit_message, force=force,
                       timeout=timeout)
    if outcome.unchanged:
        console.print(f"nothing to do: {plan.url} @ {plan.revision} already holds this {plan.kind.name}")
        return
    if outcome.deleted:
        console.print(f"replaced: removed {len(outcome.deleted)} file(s) the folder no longer has ({', '.join(outcome.deleted[:3])}{', ...' if len(outcome.deleted) > 3 else ''})")
    console.print(f"pushed {plan.summary} to {plan.url} @ {plan.revision}{' (new branch)' if outcome.created_branch else ''}: "
                  f"{outcome.pr_url or outcome.commit_url}", highlight=False, soft_wrap=True)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    recipe: Annotated[str, typer.Option(help="critic-r1, critic-r1-plus, or the path of a recipe .yaml file.")],
) -> None:
    """Train a critic with TRL GRPO. Any recipe field can be overridden with TRL's flag names
    (--model_name_or_path, --dataset_name, --learning_rate, --max_steps, --use_vllm, --output_dir, ...);
    `-h` after --recipe lists them all."""
    from critic_data.rl.train import train as run_train

    run_train(recipe, list(ctx.args))


@app.command("inspect")
def inspect_(
    path: Annotated[str, typer.Argument(help="A dataset folder from `critic-data build` (or its Hub id), an eval run folder (results.jsonl) or a best-of-n run folder (picks.jsonl).")],
    against: Annotated[str | None, typer.Option(help="A second dataset (folder or Hub id): the same figures side by side.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")] = False,
    plots: Annotated[Path | None, typer.Option(help="Write PNG charts into this folder.")] = None,
    processor: Annotated[Path | None, typer.Option(help="A local model folder: count each row's prompt tokens with its processor, as the trainer does (needs the rl extra: torch, transformers).")] = None,
    max_prompt_length: Annotated[int | None, typer.Option(help="With --processor: the prompt budget whose drops to count (default 6142, the recipes').", show_default=False)] = None,
) -> None:
    """See what a dataset teaches (labels, margins, length bias, images, rejects) or where a critic fails (eval, best-of-n)."""
    from critic_data.inspection import inspect as run_inspect

    run_inspect(path, against=against, as_json=json_, plots=plots, processor=processor, max_prompt_length=max_prompt_length)


@app.command()
def env() -> None:
    """Print the versions that matter for a bug report (python, torch + CUDA, transformers, trl, vllm, ...)."""
    from critic_data.env import environment

    for name, value in environment().items():
        typer.echo(f"{name + ':':<17} {value}")


@app.command("eval")
def eval_(
    base_url: Annotated[str, typer.Option(help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (`vllm serve`). Key: $OPENAI_API_KEY.")],
    model: Annotated[str, typer.Option(help="Model name as the server knows it (vllm: the served name; transformers serve: the folder).")],
    benchmark: Annotated[str, typer.Option(help="built (a critic-data dataset), vl-rewardbench or mm-rlhf.")],
    input: Annotated[str, typer.Option("--input", help="built: dataset folder or Hub id; vl-rewardbench / mm-rlhf: local snapshot folder.")],
    out: Annotated[Path, typer.Option(help="Folder for results.jsonl and summary.json.")],
    split: Annotated[str, typer.Option(help="Split to read (built, vl-rewardbench).")] = "test",
    limit: Annotated[int | None, typer.Option(help="Judge only the first N items.")] = None,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once.")] = 8,
    max_tokens: Annotated[int | None, typer.Option(help="Completion budget per judgement. Default 2048; with --protocol paper the official scripts' defaults: 4096 on vl-rewardbench, 2048 on mm-rlhf.", show_default=False)] = None,
    temperature: Annotated[float, typer.Option(help="0 = greedy, as the papers evaluate.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Fixes each item's presented answer order (and the server's sampling seed).")] = 0,
    both_orders: Annotated[bool, typer.Option(help="Judge every item in both orders and report position consistency.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue a run in --out with the same options: items already in results.jsonl are skipped (--concurrency, --timeout, --limit may change).")] = False,
    timeout: Annotated[float, typer.Option(help=TIMEOUT_HELP)] = DEFAULT_TIMEOUT,
    protocol: Annotated[str, typer.Option(help="critic-data: the template the critic was trained on. paper: LLaVA-Critic-R1's official critic-eval scripts (system turn, their prompt, pixel bounds, 28-px skip, video frames, max tokens); vl-rewardbench and mm-rlhf only.")] = "critic-data",
    thinking: Annotated[bool | None, typer.Option("--thinking/--no-thinking", help="--protocol paper: append the official think/boxed instruction to the prompt, as the scripts' --is-thinking does. Default on: the official run script passes --is-thinking to every evaluation it runs (eval_llama32v/evaluation_llama32v.sh:17).", show_default=False)] = None,
) -> None:
    """Measure how well a critic judges: accuracy on labelled pairs through an OpenAI-compatible server."""
    from critic_data.rl.evaluate import EvalOptions, run_eval, summary_table

    options = EvalOptions(base_url=base_url, model=model, benchmark=benchmark, input=input, out=out, split=split,
                          limit=limit, concurrency=concurrency, max_tokens=max_tokens, temperature=temperature,
                          seed=seed, both_orders=both_orders, resume=resume, timeout=timeout, protocol=protocol,
                          thinking=thinking)
    summary = _run_with_progress(run_eval, options, out / "results.jsonl")
    console.print(summary_table(summary))
    console.print(f"results in {out / 'results.jsonl'}, summary in {out / 'summary.json'}")
    _fail_if_incomplete(summary, "requests")


@app.command("best-of-n")
def best_of_n(
    base_url: Annotated[str, typer.Option(help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (`vllm serve`). Key: $OPENAI_API_KEY.")],
    model: Annotated[str, typer.Option(help="Model name as the server knows it; it answers and judges.")],
    input: Annotated[Path, typer.Option("--input", help="questions.jsonl: id, image (relative to the file), question, optional answer.")],
    n: Annotated[int, typer.Option("--n", help="Candidates sampled per question: at least 2, and samples + judgements at most 4096 per question (round-robin: --n 64 or less).")],
    out: Annotated[Path, typer.Option(help="Folder for picks.jsonl and summary.json.")],
    strategy: Annotated[str, typer.Option(help="knockout (N-1 matches) or round-robin (N(N-1) ordered matches).")] = "knockout",
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once.")] = 8,
    max_tokens: Annotated[int, typer.Option(help="Completion budget per candidate and per judgement.")] = 2048,
    temperature: Annotated[float, typer.Option(help="Sampling temperature for candidates (judgements are greedy). Default 1.0 with --top-p 0.99: the official training rollout's sampling (si0wang/LLaVA-Critic-R1@6fd42d1 EasyR1/examples/config.yaml:56-57); the papers do not publish their Best-of-N sampling settings.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Fixes sampling seeds, presented orders and coin flips.")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue a run in --out with the same options: questions already in picks.jsonl are skipped (--concurrency, --timeout may change).")] = False,
    timeout: Annotated[float, typer.Option(help=TIMEOUT_HELP)] = DEFAULT_TIMEOUT,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling for candidates; default 0.99, sourced as --temperature.")] = 0.99,
    judge_sees_thinking: Annotated[bool, typer.Option("--judge-sees-thinking", help="Show the judge each candidate whole; by default its <think>...</think> part is left out (two 2k-token candidates and a large image overflow an 8k context).")] = False,
    max_model_len: Annotated[int | None, typer.Option(help="The server's context length: a match whose prompt could overflow it (UTF-8 bytes of the text + one token per 28x28 image pixels + 64, plus --max-tokens) is not sent but counted and decided by a seeded coin.", show_default=False)] = None,
) -> None:
    """Self-critic Best-of-N: sample N answers, let the same model judge them pairwise, keep the winner."""
    from critic_data.rl.best_of_n import BestOfNOptions, run_best_of_n, summary_table

    options = BestOfNOptions(base_url=base_url, model=model, input=input, n=n, out=out, strategy=strategy,
                             concurrency=concurrency, max_tokens=max_tokens, temperature=temperature, seed=seed,
                             resume=resume, timeout=timeout, top_p=top_p, judge_sees_thinking=judge_sees_thinking,
                             max_model_len=max_model_len)
    summary = _run_with_progress(run_best_of_n, options, out / "picks.jsonl")
    console.print(summary_table(summary))
    console.print(f"picks in {out / 'picks.jsonl'}, summary in {out / 'summary.json'}")
    _fail_if_incomplete(summary, "questions")


def _fail_if_incomplete(summary: dict, what: str) -> None:
    """A run the server refused in part is not a success: say so, and exit 1 (the results
    written so far stay; --resume asks again for just the missing ones)."""
    if summary["failed"]:
        failed = summary["failed"]
        console.print(f"[red]error:[/red] {failed} {what if failed > 1 else what[:-1]} failed, left out of the results "
                      f"(first: {summary['first_failure']}); fix the cause and rerun with --resume",
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

    try:
        _check_hf_endpoint()
        result = app(prog_name="critic-data", standalone_mode=False)
    except UserError as error:
        console.print(f"[red]error:[/red] {_one_line(str(error))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except TyperException as error:  # typer's usage errors: a missing or unknown option, a value of the wrong type
        context = getattr(error, "ctx", None)
        command = context.command_path if context else "critic-data"
        console.print(f"[red]error:[/red] {_one_line(error.format_message())} (`{command} --help` lists the options)",
                      highlight=False, soft_wrap=True)
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
