"""What a built dataset teaches, in figures: computed here, printed by `critic-data inspect`,
rendered into the dataset card (the charts of them: charts.py).

Every figure comes from the data files and the manifest (build.json), never from memory of
the build, and polars does the counting: the text columns of the shards are scanned lazily
(`pl.scan_parquet` with a projection, so the `images` column is never read by polars) and
aggregated with group_by/agg. Images are measured from their headers only: pyarrow reads the
image column one row group at a time and Pillow's `Image.open(...).size` parses a header
without decoding a pixel.

The figures (`dataset_statistics`):
- rows per source and split, with the label balance ("1", "2") and ties;
- the margin histogram of scored sources (VLFeedback's mean-rating gap; ties left out);
- length bias per source: the share of pairs whose better response (response_1 when answer is
  "1", response_2 when "2"; ties left out) is the longer one, and the better/worse length
  ratio (median and quartiles), in characters (`length_bias` also serves token counts);
- duplicates dropped (build.json) and rejects by reason (build.json's counts, one example per
  reason from rejects.jsonl when the folder has it);
- image sizes and images per row.
The `--format easyr1` layout has no responses and no margin: those figures are None there.
`card_statistics` is the part the dataset card shows (rows and labels, margins, length bias,
and one example row): `build` counts it from the shards it wrote, `push` from the shards it checked.

This module knows files and the manifest only (`critic_data.manifest`, no builders/ or rl/
import): a caller hands it a local folder (a Hub dataset is downloaded first).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from critic_data import UserError
from critic_data.manifest import Manifest, read_manifest
from critic_data.schemas import IMAGE_PLACEHOLDER

MARGIN_EDGES = [0.5 * k for k in range(9)]  # 0, 0.5, ..., 4.0: VLFeedback's ratings are 1-5, gaps at most 4
RATIO_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
_REJECT_SCHEMA = {"source": pl.String, "source_id": pl.String, "reason": pl.String, "detail": pl.String}


def split_files(folder: Path, manifest: Manifest) -> dict[str, list[Path]]:
    """The shards of each non-empty split, as build.json lists them (in order)."""
    files = {}
    for split, entry in manifest.splits.items():
        paths = [folder / name for name in entry.files]
        missing = [str(path) for path in paths if not path.is_file()]  # a FIFO is never opened
        if missing:
            raise UserError(f"{missing[0]} is listed in build.json but missing or not a regular file; download or "
                            "rebuild the whole folder")
        if paths:
            files[split] = paths
    if not files:
        raise UserError(f"{folder} holds no rows (every split is empty); check its rejects.jsonl")
    return files


def scan_text(files: dict[str, list[Path]], columns: list[str]) -> pl.LazyFrame:
    """The text columns of every split as one lazy frame with a `split` column; images are not read."""
    # glob=False: a folder named "runs[1]" or "run*" is a name, not a pattern matching other files
    return pl.concat([pl.scan_parquet(paths, glob=False).select(columns).with_columns(split=pl.lit(split))
                      for split, paths in files.items()])


def ordered(column: str, order: list[str]) -> pl.Expr:
    """A sort key putting `column`'s values in `order` (build order: sources, then splits), others last."""
    return pl.col(column).replace_strict({name: i for i, name in enumerate(order)}, default=len(order),
                                         return_dtype=pl.Int64)


def histogram(frame: pl.LazyFrame, column: str, edges: list[float], by: str = "source") -> dict:
    """Counts of `column` per `by` value in the bins [edges[i], edges[i+1]), the last bin open-ended:
    {"edges": edges, "counts": {value: [count per bin]}}."""
    index = pl.sum_horizontal(*(pl.col(column) >= edge for edge in edges[1:])).alias("bin")
    counted = (frame.filter(pl.col(column).is_not_null()).group_by(by, index).agg(pl.len())
               .collect().sort(by, "bin"))
    counts: dict[str, list[int]] = {}
    for group in counted.partition_by(by, as_dict=False):
        bins = [0] * len(edges)
        for slot, count in zip(group["bin"], group["len"]):
            bins[slot] = count
        counts[group[by][0]] = bins
    return {"edges": edges, "counts": counts}


def better_and_worse(frame: pl.LazyFrame, first: pl.Expr, second: pl.Expr, *keep: str) -> pl.LazyFrame:
    """The labelled pairs (ties left out) as `source`, `better`, `worse` (and `keep`): `first` and
    `second` measure response_1 and response_2; the better one is response_1 when answer is "1"."""
    one = pl.col("answer") == "1"
    return (frame.filter(pl.col("answer").is_in(["1", "2"]))
            .select("source", *keep, better=pl.when(one).then(first).otherwise(second),
                    worse=pl.when(one).then(second).otherwise(first)))


