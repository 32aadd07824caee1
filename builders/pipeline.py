"""A build, start to end: the output folder, the sources' readers, the steps, the manifest and the card.

    read      readers.py (rows of each source, with their images)
    prepare   prepare.py in worker processes (parallel.py): check images and text, split, offer
              pairs with keys, render their columns
    decide    decide.py, in input order: benchmark copies and pass rates out of band (curation.py),
              ties, duplicates, length balance, labels, ids
    lay out   layout.py: the kept pairs in their presented order, with their prompts
    write     writer.py: Hub-style parquet shards
    then build.json (counts.py: every row and pair accounted for), rejects.jsonl and the card
    (its charts drawn in a process of their own, `_card_process`, when there are workers).

Every input row ends in exactly one place: used (it gave zero or more pairs) or rejected
with a reason. Pairs dropped by a rule are counted by rule. Split and order are keyed
hashes of (seed, row content), so the output never depends on worker count or shard size,
and the same inputs, options and seed give byte-identical data files.
"""

from __future__ import annotations

import gc
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pyarrow as pa

from critic_data import UserError, __version__, cli_flags
from critic_data.builders import SOURCES
from critic_data.builders.counts import SPLITS, SourceCounts
from critic_data.builders.curation import Curation, Readers
from critic_data.builders.decide import Decider
from critic_data.builders.layout import lay_out_pairs, output_schema
from critic_data.builders.options import BuildOptions
from critic_data.builders.output import staged
from critic_data.builders.parallel import ended_unexpectedly, prepared_chunks, worker_started
from critic_data.builders.readers import SourceSpec, file_identity
from critic_data.builders.snapshot import Snapshot, fetch_from_hub, hub_origin, local_snapshot, published_command
from critic_data.builders.writer import SplitWriter
from critic_data.manifest import dataset_identity


def resolve_snapshot(spec: SourceSpec, options: BuildOptions) -> tuple[Snapshot, object]:
    """Open a source's local snapshot (or fetch it); return it with its reader. The manifest's
    origin of either says which of the source's layouts was read."""
    folder = options.inputs.get(spec.name)
    if folder is None:
        folder = fetch_from_hub(spec.hub_repo, options.revision, list(spec.hub_files))
        reader = spec.open(folder, options)
        snapshot = Snapshot(folder, hub_origin(spec.hub_repo, folder, options.revision))
    elif not folder.is_dir():
        raise UserError(f"--input {folder} is not a folder; pass the local snapshot of {spec.hub_repo}")
    else:
        reader = spec.open(folder, options)
        snapshot = local_snapshot(folder, reader.files)
    snapshot.origin["layout"] = reader.layout
    return snapshot, reader


def build(options: BuildOptions, progress=None, argv: list[str] | None = None, readers: Readers | None = None) -> dict:
    """Build the dataset folder `options.out`; return the manifest written to build.json. A build that
    curates (--decontaminate, --difficulty) reads benchmarks and runs with `readers` (curation.py).

    `--out` is checked before any input is read, the output is staged in a sibling folder and
    moved into place only when complete (`output.staged`): an interrupted or failed build
    never leaves a half-written dataset, and never touches the old output. A build that keeps
    no row is an error too: a dataset folder without data cannot be loaded or pushed.
    """
    started = time.perf_counter()
    reads = [("--input", folder) for folder in options.inputs.values()]
    reads += [("--image-root", options.image_root)] if options.image_root is not None else []
    reads += [("--decontaminate", folder) for folder in options.decontaminate.values() if folder is not None]
    reads += [("--difficulty", options.difficulty)] if options.difficulty is not None else []
    with _tuned(), staged(options.out, options.overwrite, reads) as staging:
        opened = [(SOURCES[name], *resolve_snapshot(SOURCES[name], options)) for name in options.sources]
        seen = _identities([path for _, _, reader in opened for path in reader.files])
        identity = dataset_identity(options.to_manifest(), {spec.name: snapshot.origin for spec, snapshot, _ in opened})
        curation = Curation.open(options, readers, identity)
        (staging / "data").mkdir()
        with _card_process(options) as card_process:
            manifest = _write(opened, options, staging, progress, started, curation)
            _refuse_changed_inputs(seen, options.out)
            if curation is not None:
                curation.refuse_rows_not_formed(options.out)
                manifest.update(curation.record())
            if not any(stats["counts"]["pairs_kept"] for stats in manifest["sources"].values()):
                raise UserError(_nothing_kept(manifest["sources"], options.out))
            paths = [options.out, *options.inputs.values(), *([options.image_root] if options.image_root else []),
                     *(folder for folder in options.decontaminate.values() if folder is not None),
                     *([options.difficulty] if options.difficulty else [])]
            manifest["command"] = None if argv is None else published_command(argv, paths)
            # allow_nan=False: build.json stays valid JSON, whatever slipped past the options' checks
            (staging / "build.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False,
                                                           allow_nan=False) + "\n")
            from critic_data.cards.statistics import card_statistics

            if progress is not None:  # a pause of its own after the rows' bars: say what it is
                progress.add_task("writing the card", total=None)
            # the card's figures, counted from the data files just written (in this process: polars
            # must not run in a forked one, whose copy of polars' thread pool has no threads)
            card = partial(_write_card, staging, manifest, options.sources, card_statistics(staging, manifest))
            try:
                card_process.submit(card).result() if card_process else card()
            except BrokenProcessPool:
                raise UserError(ended_unexpectedly("the process drawing the card")) from None
    return manifest


