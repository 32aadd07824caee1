"""Miniature critic benchmarks on disk, in the layouts `critic-data eval` reads, whose items copy
some training rows: re-encoded at another JPEG quality or resized, the question re-spaced, re-cased,
written in full-width letters or behind an `<image>` placeholder; beside them unrelated items, an
image-only copy (same image, another question) and a damaged image.

`contamination_case()` gives the training rows, the benchmark items and the verdict each training
row must get; `write_vl_rewardbench` and `write_mm_rlhf` lay the items out as the Hub repos do.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFilter

SIZES = [(320, 240), (400, 300), (256, 256), (240, 320), (300, 200)]


def photo(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """Shapes over a coloured ground with grain, softened: content like a photo's at JPEG's cost."""
    rng = random.Random(seed)
    width, height = size
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(10, 40)):
        x, y = rng.randrange(width), rng.randrange(height)
        box = (x, y, x + rng.randint(10, width // 2), y + rng.randint(10, height // 2))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=tuple(rng.randrange(256) for _ in range(3)))
    grain = Image.effect_noise(size, rng.randint(20, 60)).convert("RGB")
    return Image.blend(image, grain, 0.25).filter(ImageFilter.SMOOTH)


def encoded(image: Image.Image, quality: int = 85, kind: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kind, **({"quality": quality} if kind == "JPEG" else {}))
    return buffer.getvalue()


def resized(image: Image.Image, scale: float) -> Image.Image:
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)


def full_width(text: str) -> str:
    """ASCII letters and digits as their full-width forms (U+FF01..): NFKC folds them back."""
    return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in text)


@dataclass
class Case:
    training: list[tuple[str, bytes]] = field(default_factory=list)  # (question, image) per training row
    items: list[tuple[str, str, bytes]] = field(default_factory=list)  # (id, question, image) per benchmark row
    # training row -> (kind, benchmark item id) it must be matched to; image-only near-duplicates apart:
    # only the near-duplicate search finds them
    expected: dict[int, tuple[str, str]] = field(default_factory=dict)
    near_image_only: dict[int, tuple[str, str]] = field(default_factory=dict)
    damaged: int = 0


def contamination_case(unrelated: int = 16) -> Case:
    """Sixteen training rows: eleven with an image copied into the benchmark (eight of them with their
    question too), two more whose question only is there (one beside a damaged image)."""
    case = Case()
    images = [photo(seed, SIZES[seed % len(SIZES)]) for seed in range(16)]
    questions = [f"What is shown in picture number {k}, and what colour is its largest shape?" for k in range(16)]
    case.training = [(question, encoded(image)) for question, image in zip(questions, images)]
    copies = [  # (training row, the benchmark's question, its image): each a copy of that row
        (0, questions[0], encoded(images[0], 60)),
        (1, "  " + questions[1].replace(" ", "   ").replace(", ", ",\n") + " ", encoded(resized(images[1], 0.5))),
        (2, questions[2].upper(), encoded(resized(images[2], 0.75), 40)),
        (3, full_width(questions[3]), encoded(resized(images[3], 1.5))),
        (4, "<image>\n" + questions[4], encoded(images[4], 95)),
        (5, questions[5].title(), case.training[5][1]),  # identical bytes
        (6, "\u3000" + questions[6].swapcase() + "\t", encoded(resized(images[6], 0.33), 70)),
        (7, questions[7], encoded(resized(images[7], 0.5), kind="PNG")),  # the benchmark stores a PNG
    ]
    for row, question, image in copies:
        case.items.append((f"copy-{row}", question, image))
        case.expected[row] = ("contaminated", f"copy-{row}")
    # the same image under another question: by identical bytes always, by near-duplicate on request
    case.items.append(("image-only-exact", "How many shapes are there?", case.training[8][1]))
    case.expected[8] = ("image_only", "image-only-exact")
    case.items.append(("image-only-near", "Is this a photograph?", encoded(resized(images[9], 0.5), 50)))
    case.near_image_only[9] = ("image_only", "image-only-near")
    # the same question with another image (row 10): clean; a question one word apart with a
    # re-encoded image (row 11): an image-only match, not a contaminated one
    case.items.append(("question-only", questions[10], encoded(photo(1000, SIZES[0]))))
    case.items.append(("similar-question", questions[11].replace("largest", "smallest"), encoded(images[11], 60)))
    case.near_image_only[11] = ("image_only", "similar-question")
    for k in range(unrelated):
        size = SIZES[k % len(SIZES)]
        case.items.append((f"unrelated-{k}", f"Describe scene {k} in one sentence.", encoded(photo(2000 + k, size))))
    good = case.training[12][1]
    case.items.append(("damaged", questions[12], good[: len(good) // 2]))  # cut short: no end-of-image marker
    case.damaged = 1
    return case


def write_vl_rewardbench(folder: Path, items: list[tuple[str, str, bytes]]) -> Path:
    """MMInstruction/VL-RewardBench as `hf download` leaves it: data/test-00000-of-00001.parquet."""
    rows = [{"id": item_id, "query": question, "response": ["The first answer.", "The second answer."],
             "image": {"bytes": image, "path": f"{item_id}.jpg"}, "human_ranking": [0, 1],
             "models": ["model-a", "model-b"], "judge": "human", "rationale": "", "query_source": "vlfeedback",
             "ground_truth": ""} for item_id, question, image in items]
    (folder / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "data" / "test-00000-of-00001.parquet")
    return folder


def write_mm_rlhf(folder: Path, items: list[tuple[str, str, bytes]]) -> Path:
    """yifanzhang114/MM-RLHF-RewardBench: mm_reward_bench.jsonl, its images under images/."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for item_id, question, image in items:
        (folder / "images" / f"{item_id}.jpg").write_bytes(image)
        lines.append({"id": item_id, "image": f"{item_id}.jpg", "prompt": question, "chosen": "Good.",
                      "rejected": "Bad.", "chosen_reason": "", "rejected_reason": ""})
    (folder / "mm_reward_bench.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder
