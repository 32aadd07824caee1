"""The steps a worker process runs on a batch of rows, in order:

    check (images, text) -> split -> offer pairs (keys) -> render the pairs' columns

Their output, a `Chunk`, holds the rows rejected, the counts, and one candidate per offered
pair with an Arrow table of its columns (`render`: built and validated column by column, the
images taken from the reader's Arrow column without a copy through Python). The responses stay
`better` and `worse` there: the ordered step (decide.py) picks each pair's presented order, and
layout.py then lays the kept rows out in it with their prompts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from critic_data.builders.decontaminate import question_key
from critic_data.builders.duplicates import content_key, thumbnail
from critic_data.builders.images import check_image
from critic_data.builders.keys import digest, image_digest, keyed_fraction
from critic_data.builders.options import BuildOptions
from critic_data.builders.readers import RowBatch
from critic_data.builders.records import Example, Pair
from critic_data.schemas import Reject, RejectReason, validate_columns


@dataclass
class Candidate:
    """What the ordered, single-threaded step needs to decide about one offered pair."""

    source: str
    key: str  # exact dedup key: image bytes, question, the two responses
    split: str
    order: float  # keyed hash deciding the presented order (first of a couple)
    tie: bool
    origin: str | None = None  # the dataset a re-judged pair comes from (counted per kept pair)
    # text key, the response it prefers, and image thumbnail (builds of several sources)
    content: tuple[int, int, bytes | None] | None = None
    longer: int = 0  # 1: the better response has more characters than the worse, -1: fewer, 0: as many, or a tie
    # the response the pair prefers, comparable between exact copies: 0 a tie, 1 the better one
    # sorts before the worse one, 2 after it (content copies compare `content_key`'s own)
    preferred: int = 1
    id: str = ""  # the row's id; the ordered step decides another for a pair whose id a kept pair has already
    # --decontaminate: the question as matching compares it, and the first image's digest (curation.py)
    probe: tuple[str, str] | None = None

    @property
    def key_id(self) -> str:
        """The id made from the pair's exact key: a kept pair's when its own `id` was taken (decide.py)."""
        return f"{self.source}-{self.key[:16]}"


@dataclass
class Chunk:
    """A batch of input rows, prepared. `candidates` and the rows of `table` are the offered
    pairs, train first, then test, each in input order (a split's rows are then usually one
    slice of the table). A worker hands the table over as an Arrow file (`spill`) that the
    build maps into memory (`reload`): image bytes are neither pickled nor copied again."""

    rejects: list[Reject]
    counts: Counter
    candidates: list[Candidate] = field(default_factory=list)
    table: pa.Table | None = None
    table_file: Path | None = None

    def spill(self, path: Path) -> None:
        if self.table is not None:
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, self.table.schema) as writer:
                writer.write_table(self.table)
            self.table, self.table_file = None, path

    def reload(self) -> pa.Table | None:
        if self.table_file is not None:
            # the mapping outlives the unlinked file for as long as the table's buffers do
            self.table = pa.ipc.open_file(pa.memory_map(str(self.table_file))).read_all()
            self.table_file.unlink()
            self.table_file = None
        return self.table


def prepare(batch: RowBatch, options: BuildOptions) -> Chunk:
    """Check every row of a batch, split it, and offer its pairs with their columns rendered."""
    chunk = Chunk(rejects=[], counts=Counter())
    offered = []  # (the row's index in the batch, the row, the pair, its id) of each offered pair
    filtered, notes, formed = Counter(), Counter(), 0  # over the used rows, added to the counts at the end
    for index, item in enumerate(batch.items):
        item, digests = check(item, options)
        if isinstance(item, Reject):
            chunk.rejects.append(item)
            continue
        formed += item.pairs_formed
        for rule, n in item.pairs_filtered.items():  # not Counter.update: a row's few counts cost it more
            filtered[rule] += n
        for name, n in item.notes.items():
            notes[name] += n
        # the split is the row's (image, question) group's: every pair of a row shares it
        split = "test" if keyed_fraction(options.seed, "split", *digests,
                                         item.question) < options.test_size else "train"
        image_key = thumbnail(item.images[0][0]) if len(options.sources) > 1 else None
        probe = (question_key(item.question), digests[0]) if options.decontaminate else None
        for pair in item.pairs:
            row_id = f"{item.source}-{digest(item.source_id, pair.better, pair.worse)[:16]}"
            candidate = _candidate(item, pair, row_id, split, digests, image_key, options)
            candidate.probe = probe
            chunk.candidates.append(candidate)
            offered.append((index, item, pair, row_id))
    chunk.counts.update({("rows", "read"): len(batch.items), ("rows", "used"): len(batch.items) - len(chunk.rejects),
                         ("pairs", "formed"): formed})
    chunk.counts.update(("rejected", str(reject.reason)) for reject in chunk.rejects)
    chunk.counts.update({("filtered", rule): n for rule, n in filtered.items()})
    chunk.counts.update({("note", name): n for name, n in notes.items()})
    if offered:
        # train first, then test, each in input order (labels are paired and duplicates found per
        # split: a duplicate pair has the same image and question, hence the same split)
        order = sorted(range(len(offered)), key=lambda i: chunk.candidates[i].split != "train")
        chunk.candidates = [chunk.candidates[i] for i in order]
        offered = [offered[i] for i in order]
        chunk.table = pa.concat_tables([render(offered[start:end], batch.images, options)
                                        for start, end in _text_bounded(offered)])
    return chunk


# text rendered into one Arrow array at most (a part's prompts, by layout.py): its offsets are 32-bit (2 GiB)
RENDER_TEXT_BYTES = 1 << 30


def _text_bounded(offered: list[tuple[int, Example, Pair, str]]) -> list[tuple[int, int]]:
    """Ranges of the offered pairs whose rendered text stays under RENDER_TEXT_BYTES (a row of 64
    completions of a megabyte each offers 2016 pairs of 2 MB: 4 GB of prompts). Counted at four
    bytes a character, the most UTF-8 takes, plus the template's text."""
    ranges, start, size = [], 0, 0
    for end, (_, item, pair, _) in enumerate(offered):
        pair_bytes = 4 * (len(item.question) + len(pair.better) + len(pair.worse) + 2048)
        if end > start and size + pair_bytes > RENDER_TEXT_BYTES:
            ranges.append((start, end))
            start, size = end, 0
        size += pair_bytes
    return ranges + [(start, len(offered))]


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
    texts = [("id", item.source_id), ("question", item.question),
             *(("image name", name) for _, name in item.images if name)]
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
    preferred = 0 if pair.tie else 1 if pair.better < pair.worse else 2
    # a pair re-published by a later source is found by content (duplicates.py)
    content = None
    if len(options.sources) > 1:
        content = (*content_key(item.question, pair.better, pair.worse, pair.tie), image_key)
    longer = 0 if pair.tie else (len(pair.better) > len(pair.worse)) - (len(pair.better) < len(pair.worse))
    return Candidate(item.source, key, split, keyed_fraction(options.seed, "order", row_id), pair.tie, item.origin,
                     content, longer,
                     preferred, row_id)


