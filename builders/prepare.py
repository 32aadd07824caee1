"""The steps a worker process runs on a batch of rows, in order:

    check (images, text) -> split -> offer pairs (keys) -> render both presented orders

Their output, a `Chunk`, holds the rows rejected, the counts, and one candidate per offered
pair with an Arrow table of its output columns. A column that depends on which response is
shown first is rendered twice (`<col>@1`: the better response first, `<col>@2`: second): the
ordered step (decide.py) picks each pair's order later, and `presented` takes that order's
columns without rendering anything again. Image bytes go from the reader's Arrow column to the
table without becoming Python objects.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from critic_data.builders.duplicates import text_key, thumbnail
from critic_data.builders.images import check_image
from critic_data.builders.keys import digest, image_digest, unit
from critic_data.builders.options import BuildOptions
from critic_data.builders.readers import RowBatch
from critic_data.builders.records import Example, Pair
from critic_data.schemas import FORMATS, Reject, RejectReason, validate_row
from critic_data.schemas.prompts import TEMPLATES, conversational_prompt, with_instruction

ORDERED = "@1", "@2"


@dataclass
class Candidate:
    """What the ordered, single-threaded step needs to decide about one offered pair."""

    source: str
    key: str  # exact dedup key: image bytes, question, the two responses
    split: str
    order: float  # keyed hash deciding the presented order (first of a couple)
    tie: bool
    origin: str | None = None  # the dataset a re-judged pair comes from (counted per kept pair)
    content: tuple[int, bytes | None] | None = None  # text key and image thumbnail (builds of several sources)
    longer: int = 0  # 1: the better response has more characters than the worse, -1: fewer, 0: as many, or a tie


@dataclass
class Chunk:
    """A batch of input rows, prepared. `candidates` and the rows of `table` are the offered
    pairs, train first, then test, each in input order (a split's rows are then usually one
    slice of the table). A worker hands the table over as an Arrow file (`stash`) that the
    build maps into memory (`load`): image bytes are neither pickled nor copied again."""

    rejects: list[Reject]
    counts: Counter
    candidates: list[Candidate] = field(default_factory=list)
    table: pa.Table | None = None
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


def prepare(batch: RowBatch, options: BuildOptions) -> Chunk:
    """Check every row of a batch, split it, and offer its pairs with both presented orders rendered."""
    chunk = Chunk(rejects=[], counts=Counter())
    records, image_rows = [], []
    for index, item in enumerate(batch.items):
        item, digests = check(item, options)
        chunk.counts["rows", "read"] += 1
        if isinstance(item, Reject):
            chunk.rejects.append(item)
            chunk.counts["rejected", str(item.reason)] += 1
            continue
        chunk.counts["rows", "used"] += 1
        chunk.counts["pairs", "formed"] += item.pairs_formed
        chunk.counts.update({("filtered", rule): n for rule, n in item.pairs_filtered.items()})
        chunk.counts.update({("note", name): n for name, n in item.notes.items()})
        # the split is the row's (image, question) group's: every pair of a row shares it
        split = "test" if unit(options.seed, "split", *digests, item.question) < options.test_size else "train"
        image_key = thumbnail(item.images[0][0]) if len(options.sources) > 1 else None
        for pair in item.pairs:
            row_id = f"{item.source}-{digest(item.source_id, pair.better, pair.worse)[:16]}"
            chunk.candidates.append(_candidate(item, pair, row_id, split, digests, image_key, options))
            records.append(render_orders(item, pair, row_id, options, with_images=batch.images is None))
            image_rows.append(index)
    if records:
        chunk.candidates, chunk.table = _train_first(chunk.candidates, records, image_rows, batch.images, options)
    return chunk


def check(item: Example | Reject, options: BuildOptions) -> tuple[Example | Reject, list[str]]:
    """The row, or the Reject it becomes (text that cannot be written, an image that fails its
    check), with the digests of its image bytes (for dedup and the split key)."""
    if isinstance(item, Reject):
        return item, []
    if problem := _text_problem(item):
        return Reject(item.source, item.source_id, *problem), []
    for data, _ in item.images:
        if not isinstance(data, bytes):  # e.g. an Image struct whose `bytes` were stored as a string
            return Reject(item.source, item.source_id, RejectReason.ROW_MALFORMED,
                          f"image bytes are a {type(data).__name__}, not bytes"), []
        if problem := check_image(data, options.max_image_pixels, options.image_check):
            return Reject(item.source, item.source_id, *problem), []
    return item, [image_digest(data) for data, _ in item.images]


def _text_problem(item: Example) -> tuple[RejectReason, str] | None:
    """Text that cannot be written as UTF-8: a lone surrogate, which a JSON `\\ud800` escape
    decodes to (it would fail hashing and writing)."""
    texts = [("id", item.source_id), ("question", item.question), *(("image name", name) for _, name in item.images if name)]
    texts += [("response", text) for pair in item.pairs for text in (pair.better, pair.worse)]
    for where, text in texts:
        if not text.isascii():  # the cheap test first: almost all text is ASCII
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as error:
                return RejectReason.TEXT_UNENCODABLE, f"the {where} holds {text[error.start]!r}, a lone surrogate"
    return None


def _candidate(item: Example, pair: Pair, row_id: str, split: str, digests: list[str], image_key: bytes | None,
               options: BuildOptions) -> Candidate:
    key = digest(*digests, item.question, *sorted((pair.better, pair.worse)))
    # a pair re-published by a later source is found by content (duplicates.py)
    content = (text_key(item.question, pair.better, pair.worse), image_key) if len(options.sources) > 1 else None
    longer = 0 if pair.tie else (len(pair.better) > len(pair.worse)) - (len(pair.better) < len(pair.worse))
    return Candidate(item.source, key, split, unit(options.seed, "order", row_id), pair.tie, item.origin, content, longer)


def render_orders(item: Example, pair: Pair, row_id: str, options: BuildOptions, with_images: bool) -> dict:
    """The output columns of a pair, those that depend on the presented order twice; without
    `with_images` the image column is left for the reader's Arrow images."""
    features, convert = FORMATS[options.format]
    template = options.template()
    # the texts are clean (builders/text.py left no chat-control marker): the template is filled as is
    bodies = [TEMPLATES[template].format(question=item.question, response_1=first, response_2=second).strip()
              for first, second in ((pair.better, pair.worse), (pair.worse, pair.better))]
    better_first = {
        "id": row_id,
        "source": item.source,
        "source_id": item.source_id,
        "images": [{"bytes": data, "path": name} for data, name in item.images],
        "prompt": conversational_prompt(with_instruction(bodies[0]), len(item.images)),
        "question": item.question,
        "response_1": pair.better,
        "response_2": pair.worse,
        "answer": "1",
        "margin": pair.margin,
        "template": template,
    }
    validate_row(better_first)  # a failure here is a bug in a builder, not the user's input (the other
    # order holds the same values, swapped)
    worse_first = {**better_first, "response_1": pair.worse, "response_2": pair.better, "answer": "2",
                   "prompt": conversational_prompt(with_instruction(bodies[1]), len(item.images))}
    ordered = [convert(row, body) if convert else row for row, body in zip((better_first, worse_first), bodies)]
    record = {}
    for column in features:
        if column == "answer" or (column == _image_column(options.format) and not with_images):
            continue
        if ordered[0][column] == ordered[1][column]:
            record[column] = ordered[0][column]
        else:
            record[column + ORDERED[0]], record[column + ORDERED[1]] = ordered[0][column], ordered[1][column]
    return record


