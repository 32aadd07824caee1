"""`critic-data difficulty`: how often the model about to be trained already judges each row right.

GRPO samples a group of K completions per row and normalises each reward by its group: a row the
model always judges right, or always wrong, gives every completion the same preference reward, so
zero advantage and no gradient, at full rollout cost. This module measures each row's pass rate as
the trainer will see it, so that a build can keep the rows in a band (`build --difficulty RUN
--pass-rate LOW:HIGH`):
- the rows are read as `critic-data eval --benchmark built` reads them (its own reader, `load_items`),
  and each is shown exactly as the trainer shows it: its images fitted to the recipe's pixel bounds
  (Qwen's `smart_resize`, as `train` fits them) before its prompt text, which is the row's critic
  prompt (`render_critic_prompt` of its template: the rule the build wrote its `prompt` column with);
- K completions (`--samples`, default the recipe's num_generations) with the recipe's rollout sampling
  (temperature, top_p, max_completion_length; each overridable), asked for with `n` = K in one
  request; a server that answers fewer choices (one that ignores `n`) gets the rest as single requests,
  each with its own derived seed, and the summary counts those rows (`rows_sampled_one_by_one`);
- each completion graded by the recipe's own reward functions (`reward_function` of its reward_funcs,
  called as TRL calls them: conversational completions, the row's columns as keyword arguments); a
  sample passes when the preference reward pays 1.
A row's record is a `rl/records.py` `DifficultyRow`, appended to `OUT/difficulty.jsonl` as it
completes; `read_difficulty` reads a run back. The client is eval's (`rl/client.py`: bounded requests,
one retry layer, failed rows counted and left out, `--resume`, a lock on OUT). run.json holds the
options a record depends on and the dataset's fingerprint (`dataset_fingerprint`), so a resume on
another build is refused; summary.json the figures of `rl/metrics.py` `difficulty_summary`.

    critic-data difficulty out/my-dataset --base-url http://127.0.0.1:8000/v1 \
        --model Qwen/Qwen2.5-VL-7B-Instruct --out runs/difficulty
"""

from __future__ import annotations

import asyncio
import glob
from collections import Counter
from pathlib import Path

import xxhash

from critic_data import UserError
from critic_data.hub_client import check_hub_repo, is_repo_id
from critic_data.manifest import dataset_identity, read_manifest
from critic_data.rl import metrics
from critic_data.rl.client import ChatClient, RunSpec, data_url, derive_seed, percent, run_jobs, write_summary
from critic_data.rl.evaluate import EvalOptions, Item, load_items
from critic_data.rl.options import DifficultyOptions
from critic_data.rl.records import DIFFICULTY_LOG, DifficultyRow, row_digest
from critic_data.rl.rewards import reward_function
from critic_data.schemas.prompts import render_critic_prompt


def file_xxh3_128(path: Path) -> str:
    """The xxh3_128 hex digest of a file: the digest build.json records for each shard."""
    hasher = xxhash.xxh3_128()
    with path.open("rb") as handle:
        while block := handle.read(8 << 20):
            hasher.update(block)
    return hasher.hexdigest()


def dataset_fingerprint(dataset: str, split: str) -> dict:
    """What identifies the measured rows: for a folder, the xxh3_128 of each shard of the split (the files
    read, named as build.json names them: equal to its `splits.<split>.xxh3_128` for an untouched build)
    and, from its build.json, the identity of the build (`dataset_identity`: its options but curation and
    folders, its inputs' content), by which `build --difficulty` knows a rebuild of the same dataset; for a
    Hub dataset, its id and the commit the Hub serves now."""
    folder = Path(dataset)
    if folder.is_dir():
        # the shards eval's reader reads: data/<split>-*.parquet, the split a name, never a pattern
        files = sorted((folder / "data").glob(f"{glob.escape(split)}-*.parquet"))
        fingerprint = {"split": split, "shards": {f"data/{path.name}": file_xxh3_128(path) for path in files}}
        try:
            manifest = read_manifest(folder)
        except UserError:  # eval's reader has refused a folder without one already; an edited one names no build
            return fingerprint
        return {**fingerprint, "build": dataset_identity(manifest.options, manifest.inputs)}
    from huggingface_hub import HfApi

    check_hub_repo(dataset, dataset)
    try:
        revision = HfApi().dataset_info(dataset).sha
    except Exception as error:  # the Hub client raises many types (offline, not found, refused)
        raise UserError(f"could not ask the Hub which commit of {dataset} it serves ({type(error).__name__}); "
                        "pass a local dataset folder instead") from None
    return {"split": split, "hub_id": dataset, "revision": revision}


