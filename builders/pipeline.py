"""The build steps every source shares, in order:

    reader -> image check -> dedup -> split -> presented order -> validate -> write

Every input row ends in exactly one place: used (it gave zero or more pairs) or rejected
with a reason. Pairs dropped by a rule are counted by rule. Split and order are keyed
hashes of (seed, row content), so the output never depends on worker count or shard size,
and the same inputs, options and seed give byte-identical data files.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache, partial
from itertools import islice
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from critic_data import UserError, __version__
from critic_data.builders import SOURCES, SourceReader, SourceSpec
from critic_data.builders.duplicates import CrossSourceIndex, text_key, thumbnail
from critic_data.builders.images import check_image
from critic_data.builders.options import BuildOptions
from critic_data.builders.output import staged
from critic_data.builders.records import Example
from critic_data.builders.snapshot import Snapshot, fetch_from_hub, hub_origin, local_snapshot
from critic_data.builders.writer import SplitWriter
from critic_data.rl.prompts import conversational_prompt, critic_body, with_instruction
from critic_data.schemas import FORMATS, Reject, RejectReason, validate_row

SPLITS = ("train", "test")
CHUNK_ROWS = 100  # input rows prepared together (one parquet row group, typically)


def _digest(*parts: str | bytes) -> str:
    """A 128-bit content hash (xxh3: fast enough to hash every image byte) of the parts, each
    followed by a NUL byte."""
    if all(isinstance(part, str) for part in parts):  # one call for text: the same bytes hashed
        return xxhash.xxh3_128_hexdigest("\x00".join(parts).encode("utf-8") + b"\x00")
    h = xxhash.xxh3_128()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def _unit(seed: int, *parts: str) -> float:
    """A uniform number in [0, 1) fixed by the seed and the parts."""
    return int(_digest(str(seed), *parts)[:16], 16) / 2**64


def _check(item: Example | Reject, options: BuildOptions) -> tuple[tuple[RejectReason, str] | None, list[str]]:
    """Check an example's text and each of its images, and hash the image bytes (for dedup
    and the split key)."""
    if isinstance(item, Reject):
        return None, []
    if problem := _text_problem(item):
        return problem, []
    for data, _ in item.images:
        if not isinstance(data, bytes):  # e.g. an Image struct whose `bytes` were stored as a string
            return (RejectReason.ROW_MALFORMED, f"image bytes are a {type(data).__name__}, not bytes"), []
        if problem := check_image(data, options.max_image_pixels, options.image_check):
            return problem, []
    return None, [_digest(data) for data, _ in item.images]


def _text_problem(item: Example) -> tuple[RejectReason, str] | None:
    """Text that cannot be written as UTF-8: a lone surrogate, which a JSON `\\ud800` escape
    decodes to (it would fail hashing and writing)."""
    texts = [("id", item.source_id), ("question", item.question), *(("image name", name) for _, name in item.images if name)]
    texts += [("response", text) for pair in item.pairs for text in (pair.better, pair.worse)]
    for field, text in texts:
        if not text.isascii():  # the cheap test first: almost all text is ASCII
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as error:
                return RejectReason.TEXT_UNENCODABLE, f"the {field} holds {text[error.start]!r}, a lone surrogate"
    return None


@dataclass
class Candidate:
    """What the ordered, single-threaded step needs to decide about one offered pair."""

    source: str
    key: str  # dedup key: image bytes, question, the two responses
    split: str
    order: float  # keyed hash deciding the presented order (first of a couple)
    tie: bool
    origin: str | None = None  # the dataset a re-judged pair comes from (counted per kept pair)
    content: tuple[int, bytes | None] | None = None  # text key and image thumbnail (builds of several sources)
    longer: int = 0  # 1: the better response has more characters than the worse, -1: fewer, 0: as many, or a tie


@dataclass
class Chunk:
    """A run of input rows, prepared where the work can run in parallel.

    `rejects` are the rows rejected, in input order; the other rows are `used`, and their
    pairs formed and filtered by rule are summed here. `table` holds one row per offered
    pair (train first, then test, each in input order; `candidates` alike) with every output
    column, the columns that depend on the presented order twice (`<col>@1`: better
    response first, `<col>@2`: second).
    A worker process hands the table over as an Arrow file (`stash`) that the build maps
    into memory (`load`): image bytes are neither pickled nor decoded a second time.
    """

    rejects: list[Reject]
    used: int
    pairs_formed: int
    filtered: Counter
    notes: Counter
    candidates: list[Candidate]
    table: pa.Table | None
    table_file: Path | None = None

    def stash(self, path: Path) -> None:
        if self.table is not None:
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, self.table.schema) as writer:
                writer.write_table(self.table)
            self.table, self.table_file = None, path

    def load(self) -> pa.Table | None:
        if self.table_file is not None:
            # the mapping outlives the unlinked file for as long as the table's buffers do
            self.table = pa.ipc.open_file(pa.memory_map(str(self.table_file))).read_all()
            self.table_file.unlink()
            self.table_file = None
        return self.table


ORDERED = "@1", "@2"


def _prepare(items: Iterable[Example | Reject], options: BuildOptions,
             take_images: Callable[[list[int]], pa.Array] | None = None) -> Chunk:
    """Check images, hash, and render both presented orders of every offered pair.

    With `take_images` (the reader's Arrow images of items, by index), image bytes never
    become part of the Python rows: the `images` column is taken from the input as a whole.
    """
    rejects, candidates, records, image_rows = [], [], [], []
    used = pairs_formed = 0
    filtered, notes = Counter(), Counter()
    template = options.template()
    features, convert = FORMATS[options.format]
    image_column = "images" if "images" in features else "image"
    cross_source = len(options.sources) > 1  # a pair re-published by a later source is found by content
    for index, item in enumerate(items):
        problem, digests = _check(item, options)
        if isinstance(item, Example) and problem:
            item = Reject(item.source, item.source_id, problem[0], problem[1])
        if isinstance(item, Reject):
            rejects.append(item)
            continue
        used += 1
        pairs_formed += item.pairs_formed
        filtered.update(item.pairs_filtered)
        notes.update(item.notes)
        # the split is the row's (image, question) group's: every pair of a row shares it
        split = "test" if _unit(options.seed, "split", *digests, item.question) < options.test_size else "train"
        image_key = thumbnail(item.images[0][0]) if cross_source else None
        for pair in item.pairs:
            if pair.tie and not options.keep_ties:  # what `_Decider` would decide, decided here
                filtered["tie_dropped"] += 1
                continue
            row_id = f"{item.source}-{_digest(item.source_id, pair.better, pair.worse)[:16]}"
            key = _digest(*digests, item.question, *sorted((pair.better, pair.worse)))
            content = (text_key(item.question, pair.better, pair.worse), image_key) if cross_source else None
            longer = 0 if pair.tie else (len(pair.better) > len(pair.worse)) - (len(pair.better) < len(pair.worse))
            candidates.append(Candidate(item.source, key, split, _unit(options.seed, "order", row_id), pair.tie,
                                        item.origin, content, longer))
            image_rows.append(index)
            ordered = []
            for first, second, answer in ((pair.better, pair.worse, "1"), (pair.worse, pair.better, "2")):
                body = critic_body(template, item.question, first, second)
                row = {
                    "id": row_id,
                    "source": item.source,
                    "source_id": item.source_id,
                    "images": [{"bytes": data, "path": name} for data, name in item.images],
                    "prompt": conversational_prompt(with_instruction(body), len(item.images)),
                    "question": item.question,
                    "response_1": first,
                    "response_2": second,
                    "answer": answer,
                    "margin": pair.margin,
                    "template": template,
                }
                validate_row(row)  # a failure here is a bug in a builder, not the user's input
                ordered.append(convert(row, body) if convert else row)
            record = {}
            for column in features:
                if column == "answer" or (column == image_column and take_images is not None):
                    continue
                if ordered[0][column] == ordered[1][column]:
                    record[column] = ordered[0][column]
                else:
                    record[column + ORDERED[0]], record[column + ORDERED[1]] = ordered[0][column], ordered[1][column]
            records.append(record)
    # Train candidates first, then test, each in input order: the build then usually writes a
    # split's rows as one slice of the table. (Labels are paired and duplicates found per
    # split: a duplicate pair has the same image and question, hence the same split.)
    order = sorted(range(len(candidates)), key=lambda i: candidates[i].split != "train")
    candidates = [candidates[i] for i in order]
    table = _candidate_table([records[i] for i in order], options.format) if records else None
    if table is not None and take_images is not None:
        images = take_images([image_rows[i] for i in order])
        if image_column == "image":  # one image per row (every source has one): the struct itself
            images = pc.list_flatten(images)
        table = table.append_column(image_column, images.cast(_schema(options.format).field(image_column).type))
    return Chunk(rejects, used, pairs_formed, filtered, notes, candidates, table)


@cache
def _schema(output_format: str) -> pa.Schema:
    return FORMATS[output_format][0].arrow_schema


def _candidate_table(records: list[dict], output_format: str) -> pa.Table:
    schema = _schema(output_format)
    fields = []
    for field in schema:
        if field.name in records[0]:
            fields.append(field)
        elif field.name + ORDERED[0] in records[0]:
            fields += [field.with_name(field.name + suffix) for suffix in ORDERED]
    return pa.Table.from_pylist(records, schema=pa.schema(fields))


def _chunks(reader: SourceReader, options: BuildOptions, num_proc: int, scratch: Path) -> Iterator[Chunk]:
    """Every row of a source as prepared chunks, in input order.

    Parts (parquet row groups) are read and prepared by `num_proc` worker processes, a few
    parts ahead of the writer, so memory stays bounded by the parts in flight; their tables
    come back through files in `scratch`. A source that is one sequential part is prepared
    here, CHUNK_ROWS rows at a time.
    """
    parts = list(reader.parts)
    if num_proc <= 1 or len(parts) <= 1:
        for part in parts:
            yield from _prepare_stream(reader, part, options)
        return
    with ProcessPoolExecutor(num_proc) as pool:
        in_flight: deque = deque()
        for number, part in enumerate(parts):
            in_flight.append(pool.submit(_prepare_part, reader, part, options, scratch / f"part-{number:07d}"))
            if len(in_flight) > 2 * num_proc:
                yield from in_flight.popleft().result()
        while in_flight:
            yield from in_flight.popleft().result()


def _prepare_stream(reader: SourceReader, part, options: BuildOptions) -> Iterator[Chunk]:
    items = reader.read_part(part)
    arrow_images = getattr(reader, "image_column", None) is not None
    first = 0
    while chunk := list(islice(items, CHUNK_ROWS)):
        take = partial(_take_images, reader, part, first) if arrow_images else None
        yield _prepare(chunk, options, take)
        first += len(chunk)


def _take_images(reader, part, first: int, rows: list[int]) -> pa.Array:
    return reader.images(part, [first + row for row in rows])


def _prepare_part(reader: SourceReader, part, options: BuildOptions, stem: Path) -> list[Chunk]:
    """The unit of work of a worker process: one part, in chunks of CHUNK_ROWS rows."""
    chunks = list(_prepare_stream(reader, part, options))
    for number, chunk in enumerate(chunks):
        chunk.stash(stem.with_name(f"{stem.name}-{number:04d}.arrow"))
    return chunks


class SourceStats:
    """Counts for one source; `to_manifest` is what build.json and the card report."""

    def __init__(self) -> None:
        self.rows_read = self.rows_used = self.pairs_formed = self.pairs_kept = self.duplicates = 0
        self.ties_kept = 0
        self.duplicates_of: Counter = Counter()  # source of the copy kept -> duplicates dropped
        self.kept_by_origin: Counter = Counter()  # where re-judged pairs come from
        self.rejects: Counter = Counter()
        self.filtered: Counter = Counter()
        self.notes: Counter = Counter()
        self.labels: dict[str, Counter] = {split: Counter() for split in SPLITS}

    def add(self, chunk: Chunk) -> None:
        """Count a chunk's rows (what the ordered step decides is counted by `_Decider`)."""
        self.rows_read += chunk.used + len(chunk.rejects)
        self.rows_used += chunk.used
        self.pairs_formed += chunk.pairs_formed
        self.filtered.update(chunk.filtered)
        self.notes.update(chunk.notes)
        self.rejects.update(str(reject.reason) for reject in chunk.rejects)

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
            "duplicates_of": dict(sorted(self.duplicates_of.items())),
            "rejects_by_reason": dict(sorted(self.rejects.items())),
            "notes": dict(sorted(self.notes.items())),
            "label_balance": {split: dict(sorted(c.items())) for split, c in self.labels.items()},
            **({"kept_by_origin": dict(sorted(self.kept_by_origin.items()))} if self.kept_by_origin else {}),
        }


