"""`critic-data eval`: how well a critic judges, measured against labelled pairs.

This module owns reading the three benchmarks into one item shape, putting each item to the
critic, scoring the verdicts, and the summary the papers report:
- `built`: a critic-data dataset (local folder or Hub id); its `answer` is the label.
- `vl-rewardbench`: a local `MMInstruction/VL-RewardBench` snapshot; `human_ranking` gives
  the label; accuracy overall and `macro` accuracy over general / hallucination / reasoning.
- `mm-rlhf`: a local `yifanzhang114/MM-RLHF-RewardBench` snapshot (jsonl + images/); `chosen`
  is the label; `acc` over pairs and `acc_plus` over ids (an id counts when all its pairs do).

Every item is rendered with the critic prompt and its think/boxed instruction
(`render_critic_prompt`, from question + responses, never trusting a stored order), sent with
its image(s) as data URLs, and the verdict is read with `parse_verdict`, the rule
`preference_reward` uses. The presented order is a coin fixed by (seed, item id); with
`--both-orders` each item is judged in both orders and position consistency is reported.
Results are appended to `OUT/results.jsonl` as they arrive; `--resume` skips what is there,
and refuses a run whose options would give other results (`EvalOptions.identity`).
A row that cannot be an item (not UTF-8, a field of the wrong type, no usable label or image)
is skipped and counted under its reason; an item whose image cannot be decoded, or whose
answer is not a chat completion, fails alone (`RequestFailed`).

Run it on one machine against `vllm serve CHECKPOINT` (or any OpenAI-compatible server):
    critic-data eval --base-url http://127.0.0.1:8000/v1 --model CHECKPOINT \
        --benchmark vl-rewardbench --input VL-RewardBench/ --out runs/vlrb
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from critic_data import UserError
from critic_data.rl.client import (DEFAULT_TIMEOUT, ChatClient, RequestFailed, ResultLog, data_url, derive_seed,
                                   is_text, run_bounded)
from critic_data.rl.prompts import DEFAULT_TEMPLATE, TEMPLATES, render_critic_prompt
from critic_data.rl.rewards import parse_verdict

BENCHMARKS = ("built", "vl-rewardbench", "mm-rlhf")
MMRLHF_FILE = "mm_reward_bench.jsonl"

# VL-RewardBench's three task groups, keyed by its `query_source` values (the dataset card lists
# WildVision, POVID, RLAIF-V, RLHF-V, MMMU-Pro, MathVerse; the paper adds VLFeedback to the
# general group). Matching is on the lower-cased name with punctuation removed, by prefix, so
# "wildvision-battle" and "RLAIF-V" both resolve. When `query_source` names none of them the id's
# prefix is tried, as lmms-eval's VL-RewardBench task does ("mathverse_...", "RLAIF-V-...").
VLRB_CATEGORIES = {
    "wildvision": "general",
    "vlfeedback": "general",
    "povid": "hallucination",
    "rlaifv": "hallucination",
    "rlhfv": "hallucination",
    "hallucination": "hallucination",
    "mmmu": "reasoning",
    "mathverse": "reasoning",
}
VLRB_GROUPS = ("general", "hallucination", "reasoning")


def vlrb_category(query_source: str | None, item_id: str = "") -> str:
    """general, hallucination or reasoning for a VL-RewardBench row; "other" when neither field says."""
    for text in (query_source or "", item_id):
        key = re.sub(r"[^a-z0-9]", "", text.lower())
        for prefix, category in VLRB_CATEGORIES.items():
            if key.startswith(prefix):
                return category
    return "other"


@dataclass
class EvalOptions:
    """Everything `critic-data eval` needs; checked on creation."""

    base_url: str
    model: str
    benchmark: str
    input: str
    out: Path
    split: str = "test"
    limit: int | None = None
    concurrency: int = 8
    max_tokens: int = 2048
    temperature: float = 0.0  # greedy, as the papers evaluate critics
    seed: int = 0
    both_orders: bool = False
    resume: bool = False
    timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        if self.benchmark not in BENCHMARKS:
            raise UserError(f"--benchmark {self.benchmark!r} is not known; choose from {', '.join(BENCHMARKS)}")
        for name in ("concurrency", "max_tokens") + (("limit",) if self.limit is not None else ()):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise UserError("--temperature must be a number, 0 or more")
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise UserError("--timeout must be a number of seconds above 0")
        self.out = Path(self.out)

    def identity(self) -> dict:
        """The options a result depends on; a resume must repeat them (concurrency, timeout, limit
        and the server's address may change: they decide how fast and how many, not what)."""
        source = Path(self.input)
        return {"benchmark": self.benchmark, "input": str(source.resolve()) if source.exists() else self.input,
                "split": self.split, "model": self.model, "seed": self.seed, "both_orders": self.both_orders,
                "temperature": self.temperature, "max_tokens": self.max_tokens}


@dataclass
class Item:
    """One labelled pair: `responses` in the source's order, `label` names the better one ("1"/"2"/"tie")."""

    id: str
    images: list[bytes]
    question: str
    responses: tuple[str, str]
    label: str
    template: str = DEFAULT_TEMPLATE
    extra: dict = field(default_factory=dict)  # written to results.jsonl: category, group, source


# --- reading the benchmarks -------------------------------------------------------------------

def _image_bytes(value, root: Path | None = None) -> bytes | None:
    """Bytes of a Hub Image struct ({bytes, path}); a bare path is read relative to `root` (regular files only)."""
    if isinstance(value, dict):
        if isinstance(value.get("bytes"), bytes) and value["bytes"]:
            return value["bytes"]
        value = value.get("path")
    if isinstance(value, str) and value and root is not None:
        path = root / value
        try:
            return path.read_bytes() if path.is_file() else None
        except OSError:
            return None
    return None


def _parquet_rows(folder: Path, split: str, columns: list[str]) -> tuple[int, Iterator[dict]]:
    """Rows of `folder/data/<split>-*.parquet`, read one record batch at a time; a damaged file is one line."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted((folder / "data").glob(f"{split}-*.parquet"))
    if not files:
        raise UserError(f"{folder} holds no data/{split}-*.parquet; pass the snapshot folder (and --split if needed)")

    def damaged(f: Path, error: Exception) -> UserError:
        return UserError(f"{f} cannot be read ({type(error).__name__}: {' '.join(str(error).split())[:200]}); "
                         "download the benchmark again")

    total = 0
    for f in files:
        try:
            total += pq.ParquetFile(f).metadata.num_rows
        except (OSError, pa.ArrowException) as error:
            raise damaged(f, error) from None

    def rows():
        for f in files:
            try:
                parquet = pq.ParquetFile(f)
                present = [c for c in columns if c in parquet.schema_arrow.names]
                for batch in parquet.iter_batches(batch_size=64, columns=present):
                    yield from batch.to_pylist()
            except (OSError, pa.ArrowException) as error:
                raise damaged(f, error) from None

    return total, rows()


def _built_rows(source: str, split: str) -> tuple[int, Iterator[dict]]:
    columns = ["id", "source", "images", "question", "response_1", "response_2", "answer", "template"]
    folder = Path(source)
    if folder.is_dir():
        return _parquet_rows(folder, split, columns)
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", source):
        raise UserError(f"--input {source}: no such folder, and not a Hub dataset id (OWNER/NAME)")
    import datasets

    try:
        dataset = datasets.load_dataset(source, split=split)
    except Exception as error:  # the Hub client raises many types (offline, not found, bad split)
        raise UserError(f"could not load {source} (split {split}) from the Hub: {type(error).__name__}: "
                        f"{' '.join(str(error).split())[:200]}; pass a local dataset folder instead") from None
    # Arrow format keeps Image columns as their {bytes, path} structs: no decoding, no re-encoding.
    batches = dataset.with_format("arrow").iter(batch_size=64)
    return len(dataset), (row for batch in batches for row in batch.to_pylist())


def _built_items(source: str, split: str, skipped: Counter) -> tuple[int, Iterator[Item]]:
    from critic_data.schemas import ANSWERS

    total, rows = _built_rows(source, split)

    def items():
        for row in rows:
            if "response_2" not in row:  # the column, not a value: every row would be skipped
                raise UserError(f"{source} has no response_1/response_2 columns (built with --format easyr1?); "
                                "eval reads datasets built with --format trl, the default")
            texts = [row.get(name) for name in ("question", "response_1", "response_2")]
            if not (is_text(row.get("id")) and all(map(is_text, texts)) and isinstance(row.get("images"), list)
                    and row.get("answer") in ANSWERS):
                skipped["row_malformed"] += 1
                continue
            images = [_image_bytes(image) for image in row["images"]]
            template = row.get("template") or DEFAULT_TEMPLATE
            if not isinstance(template, str) or template not in TEMPLATES:
                raise UserError(f"row {row['id']} uses critic template {template!r}, unknown to this version; "
                                f"known: {', '.join(TEMPLATES)}")
            if not images or None in images:
                skipped["image_missing"] += 1
                continue
            yield Item(id=row["id"], images=images, question=texts[0], responses=(texts[1], texts[2]),
                       label=row["answer"], template=template, extra={"source": row.get("source")})

    return total, items()


def _vlrb_items(folder: Path, split: str, skipped: Counter) -> tuple[int, Iterator[Item]]:
    columns = ["id", "query", "response", "image", "human_ranking", "query_source"]
    total, rows = _parquet_rows(folder, split, columns)
    # human_ranking is a rank per response: [0, 1] = the first is preferred, [1, 0] = the second.
    labels = {(0, 1): "1", (1, 0): "2"}

    def items():
        for row in rows:
            responses = row.get("response") or []
            ranking = row.get("human_ranking")
            label = labels.get(tuple(ranking)) if isinstance(ranking, list) and all(isinstance(r, int) for r in ranking) else None
            image = _image_bytes(row.get("image"), folder)
            if not (is_text(row.get("query")) and row.get("id") is not None):
                skipped["row_malformed"] += 1
            elif len(responses) != 2 or not all(is_text(r) for r in responses):
                skipped["responses_malformed"] += 1
            elif label is None:
                skipped["ranking_unusable"] += 1
            elif image is None:
                skipped["image_missing"] += 1
            else:
                yield Item(id=str(row["id"]), images=[image], question=row["query"], responses=tuple(responses),
                           label=label, extra={"category": vlrb_category(row.get("query_source"), str(row["id"])),
                                               "query_source": row.get("query_source")})

    return total, items()


def _mmrlhf_items(folder: Path, skipped: Counter) -> tuple[int, Iterator[Item]]:
    path = folder / MMRLHF_FILE
    if not path.is_file():
        raise UserError(f"{folder} holds no {MMRLHF_FILE}; pass a local yifanzhang114/MM-RLHF-RewardBench snapshot")
    with path.open("rb") as handle:
        total = sum(1 for line in handle if line.strip())

    def items():
        seen: Counter = Counter()  # several rows share an id: item ids become "<id>#<k>"
        with path.open("rb") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line.decode("utf-8-sig"))  # -sig: a byte-order mark is read, not rejected
                    group, prompt, chosen, rejected = row["id"], row["prompt"], row["chosen"], row["rejected"]
                except UnicodeDecodeError:
                    skipped["not_utf8"] += 1
                    continue
                except (ValueError, RecursionError, KeyError, TypeError):  # not JSON, too deep, not an object
                    skipped["row_malformed"] += 1
                    continue
                texts = (prompt, chosen, rejected)
                if isinstance(group, int) and not isinstance(group, bool):
                    group = str(group)
                if any(isinstance(t, str) and not is_text(t) for t in (group, *texts)):
                    skipped["not_utf8"] += 1  # a lone surrogate, escaped in the JSON
                    continue
                if not all(isinstance(t, str) for t in (group, *texts)):
                    skipped["row_malformed"] += 1
                    continue
                k = seen[group]
                seen[group] += 1
                if row.get("video") and not row.get("image"):
                    skipped["video"] += 1  # the critic is judged on images only
                    continue
                image = row.get("image")
                image = _image_bytes(image, folder) or _image_bytes(image, folder / "images")
                if image is None:
                    skipped["image_missing"] += 1
                    continue
                yield Item(id=f"{group}#{k}", images=[image], question=prompt, responses=(chosen, rejected),
                           label="1", extra={"group": group})

    return total, items()


def load_items(options: EvalOptions, skipped: Counter) -> tuple[int, Iterator[Item]]:
    """(upper bound on the item count, the items read lazily); unusable rows are counted in `skipped`."""
    if options.benchmark == "built":
        total, items = _built_items(options.input, options.split, skipped)
    else:
        folder = Path(options.input)
        if not folder.is_dir():
            repo = "MMInstruction/VL-RewardBench" if options.benchmark == "vl-rewardbench" else "yifanzhang114/MM-RLHF-RewardBench"
            raise UserError(f"--input {folder} is not a folder; download the benchmark with "
                            f"`hf download {repo} --repo-type dataset --local-dir {folder}`")
        if options.benchmark == "vl-rewardbench":
            total, items = _vlrb_items(folder, options.split, skipped)
        else:
            total, items = _mmrlhf_items(folder, skipped)
    if options.limit is not None:
        return min(total, options.limit), itertools.islice(items, options.limit)
    return total, items


# --- judging and scoring ----------------------------------------------------------------------

def presentations(item: Item, seed: int, both_orders: bool) -> list[tuple[int, int]]:
    """Which source response goes in position 1 and 2: (1, 2) or (2, 1); a seeded coin per item."""
    if both_orders:
        return [(1, 2), (2, 1)]
    return [(1, 2) if derive_seed(seed, "order", item.id) % 2 == 0 else (2, 1)]


def expected_verdict(label: str, presented: tuple[int, int]) -> str:
    """The label in presented terms: the position that holds the better response."""
    if label not in ("1", "2"):
        return label  # "tie" reads the same in either order
    return str(presented.index(int(label)) + 1)


def _picked(record: dict) -> int | str | None:
    """The source response the verdict names (1 or 2), "tie", or None when unparsed."""
    verdict = record["verdict"]
    return record["presented"][int(verdict) - 1] if verdict in ("1", "2") else verdict


def _is_result(record: dict, benchmark: str) -> bool:
    """A line of results.jsonl that this version can score (a resume sets any other line aside)."""
    return (isinstance(record.get("id"), str) and record.get("presented") in ([1, 2], [2, 1])
            and isinstance(record.get("correct"), bool) and all(k in record for k in ("label", "expected", "verdict"))
            and (benchmark != "mm-rlhf" or isinstance(record.get("group"), str)))


def _accuracy(records: list[dict]) -> float | None:
    return sum(r["correct"] for r in records) / len(records) if records else None


def score(records: list[dict], benchmark: str) -> dict:
    """The metrics of a set of results (one record per judgement), as the papers report them.

    Unparsed verdicts count as wrong; `unparsed_rate` says how many there were.
    """
    by_item: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_item[record["id"]].append(record)
    metrics: dict = {
        "n": len(records),
        "items": len(by_item),
        "accuracy": _accuracy(records),
        "unparsed_rate": sum(r["verdict"] is None for r in records) / len(records) if records else None,
    }
    twice = [pair for pair in by_item.values() if len(pair) == 2]
    if twice:
        # Consistent: both orders name the same source response (an unparsed verdict never is).
        metrics["position_consistency"] = sum(
            _picked(a) is not None and _picked(a) == _picked(b) for a, b in twice) / len(twice)
        metrics["both_orders_correct"] = sum(a["correct"] and b["correct"] for a, b in twice) / len(twice)
    if benchmark == "vl-rewardbench":
        groups: dict[str, list[dict]] = defaultdict(list)
        for record in records:
            groups[record.get("category", "other")].append(record)
        metrics["categories"] = {name: {"n": len(rs), "accuracy": _accuracy(rs)} for name, rs in sorted(groups.items())}
        present = [_accuracy(groups[name]) for name in VLRB_GROUPS if groups.get(name)]
        metrics["macro_accuracy"] = sum(present) / len(present) if present else None
    if benchmark == "mm-rlhf":
        groups = defaultdict(list)
        for record in records:
            groups[record["group"]].append(record)
        metrics["acc"] = metrics["accuracy"]
        metrics["acc_plus"] = sum(all(r["correct"] for r in rs) for rs in groups.values()) / len(groups) if groups else None
        metrics["ids"] = len(groups)
    return metrics


def run_eval(options: EvalOptions, progress=None) -> dict:
    """Judge every item (resuming a previous run when asked), write results and summary; return the summary."""
    return asyncio.run(_run(options, progress))


async def _run(options: EvalOptions, progress) -> dict:
    started = time.monotonic()
    skipped: Counter = Counter()
    total, items = load_items(options, skipped)
    log = ResultLog(options.out / "results.jsonl", resume=options.resume, identity=options.identity(),
                    valid=lambda record: _is_result(record, options.benchmark))
    if log.set_aside and progress is not None:
        progress.console.print(f"note: {log.note()}", highlight=False, soft_wrap=True)
    done = {(r["id"], tuple(r["presented"])) for r in log.records}
    failures: list[str] = []
    per_item = 2 if options.both_orders else 1
    task = progress.add_task("eval", total=total * per_item, completed=len(done)) if progress else None

    def describe() -> None:
        if progress is not None:
            accuracy = _accuracy(log.records)
            shown = "-" if accuracy is None else f"{accuracy:.3f}"
            progress.update(task, description=f"eval  acc {shown}  failed {len(failures)}")

    def jobs():
        for item in items:
            for presented in presentations(item, options.seed, options.both_orders):
                if (item.id, presented) not in done:
                    yield item, presented

    async with ChatClient(options.base_url, options.model, options.concurrency, options.max_tokens,
                          options.timeout) as client:
        await client.check()

        async def judge(job) -> str:
            item, presented = job
            first, second = (item.responses[i - 1] for i in presented)
            text = render_critic_prompt(item.template, item.question, first, second)
            completions = await client.chat([data_url(image) for image in item.images], text,
                                            temperature=options.temperature, seed=options.seed)
            return completions[0]

        def on_done(job, completion: str | None, failure: RequestFailed | None) -> None:
            item, presented = job
            if failure is not None:
                failures.append(f"{item.id}: {failure}")
            else:
                verdict = parse_verdict(completion)
                expected = expected_verdict(item.label, presented)
                log.append({"id": item.id, "label": item.label, "presented": list(presented), "expected": expected,
                            "verdict": verdict, "correct": verdict == expected, **item.extra,
                            "completion": completion})
            if progress is not None:
                progress.advance(task)
                describe()

        describe()
        try:
            await run_bounded(jobs(), judge, window=2 * options.concurrency, on_done=on_done)
        finally:
            log.close()

    if failures and not log.records:
        raise UserError(f"every request failed ({len(failures)}); first: {failures[0]}")
    summary = {
        "benchmark": options.benchmark,
        "model": options.model,
        **score(log.records, options.benchmark),
        "failed": len(failures),
        "first_failure": failures[0] if failures else None,
        "skipped": dict(skipped),
        "set_aside": log.set_aside,
        "seconds": round(time.monotonic() - started, 1),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
    }
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def summary_table(summary: dict):
    """A short rich table of the headline metrics."""
    from rich.table import Table

    def pct(value) -> str:
        return "-" if value is None else f"{100 * value:.1f}"

    table = Table(title=f"{summary['benchmark']}: {summary['model']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("judgements", str(summary["n"]))
    table.add_row("accuracy %", pct(summary["accuracy"]))
    for name, group in summary.get("categories", {}).items():
        table.add_row(f"  {name} % (n={group['n']})", pct(group["accuracy"]))
    if "macro_accuracy" in summary:
        table.add_row("macro accuracy %", pct(summary["macro_accuracy"]))
    if "acc_plus" in summary:
        table.add_row("acc+ %", pct(summary["acc_plus"]))
    if "position_consistency" in summary:
        table.add_row("position consistency %", pct(summary["position_consistency"]))
    table.add_row("unparsed %", pct(summary["unparsed_rate"]))
    if summary["failed"]:
        table.add_row("failed requests", str(summary["failed"]))
    if summary["skipped"]:
        table.add_row("skipped rows", ", ".join(f"{k} {v}" for k, v in summary["skipped"].items()))
    return table