async def sample(client: ChatClient, images: list[str], prompt: str, options: DifficultyOptions,
                 row_id: str) -> tuple[list[str], int]:
    """--samples completions and the requests they took: one request asking for all of them, then single
    requests (each with its own derived seed) for those a server that ignores `n` did not send."""
    def ask(k: int, n: int = 1):
        return client.chat(images, prompt, temperature=options.temperature, top_p=options.top_p,
                           seed=derive_seed(options.seed, row_id, "sample", k), n=n)

    first = await ask(0, options.samples)
    rest = await asyncio.gather(*(ask(k) for k in range(len(first), options.samples)))
    return (first + [text for texts in rest for text in texts])[: options.samples], 1 + len(rest)


def grade(item: Item, texts: list[str], rewards: dict) -> dict[str, list[float]]:
    """Each reward function's value per completion, called as TRL's GRPO trainer calls it: completions as
    assistant messages, every text column of the row as a keyword argument (one value per completion)."""
    completions = [[{"role": "assistant", "content": text}] for text in texts]
    row = {"id": item.id, "source": item.extra.get("source"), "question": item.question,
           "response_1": item.responses[0], "response_2": item.responses[1], "answer": item.label,
           "template": item.template}
    columns = {name: [value] * len(texts) for name, value in row.items()}
    return {name: [float(value) for value in function(completions, **columns)] for name, function in rewards.items()}


async def measure(client: ChatClient, item: Item, options: DifficultyOptions, rewards: dict) -> DifficultyRow:
    """One row judged --samples times as the trainer would show it, graded by the recipe's rewards."""
    # most of the client's CPU (benchmarks/difficulty.py), in a thread: PIL lets other threads run meanwhile
    images = await asyncio.to_thread(lambda: [data_url(image, options.pixels) for image in item.images])
    prompt = render_critic_prompt(item.template, item.question, *item.responses)
    texts, requests = await sample(client, images, prompt, options, item.id)
    return DifficultyRow(item.id, item.extra.get("source"),
                         row_digest(item.images, item.template, item.question, *item.responses, item.label),
                         grade(item, texts, rewards), requests)


def run_difficulty(options: DifficultyOptions, progress=None) -> dict:
    """Measure every row of the split (resuming when asked); write the rows and the summary; return the summary."""
    return asyncio.run(_run(options, progress))


def _items(options: DifficultyOptions, skipped: Counter):
    """(upper bound on the rows, the rows as items): eval's reader of a built dataset, through its options."""
    if not Path(options.dataset).is_dir() and not is_repo_id(options.dataset):  # named as this command names it
        raise UserError(f"{options.dataset}: no such folder, and not a Hub dataset id (OWNER/NAME); pass a folder "
                        "made by `critic-data build`, or its Hub id")
    return load_items(EvalOptions(base_url=options.base_url, model=options.model, benchmark="built",
                                  input=options.dataset, out=options.out, split=options.split, limit=options.limit),
                      skipped)


def _running_mean_pass_rate():
    """The progress line's figure, the mean pass rate of the rows so far, added up as rows arrive: the
    run's list of rows only grows, and summing it whole at each of 40k rows would cost minutes."""
    seen = {"rows": 0, "sum": 0.0}

    def mean(rows: list[DifficultyRow]) -> float | None:
        seen["sum"] += sum(row.pass_rate for row in rows[seen["rows"]:])
        seen["rows"] = len(rows)
        return seen["sum"] / len(rows) if rows else None

    return mean