def _train_first(candidates: list[Candidate], records: list[dict], image_rows: list[int], images: pa.Array | None,
                 options: BuildOptions) -> tuple[list[Candidate], pa.Table]:
    """The candidates and their table, train first, then test, each in input order. (Labels are
    paired and duplicates found per split: a duplicate pair has the same image and question,
    hence the same split.)"""
    order = sorted(range(len(candidates)), key=lambda i: candidates[i].split != "train")
    table = _candidate_table([records[i] for i in order], options.format)
    if images is not None:
        column = _image_column(options.format)
        taken = images.take(pa.array([image_rows[i] for i in order], pa.int64()))
        if column == "image":  # one image per row (every source has one): the struct itself
            taken = pc.list_flatten(taken)
        table = table.append_column(column, taken.cast(schema(options.format).field(column).type))
    return [candidates[i] for i in order], table


@cache
def schema(output_format: str) -> pa.Schema:
    return FORMATS[output_format][0].arrow_schema


def _image_column(output_format: str) -> str:
    return "images" if "images" in FORMATS[output_format][0] else "image"


def _candidate_table(records: list[dict], output_format: str) -> pa.Table:
    fields = []
    for column in schema(output_format):
        if column.name in records[0]:
            fields.append(column)
        elif column.name + ORDERED[0] in records[0]:
            fields += [column.with_name(column.name + suffix) for suffix in ORDERED]
    return pa.Table.from_pylist(records, schema=pa.schema(fields))


def presented(table: pa.Table, picked: list[int], answers: list[str], output_schema: pa.Schema) -> pa.Table:
    """Candidates `picked` (indices) of a chunk's table in the output schema, each in the
    presented order its answer names ("1": the better response first)."""
    # Most of the table in one run of rows (train, usually): a slice, no copy. A few rows are
    # copied out instead: a slice would hold the whole table in memory until they are written.
    if picked[-1] - picked[0] + 1 == len(picked) and 2 * len(picked) >= table.num_rows:
        table = table.slice(picked[0], len(picked))
    else:
        table = table.take(pa.array(picked, pa.int64()))
    answer = pa.array(answers, pa.string())
    second_first = pc.equal(answer, "2")
    columns = []
    for column in output_schema:
        if column.name == "answer":
            columns.append(answer)
        elif column.name in table.column_names:
            columns.append(table[column.name])
        else:
            first, second = (table[column.name + suffix] for suffix in ORDERED)
            columns.append(pc.if_else(second_first, second, first))
    return pa.Table.from_arrays(columns, schema=output_schema)
