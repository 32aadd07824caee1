"""The build steps every source shares, in order:

    reader -> image check -> dedup -> split -> presented order -> validate -> write

Every input row ends in exactly one place: used (it gave zero or more pairs) or rejected
with a reason. Pairs dropped by a rule are counted by rule. Split and order are keyed
hashes of (seed, row content), so the output never depends on worker count or shard size,
and the same inputs, options and seed give byte-identical data files.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import xxhash

from critic_data import UserError, __version__
from critic_data.builders import SOURCES, SourceReader, SourceSpec
from critic_data.builders.images import check_image
from critic_data.builders.options import BuildOptions
from critic_data.builders.records import Example, Pair
from critic_data.builders.snapshot import Snapshot, fetch_from_hub, hub_origin, local_snapshot
from critic_data.builders.writer import SplitWriter
from critic_data.rl.prompts import DEFAULT_TEMPLATE, TIE_TEMPLATE, conversational_prompt, render_critic_prompt
from critic_data.schemas import FORMATS, Reject, RejectReason, validate_row

SPLITS = ("train", "test")


def _digest(*parts: str | bytes) -> str:
    """A 128-bit content hash (xxh3: fast enough to hash every image byte)."""
    h = xxhash.xxh3_128()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def _unit(seed: int, *parts: str) -> float:
    """A uniform number in [0, 1) fixed by the seed and the parts."""
    return int(_digest(str(seed), *parts)[:16], 16) / 2**64


def _check(item: Example | Reject, options: BuildOptions) -> tuple[tuple[RejectReason, str] | None, list[str]]:
    """Check each image of an example and hash its bytes (for dedup and the split key)."""
    if isinstance(item, Reject):
        return None, []
    for data, _ in item.images:
        problem = check_image(data, options.max_image_pixels, options.image_check)
        if problem:
            return problem, []
    return None, [_digest(data) for data, _ in item.images]


def _read_and_check(reader: SourceReader, part, options: BuildOptions) -> list:
    """One part's rows with their image checks: the unit of work a worker process does."""
    return [(item, *_check(item, options)) for item in reader.read_part(part)]


def _checked(reader: SourceReader, options: BuildOptions, num_proc: int) -> Iterator:
    """(item, problem, image digests) for every row, in input order.

    Parts (parquet row groups) are read, parsed and checked by `num_proc` worker processes,
    a few parts ahead of the writer, so memory stays bounded by the parts in flight.
    """
    parts = list(reader.parts)
    if num_proc <= 1 or len(parts) <= 1:
        for part in parts:
            for item in reader.read_part(part):
                yield (item, *_check(item, options))
        return
    with ProcessPoolExecutor(num_proc) as pool:
        in_flight: deque = deque()
        for part in parts:
            in_flight.append(pool.submit(_read_and_check, reader, part, options))
            if len(in_flight) > 2 * num_proc:
                yield from in_flight.popleft().result()
        while in_flight:
            yield from in_flight.popleft().result()


class SourceStats:
    """Counts for one source; `to_manifest` is what build.json and the card report."""

    def __init__(self) -> None:
        self.rows_read = self.rows_used = self.pairs_formed = self.pairs_kept = self.duplicates = 0
        self.ties_kept = 0
        self.rejects: Counter = Counter()
        self.filtered: Counter = Counter()
        self.notes: Counter = Counter()
        self.labels: dict[str, Counter] = {split: Counter() for split in SPLITS}

    def to_manifest(self) -> dict:
        return {
            "counts": {
                "rows_read": self.rows_read,
                "rows_used": self.rows_used,
                "rows_rejected": sum(self.rejects.values()),
                "pairs_formed": self.pairs_formed,
                "pairs_filtered": dict(sorted(self.filtered.items())),
                "duplicates_dropped": self.duplicates,
                "pairs_kept": self.pairs_kept,
            },
            "rejects_by_reason": dict(sorted(self.rejects.items())),
            "notes": dict(sorted(self.notes.items())),
            "label_balance": {split: dict(sorted(c.items())) for split, c in self.labels.items()},
        }


class _Assembler:
    """Turns kept pairs into output rows: dedup, split, presented order, prompt."""

    def __init__(self, options: BuildOptions):
        self.options = options
        self.seen: set[str] = set()
        # Labels are balanced to within one row per (source, split) without a second pass:
        # kept pairs are taken in couples in input order; the first of a couple is ordered by
        # its keyed hash, the second gets the other label.
        self.pending_label: dict[tuple[str, str], str | None] = defaultdict(lambda: None)
        self.template = TIE_TEMPLATE if options.keep_ties else DEFAULT_TEMPLATE

    def rows(self, example: Example, digests: list[str], stats: SourceStats) -> Iterator[tuple[str, dict]]:
        seed = self.options.seed
        for pair in example.pairs:
            if pair.tie:
                if stats.ties_kept >= self.options.keep_ties:
                    stats.filtered["tie_dropped"] += 1
                    continue
            key = _digest(*digests, example.question, *sorted((pair.better, pair.worse)))
            if key in self.seen:
                stats.duplicates += 1
                continue
            self.seen.add(key)
            split = "test" if _unit(seed, "split", *digests, example.question) < self.options.test_size else "train"
            row_id = f"{example.source}-{_digest(example.source_id, pair.better, pair.worse)[:16]}"
            answer = self._label(example.source, split, seed, row_id, pair)
            stats.ties_kept += pair.tie
            stats.pairs_kept += 1
            stats.labels[split][answer] += 1
            yield split, self._row(example, pair, row_id, answer)

    def _label(self, source: str, split: str, seed: int, row_id: str, pair: Pair) -> str:
        if pair.tie:
            return "tie"
        pending = self.pending_label[(source, split)]
        if pending is None:
            label = "1" if _unit(seed, "order", row_id) < 0.5 else "2"
            self.pending_label[(source, split)] = "2" if label == "1" else "1"
            return label
        self.pending_label[(source, split)] = None
        return pending

    def _row(self, example: Example, pair: Pair, row_id: str, answer: str) -> dict:
        first, second = (pair.worse, pair.better) if answer == "2" else (pair.better, pair.worse)
        text = render_critic_prompt(self.template, example.question, first, second)
        row = {
            "id": row_id,
            "source": example.source,
            "source_id": example.source_id,
            "images": [{"bytes": data, "path": name} for data, name in example.images],
            "prompt": conversational_prompt(text, len(example.images)),
            "question": example.question,
            "response_1": first,
            "response_2": second,
            "answer": answer,
            "margin": pair.margin,
            "template": self.template,
        }
        validate_row(row)  # a failure here is a bug in a builder, not the user's input
        convert = FORMATS[self.options.format][1]
        return convert(row) if convert else row