def _identities(paths: list[Path]) -> dict[Path, tuple | None]:
    """Each input file's identity (inode, modification time, size; None when it is gone): a file
    written to or replaced while the build reads it shows."""
    return {path: file_identity(path) for path in paths}


def _refuse_changed_inputs(seen: dict[Path, tuple | None], out: Path) -> None:
    """An input that changed while it was read gave rows of neither version (its parts are byte
    ranges and row groups found at the start), and build.json would fingerprint the old one."""
    now = _identities(list(seen))
    changed = [path for path in seen if now[path] != seen[path]]
    if changed:
        raise UserError(f"{changed[0]} changed while the build read it (written to, replaced or removed); nothing "
                        f"was written to {out}: rerun when the input is settled")


def _write_card(folder: Path, manifest: dict, sources: tuple[str, ...], statistics: dict) -> None:
    """The dataset card (README.md) and its charts (in the card's own process when there are workers)."""
    from critic_data.cards.dataset_card import PLOTS, card_plots, render_dataset_card

    plots = card_plots(statistics, folder / PLOTS)
    card = render_dataset_card(manifest, [SOURCES[name] for name in sources], statistics=statistics, plots=plots,
                               option_flags=cli_flags(BuildOptions))
    (folder / "README.md").write_text(card, encoding="utf-8")


@contextmanager
def _card_process(options: BuildOptions) -> Iterator[ProcessPoolExecutor | None]:
    """With worker processes, a process to draw and write the card in, started with the build:
    it imports what that needs (matplotlib, huggingface_hub: half a second of CPU) while the data
    is written, and the card is drawn without that wait once it is. None with --num-proc 1: the
    card is written in this process."""
    if options.num_proc <= 1:
        yield None
        return
    with ProcessPoolExecutor(1, initializer=_ready_for_the_card, initargs=(os.getpid(),)) as card_process:
        card_process.submit(int)  # the pool starts its process with the first task
        yield card_process


def _ready_for_the_card(build_pid: int) -> None:
    worker_started(build_pid)
    try:
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.figure  # noqa: F401

        import critic_data.cards.charts  # noqa: F401  (no polars: the card's statistics are counted in the build's process)
        import critic_data.cards.dataset_card  # noqa: F401
    except ImportError:  # drawing the card says what is missing, in one line
        pass


@contextmanager
def _tuned() -> Iterator[None]:
    """Process settings for a build, undone at its end (its worker processes inherit them). Together
    they save a tenth of a build of small rows: 3.45 s against 3.10 s at 40k small-image rows, 10.9 s
    against 10.2 s at 160k (medians of four interleaved runs each, 2026-12-07; `benchmarks/run.py
    --image-size small` builds these snapshots):
    - Python's cyclic garbage collector leaves the objects alive when the build starts (imported
      modules, mostly) out of its scans (`gc.freeze`) and runs after 20,000 new container objects
      instead of 700: a batch of rows makes hundreds of thousands of short-lived objects and next
      to no cycles.
    - Arrow allocates from jemalloc, where pyarrow has it: its default, mimalloc, keeps more memory
      mapped for a build that allocates and frees megabytes per batch (peak RSS 790-821 MB against
      860-891 MB, 160k small-image rows, three runs each)."""
    threshold, pool = gc.get_threshold(), pa.default_memory_pool()
    freezing = not gc.get_freeze_count()  # a caller's own freeze is left as it is
    if freezing:
        gc.freeze()
    gc.set_threshold(20_000, *threshold[1:])
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:  # a pyarrow built without jemalloc (Windows)
        pass
    try:
        yield
    finally:
        pa.set_memory_pool(pool)
        gc.set_threshold(*threshold)
        if freezing:
            gc.unfreeze()


