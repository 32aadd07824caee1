"""Generate a VLFeedback-shaped snapshot of any size, for benchmarks.

    python benchmarks/make_snapshot.py --rows 40000 --out /tmp/vlf-40k [--layout jsonl]

Layouts as on the Hub: `data/train-NNNNN-of-MMMMM.parquet` (completions as a struct of
lists, the image embedded; the default), or `vlfeedback_80k.jsonl` with `merged_images.zip`.
Text lengths follow VLFeedback's: a one-line to one-paragraph prompt, four responses of
~60-250 words, a one-to-three sentence rationale per aspect.
Images are real JPEGs of varied content at 400-800 px (about 30-90 KB, like the source's
~50 KB average). Encoding 160k distinct JPEGs would dominate the run, so a pool of a few
hundred encoded images is made once and each row's copy gets a unique JPEG comment
segment: every row's bytes (and hash) differ, and decoding costs the same.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import struct
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFilter

ASPECTS = ("Helpfulness", "Ethical Considerations", "Visual Faithfulness")
WORDS = ("the image shows a person standing near window table chair dog cat street car tree sky cloud "
         "building sign text colour red blue green yellow white black small large left right background "
         "foreground there are several objects including which appears to be in a room outdoors scene with "
         "light shadow detail notably visible clearly possibly holding wearing looking at").split()
ROWS_PER_SHARD = 5000


_CORPUS = [w.capitalize() if i % 14 == 0 else w + "." if i % 14 == 13 else w
           for i, w in enumerate(random.Random(1).choices(WORDS, k=200_000))]


def _paragraph(rng: random.Random, low: int, high: int) -> str:
    """A random slice of a fixed word stream: varied text at the cost of one join."""
    n = rng.randint(low, high)
    start = rng.randrange(len(_CORPUS) - n)
    return " ".join(_CORPUS[start : start + n])


IMAGE_SIZES = {  # --image-size: "realistic" is VLFeedback's ~50 KB JPEGs, "small" text-heavy rows (~1-2 KB)
    "realistic": [(640, 480), (800, 600), (512, 512), (480, 640), (400, 300)],
    "small": [(64, 48), (80, 60), (48, 48), (48, 64), (40, 30)],
}


def image_pool(size: int, seed: int = 0, image_size: str = "realistic") -> list[bytes]:
    rng = random.Random(seed)
    pool = []
    for _ in range(size):
        w, h = rng.choice(IMAGE_SIZES[image_size])
        image = Image.new("RGB", (w, h), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(10, 40)):
            x, y = rng.randrange(w), rng.randrange(h)
            box = (x, y, x + rng.randint(10, w // 2), y + rng.randint(10, h // 2))
            fill = tuple(rng.randrange(256) for _ in range(3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
        noise = Image.effect_noise((w, h), rng.randint(20, 60)).convert("RGB")
        image = Image.blend(image, noise, 0.25).filter(ImageFilter.SMOOTH)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=rng.randint(80, 92))
        pool.append(buffer.getvalue())
    return pool


def unique_copy(jpeg: bytes, tag: str) -> bytes:
    """The same JPEG with a COM segment naming `tag` after the SOI marker."""
    comment = tag.encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + jpeg[2:]


def make_row(rng: random.Random, index: int, pool: list[bytes]) -> dict:
    responses, annotations = [], []
    for _ in range(4):
        responses.append(_paragraph(rng, 60, 250))
        annotations.append({aspect: {"Rating": str(rng.randint(1, 5)) if rng.random() > 0.01 else "N/A",
                                     "Rationale": _paragraph(rng, 15, 50)} for aspect in ASPECTS})
    row_id = f"svit-detail-{index}"
    return {
        "id": row_id,
        "prompt": _paragraph(rng, 6, 60),
        "models": ["gpt-4v", "llava-v1.5-13b", "qwen-vl-chat", "instructblip"],
        "completions": {"annotations": annotations,
                        "model": ["gpt-4v", "llava-v1.5-13b", "qwen-vl-chat", "instructblip"],
                        "response": responses},
        "image": {"bytes": unique_copy(pool[index % len(pool)], row_id), "path": f"{row_id}.jpg"},
    }


def write_snapshot(out: Path, rows: int, seed: int = 0, pool_size: int = 256, layout: str = "parquet",
                   image_size: str = "realistic") -> None:
    pool = image_pool(pool_size, seed, image_size)
    if layout == "jsonl":
        return write_jsonl_snapshot(out, rows, random.Random(seed), pool)
    shards = max(1, -(-rows // ROWS_PER_SHARD))
    (out / "data").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for shard in range(shards):
        start, stop = shard * ROWS_PER_SHARD, min(rows, (shard + 1) * ROWS_PER_SHARD)
        path = out / "data" / f"train-{shard:05d}-of-{shards:05d}.parquet"
        with pq.ParquetWriter(path, _schema()) as writer:
            for batch_start in range(start, stop, 500):
                batch = [make_row(rng, i, pool) for i in range(batch_start, min(stop, batch_start + 500))]
                writer.write_table(pa.Table.from_pylist(batch, schema=_schema()), row_group_size=100)


def write_jsonl_snapshot(out: Path, rows: int, rng: random.Random, pool: list[bytes]) -> None:
    """The other Hub layout: `vlfeedback_80k.jsonl` (completions as a list of dicts) and
    `merged_images.zip` holding `merged_images/<id>.jpg` (deflated, as `zip` leaves JPEGs)."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "vlfeedback_80k.jsonl").open("w", encoding="utf-8") as lines, \
            zipfile.ZipFile(out / "merged_images.zip", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as images:
        for index in range(rows):
            row = make_row(rng, index, pool)
            image = row.pop("image")
            completions = row["completions"]
            row["completions"] = [{"annotations": a, "model": m, "response": r} for a, m, r in
                                  zip(completions["annotations"], completions["model"], completions["response"])]
            lines.write(json.dumps(row) + "\n")
            images.writestr(f"merged_images/{row['id']}.jpg", image["bytes"])


def _schema() -> pa.Schema:
    rating = pa.struct([("Rating", pa.string()), ("Rationale", pa.string())])
    return pa.schema([
        ("id", pa.string()), ("prompt", pa.string()), ("models", pa.list_(pa.string())),
        ("completions", pa.struct([("annotations", pa.list_(pa.struct([(a, rating) for a in ASPECTS]))),
                                   ("model", pa.list_(pa.string())), ("response", pa.list_(pa.string()))])),
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
    ])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layout", choices=("parquet", "jsonl"), default="parquet")
    parser.add_argument("--image-size", choices=tuple(IMAGE_SIZES), default="realistic")
    args = parser.parse_args()
    write_snapshot(args.out, args.rows, args.seed, layout=args.layout, image_size=args.image_size)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.rows} rows, {size / 1e9:.2f} GB to {args.out}")