def resolve_snapshot(spec: SourceSpec, options: BuildOptions) -> tuple[Snapshot, object]:
    """Open a source's local snapshot (or fetch it); return it with its reader."""
    folder = options.inputs.get(spec.name)
    if folder is None:
        folder = fetch_from_hub(spec.hub_repo, options.revision, list(spec.hub_files))
        reader = spec.open(folder, options)
        return Snapshot(folder, hub_origin(spec.hub_repo, folder, options.revision)), reader
    if not folder.is_dir():
        raise UserError(f"--input {folder} is not a folder; pass the local snapshot of {spec.hub_repo}")
    reader = spec.open(folder, options)
    snapshot = local_snapshot(folder, reader.files)
    snapshot.origin["layout"] = reader.layout
    return snapshot, reader


def build(options: BuildOptions, num_proc: int = 1, progress=None, argv: list[str] | None = None) -> dict:
    """Build the dataset folder `options.out`; return the manifest written to build.json.

    Output is staged in a sibling folder and moved into place only when complete, so an
    interrupted or failed build never leaves a half-written dataset.
    """
    unknown = [name for name in options.sources if name not in SOURCES]
    if unknown:
        raise UserError(f"unknown source {', '.join(unknown)}; choose from {', '.join(SOURCES)} or all")
    out = options.out
    if out.exists() and any(out.iterdir()) and not options.overwrite:
        raise UserError(f"{out} already exists and is not empty; choose another --out or pass --overwrite")
    started = time.perf_counter()
    opened = [(SOURCES[name], *resolve_snapshot(SOURCES[name], options)) for name in options.sources]

    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "data").mkdir(parents=True)
    try:
        manifest = _write(opened, options, staging, num_proc, progress, started)
        manifest["command"] = argv
        (staging / "build.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        from critic_data.cards import render_dataset_card

        (staging / "README.md").write_text(render_dataset_card(manifest))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return manifest


def _write(opened, options: BuildOptions, staging: Path, num_proc: int, progress, started: float) -> dict:
    schema = FORMATS[options.format][0].arrow_schema
    writers = {split: SplitWriter(staging / "data", split, options.max_shard_bytes, schema) for split in SPLITS}
    assembler = _Assembler(options)
    stats: dict[str, SourceStats] = {}
    timings = {}
    with (staging / "rejects.jsonl").open("w", encoding="utf-8") as rejects:
        for spec, snapshot, reader in opened:
            source_started = time.perf_counter()
            source_stats = stats[spec.name] = SourceStats()
            task = progress.add_task(spec.name, total=reader.total_rows) if progress else None
            for item, problem, digests in _checked(reader, options, num_proc):
                source_stats.rows_read += 1
                if progress:
                    progress.advance(task)
                if isinstance(item, Example) and problem:
                    item = Reject(spec.name, item.source_id, problem[0], problem[1])
                if isinstance(item, Reject):
                    source_stats.rejects[str(item.reason)] += 1
                    rejects.write(json.dumps(item.to_json_dict()) + "\n")  # ASCII: no U+2028-style line breaks inside a record
                    continue
                source_stats.rows_used += 1
                source_stats.pairs_formed += item.pairs_formed
                source_stats.filtered.update(item.pairs_filtered)
                source_stats.notes.update(item.notes)
                for split, row in assembler.rows(item, digests, source_stats):
                    writers[split].write(row)
            timings[spec.name] = round(time.perf_counter() - source_started, 3)
    files = {split: writer.close() for split, writer in writers.items()}
    return {
        "tool": {"name": "critic-data", "version": __version__},
        "format": options.format,
        "seed": options.seed,
        "options": options.to_manifest(),
        "inputs": {spec.name: snapshot.origin for spec, snapshot, _ in opened},
        "sources": {name: s.to_manifest() for name, s in stats.items()},
        "splits": {
            split: {
                "rows": writers[split].rows,
                "bytes": sum(p.stat().st_size for p in files[split]),
                "files": [f"data/{p.name}" for p in files[split]],
            }
            for split in SPLITS
        },
        "timings": {"sources_seconds": timings, "total_seconds": round(time.perf_counter() - started, 3)},
    }
