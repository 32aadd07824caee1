"""Format-exact miniature snapshots of the sources, with the quirks of SOURCES.md planted.

Used by the tests, and by `python -m tests.snapshots sample/` to regenerate the bundled
sample that `make demo` builds.
"""

from __future__ import annotations

import io
import json
import random
import sys
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

ASPECTS = ("Helpfulness", "Ethical Considerations", "Visual Faithfulness")
SUBJECTS = ["a red bicycle", "two cats on a sofa", "a bowl of fruit", "a city street at night", "a mountain lake",
            "a bar chart of sales", "a handwritten note", "a kitchen counter", "a soccer match", "a train station"]
QUESTIONS = ["What is shown in the image?", "Describe the image in detail.", "How many objects can you count?",
             "What colour is the main object?", "Is anything unusual in this picture?"]


def jpeg(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A small JPEG whose content depends on the seed."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(6):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        image.paste(tuple(rng.randrange(256) for _ in range(3)), (x, y, min(size[0], x + 12), min(size[1], y + 9)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def corrupt_jpeg(seed: int) -> bytes:
    """A JPEG cut short: the header parses, the pixels do not."""
    data = jpeg(seed)
    return data[: len(data) // 2]


def _completion(rng: random.Random, subject: str, ratings: tuple, response: str | None = None) -> dict:
    response = response if response is not None else (
        f"The image shows {subject}. " + rng.choice(["It is clearly visible.", "The lighting is soft.",
                                                     "There are a few details in the background.", "Nothing else stands out."])
        + f" (variant {rng.randrange(10**6)})"
    )
    annotations = {
        aspect: {"Rating": str(r), "Rationale": f"RATIONALE-SECRET {aspect} judged {r} because of reasons."}
        for aspect, r in zip(ASPECTS, ratings)
    }
    return {"annotations": annotations, "model": rng.choice(["gpt-4v", "llava-v1.5-13b", "qwen-vl-chat", "fuyu-8b"]),
            "response": response}


def vlfeedback_rows(n: int, seed: int = 0, quirks: bool = True) -> list[dict]:
    """VLFeedback JSON-lines rows; with `quirks`, the planted faults listed in `QUIRKS`."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        subject = SUBJECTS[i % len(SUBJECTS)]
        ratings = [tuple(rng.randint(1, 5) for _ in ASPECTS) for _ in range(4)]
        completions = [_completion(rng, subject, r) for r in ratings]
        prompt = ("<image>\n" if i % 3 == 0 else "") + QUESTIONS[i % len(QUESTIONS)]
        rows.append({"id": f"svit-conversation-{1000 + i}", "prompt": prompt,
                     "models": [c["model"] for c in completions], "completions": completions})
    if quirks and n >= 12:
        # non-numeric ratings: only one completion keeps numeric ratings -> rating_unparsable
        for c in rows[1]["completions"][1:]:
            c["annotations"]["Helpfulness"]["Rating"] = "N/A"
        # empty responses: only one non-empty response -> empty_response
        for c in rows[2]["completions"][1:]:
            c["response"] = "   "
        # a full tie: every completion rated the same
        for c in rows[3]["completions"]:
            for aspect in ASPECTS:
                c["annotations"][aspect]["Rating"] = "4"
        # citation debris in a clearly better response
        rows[4]["completions"][0]["response"] = "A red bicycle leans on a wall【3†source】. It is new."
        for aspect in ASPECTS:
            rows[4]["completions"][0]["annotations"][aspect]["Rating"] = "5"
            rows[4]["completions"][1]["annotations"][aspect]["Rating"] = "1"
        # one numeric-as-int rating and one "N/A" on a single completion (row still usable)
        rows[5]["completions"][0]["annotations"]["Helpfulness"]["Rating"] = 3
        rows[5]["completions"][3]["annotations"]["Visual Faithfulness"]["Rating"] = "N/A"
        # a duplicate row under another id (same image bytes, see IMAGE_ALIASES)
        rows[7] = json.loads(json.dumps(rows[6]))
        rows[7]["id"] = "LRV-7"
    return rows


# Quirk rows: (index, what the build must do with it)
QUIRKS = {1: "reject rating_unparsable", 2: "reject empty_response", 3: "tie", 4: "debris", 5: "string ratings",
          6: "original", 7: "duplicate of 6", 8: "missing image", 9: "corrupt image"}
MISSING_IMAGE_ROW, CORRUPT_IMAGE_ROW, DUPLICATE_OF = 8, 9, {7: 6}


def _image_for(index: int, quirks: bool) -> bytes | None:
    if quirks and index == MISSING_IMAGE_ROW:
        return None
    if quirks and index == CORRUPT_IMAGE_ROW:
        return corrupt_jpeg(index)
    return jpeg(DUPLICATE_OF.get(index, index) if quirks else index)


def write_vlfeedback_jsonl(folder: Path, n: int = 24, seed: int = 0, quirks: bool = True, broken_lines: bool = True) -> list[dict]:
    """`vlfeedback_80k.jsonl` + `merged_images.zip` (`merged_images/<id>.jpg`)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = vlfeedback_rows(n, seed, quirks)
    with (folder / "vlfeedback_80k.jsonl").open("w") as handle:
        for i, row in enumerate(rows):
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            if quirks and broken_lines and i == 10:
                handle.write('{"id": "broken-1", "prompt": "unterminated\n')
    with zipfile.ZipFile(folder / "merged_images.zip", "w") as archive:
        for i, row in enumerate(rows):
            data = _image_for(i, quirks)
            if data is not None:
                archive.writestr(f"merged_images/{row['id']}.jpg", data)
    return rows


def write_vlfeedback_parquet(folder: Path, n: int = 24, seed: int = 0, quirks: bool = True, shards: int = 2) -> list[dict]:
    """The parquet copy: `data/train-0000K-of-0000N.parquet`, completions as a struct of lists."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    rows = vlfeedback_rows(n, seed, quirks)
    records = []
    for i, row in enumerate(rows):
        completions = row["completions"]
        data = _image_for(i, quirks)
        records.append({
            "id": row["id"],
            "prompt": row["prompt"],
            "models": row["models"],
            "completions": {
                "annotations": [{a: {"Rating": str(c["annotations"][a]["Rating"]), "Rationale": c["annotations"][a]["Rationale"]}
                                 for a in ASPECTS} for c in completions],
                "model": [c["model"] for c in completions],
                "response": [c["response"] for c in completions],
            },
            "image": None if data is None else {"bytes": data, "path": f"{row['id']}.jpg"},
        })
    per_shard = -(-len(records) // shards)
    for k in range(shards):
        chunk = records[k * per_shard:(k + 1) * per_shard]
        pq.write_table(pa.Table.from_pylist(chunk), folder / "data" / f"train-{k:05d}-of-{shards:05d}.parquet")
    return rows


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "sample")
    write_vlfeedback_jsonl(target / "vlfeedback", n=48, seed=7)
    print(f"wrote {target}/vlfeedback")