def render(offered: list[tuple[int, Example, Pair, str]], images: pa.Array | None, options: BuildOptions) -> pa.Table:
    """The columns of offered pairs that do not depend on the presented order, built column by
    column and validated (`better` and `worse` in place of the two responses). `images`: the
    batch's images as Arrow data, when its reader has them (else the rows' own bytes are used)."""
    question, better, worse, ids, sources, source_ids = (pa.array(values, pa.string()) for values in zip(
        *((item.question, pair.better, pair.worse, row_id, item.source, item.source_id)
          for _, item, pair, row_id in offered)))
    if images is not None:
        image_lists = images.take(pa.array([index for index, *_ in offered], pa.int64()))
    else:
        image_lists = pa.array([[{"bytes": data, "path": name} for data, name in item.images]
                                for _, item, _, _ in offered],
                               _IMAGE_LISTS)
    columns = {"id": ids, "source": sources, "source_id": source_ids, "images": image_lists, "question": question,
               "better": better, "worse": worse,
               "margin": pa.array([pair.margin for _, _, pair, _ in offered], pa.float64()),
               "template": pa.repeat(pa.scalar(options.template()), len(offered))}
    # a failure is a bug in a builder, not the user's input
    validate_columns({**columns, "response_1": better, "response_2": worse})
    if options.format == "easyr1":  # what the fork reads: one image
        if not pc.all(pc.equal(pc.list_value_length(image_lists), 1)).as_py():
            raise ValueError("the easyr1 layout holds one image per row")
        columns["images"] = pc.list_flatten(image_lists)
    return pa.table(columns)


_IMAGE_LISTS = pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