async def _run(options: DifficultyOptions, progress) -> dict:
    skipped: Counter = Counter()
    total, items = _items(options, skipped)
    options.fingerprint = dataset_fingerprint(options.dataset, options.split)
    rewards = {name: reward_function(name) for name, _ in options.rewards}  # an unknown one stops the run now
    resumed: list[int] = []

    def jobs(done: set):
        resumed.append(len(done))
        return (item for item in items if item.id not in done)

    def announce(done: set) -> str:
        return (f"difficulty: up to {total - len(done)} rows x {options.samples} samples (temperature "
                f"{options.temperature:g}, top_p {options.top_p:g}, max_tokens {options.max_tokens}, recipe "
                f"{options.recipe}), {options.samples} per request")

    spec = RunSpec(name="difficulty", unit="row", log_name=DIFFICULTY_LOG, read=DifficultyRow.from_json,
                   key=lambda row: row.id, jobs=jobs, total=total,
                   work=lambda client, item: measure(client, item, options, rewards), record=lambda _, row: row,
                   job_id=lambda item: item.id, accuracy=_running_mean_pass_rate(), window=2 * options.concurrency,
                   announce=announce)
    finished = await run_jobs(options, spec, progress)
    if not finished.records:  # a summary of nothing, exit 0, would read as a run that worked
        reasons = ", ".join(f"{count} {reason}" for reason, count in skipped.items())
        raise UserError(f"{options.dataset} has no row to measure in split {options.split} "
                        f"({f'rows skipped: {reasons}' if reasons else 'no rows'}); check DATASET and --split")
    measured = len(finished.records) - (resumed[0] if resumed else 0)
    figures = metrics.difficulty_summary(finished.records, options.samples, dict(options.rewards))
    return write_summary(options, finished, {
        "model": options.model, "recipe": options.recipe, "dataset": options.fingerprint,
        "rewards": [list(pair) for pair in options.rewards], "pixels": list(options.pixels), **figures,
        "judgements_per_second": round(measured * options.samples / finished.seconds, 1) if finished.seconds else None,
        "server_ignored_n": figures["rows_sampled_one_by_one"] > 0, "skipped": dict(skipped)})


def summary_table(summary: dict):
    """A short rich table of the headline figures."""
    from rich.table import Table

    samples = summary["samples"]
    table = Table(title=f"difficulty: {summary['model']} on {summary['rows']} rows x {samples} samples",
                  caption="zero advantage: a group of K whose preference rewards all agree (expected: mean of "
                          "p^K + (1-p)^K)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("mean pass rate %", percent(summary["mean_pass_rate"]))
    table.add_row("mean format rate %", percent(summary["mean_format_rate"]))
    zero = summary["zero_advantage"]
    table.add_row("zero advantage % observed / expected", f"{percent(zero['observed'])} / {percent(zero['expected'])}")
    table.add_row("rows per pass count", " ".join(f"{k}/{samples}:{n}" for k, n in enumerate(summary["histogram"])))
    for band in summary["bands"][:1]:
        table.add_row(f"band {band['band'][0]:g}:{band['band'][1]:g} keeps / saves",
                      f"{band['rows_kept']} rows / {percent(band['compute_saved'])}% of rollouts")
    table.add_row("judgements per second", str(summary["judgements_per_second"]))
    if summary["server_ignored_n"]:
        table.add_row("rows sampled one request at a time (the server ignored n)",
                      str(summary["rows_sampled_one_by_one"]))
    if summary["failed"]:
        table.add_row("failed rows", str(summary["failed"]))
    if summary["skipped"]:
        table.add_row("skipped rows", ", ".join(f"{k} {v}" for k, v in summary["skipped"].items()))
    return table