class _Decider:
    """The ordered, single-threaded decisions: ties kept, duplicates dropped, length balance,
    presented order.

    A duplicate is a pair whose exact key (image bytes, question, responses) was kept before,
    or, in a build of several sources, whose content (`duplicates.py`) an earlier source kept.
    Labels are balanced to within one row per (source, split) without a second pass: kept
    pairs are taken in couples in input order; the first of a couple is ordered by its keyed
    hash, the second gets the other label.

    --balance-length, per (source, split), in input order. L and S count the kept pairs whose
    better response has more / fewer characters than the worse one (equal lengths and ties are
    neither, and always kept); T(n) = options.length_tolerance(n), which never decreases. Rule:
    keep a pair unless it would make |L - S| > T(L + S). No rule deciding each pair as it comes
    drops fewer:
    - Such a rule must keep |L - S| <= T(L + S) after every pair, as the input may end there.
    - Let F be any choice of pairs meeting that after every pair, and G this rule's choice; with
      n = L + S and D = L - S of each, after every pair  n_G - n_F >= |D_G - D_F|  (*). It holds
      at the start (0 >= 0), and a pair of sign s (+1 longer, -1 shorter) keeps it: kept by both
      or by neither, nothing changes; kept by G alone, the left side grows by 1 and the right by
      at most 1; kept by F alone, G refused it, so s*D_G = T(n_G + 1) (as |D_G| <= T(n_G) <=
      T(n_G + 1) < |D_G + s|), while F took it, so s*D_F + 1 <= T(n_F + 1) <= T(n_G + 1) (n_F <=
      n_G by (*)): s*D_F < s*D_G, and both sides of (*) shrink by 1.
    - So n_G >= n_F at the end: G drops no more of these pairs than F, and neither drops others.
    A rule that sees the whole input first needs to drop only the fewest d with
    |L - S| - d <= T(L + S - d) (L, S of the input); this one can drop more: after a run of the
    side that ends up the minority (the input may end during it), or where the tolerance grew
    after a drop. With T = √n, a source without length bias loses few pairs to its chance ups
    and downs (tests/test_balance_length.py measures both).
    """

    def __init__(self, options: BuildOptions):
        self.options = options
        self.seen: dict[str, str] = {}  # exact key -> source of the pair kept
        self.earlier_sources = CrossSourceIndex()
        self.pending_label: dict[tuple[str, str], str | None] = defaultdict(lambda: None)
        self.lengths: dict[tuple[str, str], tuple[int, int]] = defaultdict(lambda: (0, 0))  # kept (L, S)

    def answers(self, candidates: list[Candidate], stats: SourceStats) -> list[str | None]:
        """The labels of a chunk's candidates, in order (None: dropped by a rule, counted in `stats`)."""
        copies = [None] * len(candidates)
        if candidates and candidates[0].content is not None:
            copies = self.earlier_sources.earlier_copies([c.content[0] for c in candidates],
                                                         [c.content[1] for c in candidates])
        return [self._answer(candidate, copy, stats) for candidate, copy in zip(candidates, copies)]

    def source_done(self) -> None:
        self.earlier_sources.seal()

    def _answer(self, candidate: Candidate, earlier_copy: str | None, stats: SourceStats) -> str | None:
        if candidate.tie and not self.options.ties_allowed(stats.ties_kept):
            stats.filtered["tie_dropped"] += 1
            return None
        kept_copy = self.seen.get(candidate.key) or earlier_copy
        if kept_copy is not None:
            stats.duplicates += 1
            stats.duplicates_of[kept_copy] += 1
            return None
        if self.options.balance_length and candidate.longer:
            # before the pair is marked seen: a later copy of a pair dropped here is not a duplicate
            slot = (candidate.source, candidate.split)
            longer, shorter = self.lengths[slot]
            longer, shorter = longer + (candidate.longer > 0), shorter + (candidate.longer < 0)
            if abs(longer - shorter) > self.options.length_tolerance(longer + shorter):
                stats.filtered["length_balance"] += 1
                return None
            self.lengths[slot] = longer, shorter
        self.seen[candidate.key] = candidate.source
        if candidate.content is not None:
            text, image = candidate.content
            self.earlier_sources.add(text, candidate.source, image)
        if candidate.origin is not None:
            stats.kept_by_origin[candidate.origin] += 1
        if candidate.tie:
            stats.ties_kept += 1
            answer = "tie"
        else:
            slot = (candidate.source, candidate.split)
            answer = self.pending_label[slot]
            if answer is None:
                answer = "1" if candidate.order < 0.5 else "2"
                self.pending_label[slot] = "2" if answer == "1" else "1"
            else:
                self.pending_label[slot] = None
        stats.pairs_kept += 1
        stats.labels[candidate.split][answer] += 1
        return answer