def length_bias(pairs: pl.LazyFrame, order: list[str]) -> list[dict]:
    """Per source, from a frame of `source`, `better`, `worse` (lengths in any unit, ties left out):
    how many pairs, the share whose better response is longer (equal lengths are not), and the
    better/worse ratio's median and quantiles (RATIO_QUANTILES)."""
    ratio = pl.col("better") / pl.col("worse")
    table = (pairs.group_by("source")
             .agg(pairs=pl.len(), better_longer=(pl.col("better") > pl.col("worse")).sum(),
                  worse_longer=(pl.col("better") < pl.col("worse")).sum(),
                  median_ratio=ratio.median(),
                  quantiles=pl.concat_list(ratio.quantile(q, interpolation="linear") for q in RATIO_QUANTILES))
             .with_columns(better_longer_share=pl.col("better_longer") / pl.col("pairs"))
             .collect())
    return table.sort(ordered("source", order)).to_dicts()


def rows_and_labels(frame: pl.LazyFrame, sources: list[str], splits: list[str]) -> list[dict]:
    """Rows per source and split, with how many are labelled "1", "2" and "tie"."""
    table = (frame.group_by("source", "split")
             .agg(rows=pl.len(), **{f"answer_{label}": (pl.col("answer") == label).sum() for label in ("1", "2")},
                  ties=(pl.col("answer") == "tie").sum())
             .collect())
    return table.sort(ordered("source", sources), ordered("split", splits)).to_dicts()


def rejects(folder: Path, manifest: Manifest) -> list[dict]:
    """Rejects per source and reason (build.json's counts), each with the first example in
    rejects.jsonl (absent when the folder came from the Hub without it)."""
    counts = pl.DataFrame([{"source": name, "reason": reason, "count": count}
                           for name, stats in manifest.sources.items()
                           for reason, count in stats.rejects_by_reason.items()],
                          schema={"source": pl.String, "reason": pl.String, "count": pl.Int64})
    path = folder / "rejects.jsonl"
    if not path.is_file():
        return counts.with_columns(example_id=pl.lit(None, pl.String),
                                   example_detail=pl.lit(None, pl.String)).to_dicts()
    try:
        with path.open("rb") as handle:  # a path would be read as a glob pattern ("run*" matching other folders)
            examples = (pl.scan_ndjson(handle, schema=_REJECT_SCHEMA)
                        .group_by("source", "reason", maintain_order=True)
                        .agg(example_id=pl.first("source_id"), example_detail=pl.first("detail"))
                        .collect())
    except pl.exceptions.PolarsError as error:
        raise UserError(f"{path} does not read as JSON lines ({' '.join(str(error).split())[:120]}); "
                        "rebuild the dataset") from None
    return counts.join(examples, on=["source", "reason"], how="left", maintain_order="left").to_dicts()


def duplicates(manifest: Manifest) -> list[dict]:
    """Pairs dropped as duplicates per source, and which source kept the copy (build.json)."""
    return [{"source": name, "dropped": stats.counts.duplicates_dropped, "of": stats.duplicates_of}
            for name, stats in manifest.sources.items()]


def image_statistics(files: list[Path], column: str) -> dict:
    """Images per row and image sizes, from headers only.

    `column` is `images` (a list per row, TRL layout) or `image` (one per row, easyr1). A row
    group at a time is read; Pillow's `Image.open` parses the header and `.size` needs nothing
    more, so no pixel is ever decoded (`.load()` is never called).
    """
    from PIL import Image

    widths, heights, per_row, unreadable = [], [], [], 0
    for path in files:
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            images = parquet.read_row_group(group, columns=[column]).column(column).combine_chunks()
            if pa.types.is_list(images.type):
                per_row.append(pc.list_value_length(images))
                images = pc.list_flatten(images)
            else:
                per_row.append(pa.array([1] * len(images), pa.int32()))
            for data in pc.struct_field(images, "bytes"):
                try:
                    with Image.open(pa.BufferReader(data.as_buffer())) as opened:  # no copy of the bytes
                        width, height = opened.size
                except (OSError, ValueError, TypeError, Image.DecompressionBombError):  # TypeError: no bytes
                    unreadable += 1
                    continue
                widths.append(width)
                heights.append(height)
    counts = pl.Series("images", pa.chunked_array(per_row)).value_counts().sort("images")
    sizes = pl.DataFrame({"width": widths, "height": heights}, schema={"width": pl.Int64, "height": pl.Int64})
    summary = sizes.select(*(getattr(pl.col(side), stat)().alias(f"{side}_{stat}")
                             for side in ("width", "height") for stat in ("min", "median", "max")),
                           pixels_median=(pl.col("width") * pl.col("height")).median()).to_dicts()[0]
    return {"per_row": {str(n): count for n, count in counts.iter_rows()}, "images": len(widths),
            "unreadable": unreadable, **summary}