def _nothing_kept(sources: dict, out: Path) -> str:
    """Why a build kept no row, in one line: what became of each source's rows and pairs (the
    rejects file is not written, so its reasons are summed up here)."""
    def most(counter: dict) -> str:
        top = sorted(counter.items(), key=lambda item: (-item[1], item[0]))
        return ", ".join(f"{name} {count}" for name, count in top[:3]) + (f" and {len(top) - 3} more" if len(top) > 3
                                                                          else "")

    fates = []
    for name, stats in sources.items():
        counts = stats["counts"]
        fate = f"{name}: {counts['rows_read']} rows read, {counts['rows_rejected']} rejected"
        fate += f" ({most(stats['rejects_by_reason'])})" if counts["rows_rejected"] else ""
        if counts["pairs_formed"]:
            fate += f", {counts['pairs_formed']} pairs formed, none kept"
            dropped = {**counts["pairs_filtered"],
                       **({"duplicates": counts["duplicates_dropped"]} if counts["duplicates_dropped"] else {})}
            fate += f" ({most(dropped)})" if dropped else ""
        fates.append(fate)
    return (f"no rows kept ({'; '.join(fates)}); check that --input holds each source's snapshot, and the options that "
            f"filter pairs (--margin, --keep-ties); nothing was written to {out}")


def _write(opened, options: BuildOptions, staging: Path, progress, started: float, curation: Curation | None) -> dict:
    """Run every source through the steps into the staging folder; return the manifest."""
    writers = {split: SplitWriter(staging / "data", split, options.max_shard_bytes, output_schema(options.format))
               for split in SPLITS}
    decider = Decider(options, curation)
    counts: dict[str, SourceCounts] = {}
    timings = {}
    scratch = staging / ".chunks"  # tables on their way from the workers; each removed once read
    scratch.mkdir()
    with (staging / "rejects.jsonl").open("w", encoding="utf-8") as rejects:
        for spec, _, reader in opened:
            source_started = time.perf_counter()
            counts[spec.name] = _run_source(reader, options, scratch, decider, writers, rejects,
                                            progress.add_task(spec.name, total=reader.total_rows) if progress else None,
                                            progress)
            decider.source_done()
            timings[spec.name] = round(time.perf_counter() - source_started, 3)
    scratch.rmdir()
    files = {split: writer.close() for split, writer in writers.items()}
    return _manifest(opened, options, counts, writers, files, timings, started)


def _run_source(reader, options: BuildOptions, scratch: Path, decider: Decider, writers: dict,
                rejects, task, progress) -> SourceCounts:
    counts = SourceCounts()
    for chunk in prepared_chunks(reader, options, scratch):
        counts.update(chunk.counts)
        for reject in chunk.rejects:
            rejects.write(json.dumps(reject.to_json_dict()) + "\n")  # ASCII: no U+2028-style break inside a record
        if progress:
            progress.advance(task, chunk.counts["rows", "read"])
        table = chunk.reload()
        if table is None:
            continue
        decided = decider.decide(chunk.candidates, _first_image(table) if decider.curation else None)
        counts.update(decided.counts)
        for split, writer in writers.items():
            picked = [i for i, (c, a) in enumerate(zip(chunk.candidates, decided.answers)) if a and c.split == split]
            if picked:
                writer.write(lay_out_pairs(table, picked, [decided.answers[i] for i in picked], options,
                                           [decided.ids[i] for i in picked]))
    return counts


def _first_image(table: pa.Table):
    """Row i's first image bytes, read only when asked (decontamination decodes few of them)."""
    images = table.column("images")

    def image(i: int) -> bytes:
        value = images[i].as_py()
        return (value[0] if isinstance(value, list) else value)["bytes"]  # trl: a list of images; easyr1: one

    return image


def _manifest(opened, options: BuildOptions, counts: dict[str, SourceCounts], writers: dict, files: dict,
              timings: dict, started: float) -> dict:
    return {
        "tool": {"name": "critic-data", "version": __version__},
        "format": options.format,
        "template": options.template(),
        "seed": options.seed,
        "options": options.to_manifest(),
        "inputs": {spec.name: snapshot.origin for spec, snapshot, _ in opened},
        "sources": {name: c.to_manifest() for name, c in counts.items()},
        "splits": {
            split: {
                "rows": writers[split].rows,
                "bytes": sum(p.stat().st_size for p in files[split]),
                "files": [f"data/{p.name}" for p in files[split]],
                # what each shard holds: `push` publishes only these bytes
                "xxh3_128": {f"data/{p.name}": digest
                             for p, digest in zip(files[split], writers[split].digests, strict=True)},
            }
            for split in SPLITS
        },
        "timings": {"sources_seconds": timings, "total_seconds": round(time.perf_counter() - started, 3)},
    }