def _output_table(table: pa.Table, picked: list[int], answers: list[str], schema: pa.Schema) -> pa.Table:
    """Candidates `picked` (indices) of a chunk's table in the output schema, each in its presented order."""
    # Most of the table in one run of rows (train, usually): a slice, no copy. A few rows are
    # copied out instead: a slice would hold the whole table in memory until they are written.
    if picked[-1] - picked[0] + 1 == len(picked) and 2 * len(picked) >= table.num_rows:
        table = table.slice(picked[0], len(picked))
    else:
        table = table.take(pa.array(picked, pa.int64()))
    answer = pa.array(answers, pa.string())
    second_first = pc.equal(answer, "2")
    columns = []
    for field in schema:
        if field.name == "answer":
            columns.append(answer)
        elif field.name in table.column_names:
            columns.append(table[field.name])
        else:
            first, second = (table[field.name + suffix] for suffix in ORDERED)
            columns.append(pc.if_else(second_first, second, first))
    return pa.Table.from_arrays(columns, schema=schema)


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

    `--out` is checked before any input is read, the output is staged in a sibling folder and
    moved into place only when complete (`output.staged`): an interrupted or failed build
    never leaves a half-written dataset, and never touches the old output. A build that keeps
    no row is an error too: a dataset folder without data cannot be loaded or pushed.
    """
    unknown = [name for name in options.sources if name not in SOURCES]
    if unknown:
        raise UserError(f"unknown source {', '.join(unknown)}; choose from {', '.join(SOURCES)} or all")
    if num_proc < 1:
        raise UserError(f"--num-proc must be at least 1, not {num_proc}")
    started = time.perf_counter()
    reads = [("--input", folder) for folder in options.inputs.values()]
    reads += [("--image-root", options.image_root)] if options.image_root is not None else []
    with staged(options.out, options.overwrite, reads) as staging:
        opened = [(SOURCES[name], *resolve_snapshot(SOURCES[name], options)) for name in options.sources]
        (staging / "data").mkdir()
        manifest = _write(opened, options, staging, num_proc, progress, started)
        if not any(stats["counts"]["pairs_kept"] for stats in manifest["sources"].values()):
            raise UserError(_nothing_kept(manifest["sources"], options.out))
        manifest["command"] = argv
        # allow_nan=False: build.json stays valid JSON, whatever slipped past the options' checks
        (staging / "build.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
        from critic_data.cards import PLOTS, card_figures, render_dataset_card

        # the card's figures and charts, counted from the data files just written
        statistics, plots = card_figures(staging, manifest, staging / PLOTS)
        card = render_dataset_card(manifest, statistics=statistics, plots=plots)
        (staging / "README.md").write_text(card, encoding="utf-8")
    return manifest


def _nothing_kept(sources: dict, out: Path) -> str:
    """Why a build kept no row, in one line: what became of each source's rows and pairs (the
    rejects file is not written, so its reasons are summed up here)."""
    def most(counter: dict) -> str:
        top = sorted(counter.items(), key=lambda item: (-item[1], item[0]))
        return ", ".join(f"{name} {count}" for name, count in top[:3]) + (f" and {len(top) - 3} more" if len(top) > 3 else "")

    fates = []
    for name, stats in sources.items():
        counts = stats["counts"]
        fate = f"{name}: {counts['rows_read']} rows read, {counts['rows_rejected']} rejected"
        fate += f" ({most(stats['rejects_by_reason'])})" if counts["rows_rejected"] else ""
        if counts["pairs_formed"]:
            fate += f", {counts['pairs_formed']} pairs formed, none kept"
            dropped = {**counts["pairs_filtered"], **({"duplicates": counts["duplicates_dropped"]} if counts["duplicates_dropped"] else {})}
            fate += f" ({most(dropped)})" if dropped else ""
        fates.append(fate)
    return (f"no rows kept ({'; '.join(fates)}); check that --input holds each source's snapshot, and the options that "
            f"filter pairs (--margin, --keep-ties); nothing was written to {out}")


def _write(opened, options: BuildOptions, staging: Path, num_proc: int, progress, started: float) -> dict:
    schema = _schema(options.format)
    writers = {split: SplitWriter(staging / "data", split, options.max_shard_bytes, schema) for split in SPLITS}
    decider = _Decider(options)
    stats: dict[str, SourceStats] = {}
    timings = {}
    scratch = staging / ".chunks"  # tables on their way from the workers; each removed once read
    scratch.mkdir()
    with (staging / "rejects.jsonl").open("w", encoding="utf-8") as rejects:
        for spec, _, reader in opened:
            source_started = time.perf_counter()
            source_stats = stats[spec.name] = SourceStats()
            task = progress.add_task(spec.name, total=reader.total_rows) if progress else None
            for chunk in _chunks(reader, options, num_proc, scratch):
                source_stats.add(chunk)
                for reject in chunk.rejects:
                    # ASCII: no U+2028-style line break inside a record
                    rejects.write(json.dumps(reject.to_json_dict()) + "\n")
                if progress:
                    progress.advance(task, chunk.used + len(chunk.rejects))
                table = chunk.load()
                if table is None:
                    continue
                answers = decider.answers(chunk.candidates, source_stats)
                for split, writer in writers.items():
                    picked = [i for i, (c, a) in enumerate(zip(chunk.candidates, answers)) if a and c.split == split]
                    if picked:
                        writer.write(_output_table(table, picked, [answers[i] for i in picked], schema))
            decider.source_done()
            timings[spec.name] = round(time.perf_counter() - source_started, 3)
    scratch.rmdir()
    files = {split: writer.close() for split, writer in writers.items()}
    return {
        "tool": {"name": "critic-data", "version": __version__},
        "format": options.format,
        "template": options.template(),
        "seed": options.seed,
        "options": options.to_manifest(),
        "inputs": {spec.name: snapshot.origin for spec, snapshot, _ in opened},
        "sources": {name: s.to_manifest() for name, s in stats.items()},
        "splits": {
            split: {
                "rows": writers[split].rows,
                "bytes": sum(p.stat().st_size for p in files[split]),
                "files": [f"data/{p.name}" for p in files[split]],
                # what each shard holds: `push` publishes only these bytes
                "xxh3_128": {f"data/{p.name}": digest for p, digest in zip(files[split], writers[split].digests, strict=True)},
            }
            for split in SPLITS
        },
        "timings": {"sources_seconds": timings, "total_seconds": round(time.perf_counter() - started, 3)},
    }