def dataset_statistics(folder: Path, manifest: Manifest | None = None) -> dict:
    """Every figure of a built dataset folder (see the module docstring), JSON-ready; a data file
    that does not read is one line naming the folder."""
    folder = Path(folder)
    manifest = manifest if manifest is not None else read_manifest(folder)
    with _reading(folder):
        files = split_files(folder, manifest)
        trl = manifest.format == "trl"
        return {"folder": str(folder), **_text_figures(manifest, files), "duplicates": duplicates(manifest),
                "rejects": rejects(folder, manifest),
                "images": image_statistics([p for paths in files.values() for p in paths], "images" if trl
                                           else "image")}


def card_statistics(folder: Path, manifest: dict) -> dict:
    """The figures a dataset card shows (rows and labels per source and split, margins, length
    bias) and its example row, from the shards' text columns alone: no image byte and no rejects.jsonl is read (a
    push reads no file of the folder but build.json and the shards it checked), and nothing in
    them depends on where the folder is (the card of a build is the same wherever it lies).
    `manifest` is what the card renders: build.json's content (the dict the build wrote, or
    `Manifest.raw` of the one push read), read through its type."""
    typed = Manifest.from_dict(manifest)
    with _reading(Path(folder)):
        files = split_files(Path(folder), typed)
        return {**_text_figures(typed, files), "example": example_row(files, typed)}


def example_row(files: dict[str, list[Path]], manifest: Manifest) -> dict:
    """The row a card shows as an example: the first of the first non-empty split (train before
    test, in build.json's order), so every card of the same shards shows the same row. `text` is
    what the model is shown: the prompt's user message, an image as `<image>`, then its text (the
    easyr1 layout's question, which starts with `<image>`); the TRL layout's `question`,
    `response_1` and `response_2` are the texts inside it."""
    trl = manifest.format == "trl"
    columns = ["id", "source", "source_id", "answer", "template", "question",
               *(["prompt", "response_1", "response_2", "margin"] if trl else [])]
    split, paths = next(iter(files.items()))
    row = scan_text({split: paths}, columns).head(1).collect().to_dicts()[0]
    if trl:
        row["text"] = "\n".join(IMAGE_PLACEHOLDER if part["type"] == "image" else part["text"] or ""
                                for message in row.pop("prompt") for part in message["content"])
    else:  # the question is the whole critic prompt
        row["text"], row["margin"] = row.pop("question"), None
    return row


@contextmanager
def _reading(folder: Path) -> Iterator[None]:
    try:
        yield
    except (pa.ArrowException, pl.exceptions.PolarsError, OSError) as error:
        raise UserError(f"a data file of {folder} does not read ({type(error).__name__}: "
                        f"{' '.join(str(error).split())[:160]}); download or rebuild the dataset") from None


def _text_figures(manifest: Manifest, files: dict[str, list[Path]]) -> dict:
    trl = manifest.format == "trl"
    sources, splits = list(manifest.sources), list(manifest.splits)
    columns = ["source", "answer"] + (["margin", "response_1", "response_2"] if trl else [])
    frame = scan_text(files, columns)
    statistics = {
        "format": manifest.format,
        "rows": rows_and_labels(frame, sources, splits),
        "margins": None,
        "length_bias": None,
    }
    if trl:
        # One pass over the responses: their lengths, then every figure from this narrow frame.
        pairs = better_and_worse(frame, pl.col("response_1").str.len_chars(), pl.col("response_2").str.len_chars(),
                                 "margin").collect().lazy()
        margins = histogram(pairs, "margin", MARGIN_EDGES)
        statistics["margins"] = {"edges": margins["edges"],
                                 "counts": {s: margins["counts"][s] for s in sources if s in margins["counts"]}}
        statistics["length_bias"] = length_bias(pairs, sources)
    return statistics
