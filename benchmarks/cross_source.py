"""Cross-source duplicate search when many pairs share one text: RLHF-V then LLaVA-Critic, N pairs each.

    python benchmarks/cross_source.py --pairs 2000 --workdir /tmp/critic-cross

Every pair of both sources has the same question and responses; the images decide. Three cases:
  distinct texts   every pair its own text (the usual case: the text key alone separates them)
  shared, apart    one text, every image different (no copy: each LLaVA-Critic pair is compared
                   with the RLHF-V pairs near it in brightness)
  shared, copies   one text, each LLaVA-Critic image a re-encoded RLHF-V image (every pair a copy)
Printed: each source's seconds (build.json's clock, one worker) and the duplicates found. Figures,
not asserts: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from critic_data.builders.options import BuildOptions
from critic_data.builders.pipeline import build


def picture(seed: int, quality: int = 80) -> bytes:
    """A 64x48 JPEG of coloured rectangles, fixed by the seed."""
    rng = random.Random(seed)
    image = Image.new("RGB", (64, 48), tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(6):
        x, y = rng.randrange(64), rng.randrange(48)
        image.paste(tuple(rng.randrange(256) for _ in range(3)), (x, y, min(64, x + 12), min(48, y + 9)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_sources(root: Path, pairs: int, shared: bool, copies: bool) -> dict[str, Path]:
    def text(i: int) -> tuple[str, str, str]:  # question, chosen, rejected
        if shared:
            return ("What is shown?", "A red bus.", "A cat.")
        return (f"What is shown {i}?", f"A bus {i}.", f"A cat {i}.")

    rlhf_v = [{"ds_name": "RLHF-V", "image": {"bytes": picture(i), "path": f"{i}.jpg"},
               "text": json.dumps(dict(zip(("question", "chosen", "rejected"), text(i)))), "origin_dataset": "OK-VQA",
               "origin_split": "{}", "idx": i, "image_path": f"{i}.jpg"} for i in range(pairs)]
    critic = []
    for i in range(pairs):
        question, chosen, rejected = text(i)
        prompt = (f"<image>\nJudge the two answers.\nQuestion: [{question}]\nThe first response: [{chosen}]\n"
                  f"The second response: [{rejected}]")
        image = picture(i, quality=60) if copies else picture(pairs + i)
        critic.append({"id": f"rlhf_v_{i}", "source": "rlhf_v", "image": {"bytes": image, "path": None},
                       "conversations": [{"from": "human", "value": prompt},
                                         {"from": "gpt", "value": "The better response: [first]"}]})
    (root / "rlhf_v").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rlhf_v), root / "rlhf_v" / "RLHF-V-Dataset.parquet")
    (root / "llava_critic" / "pairwise").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(critic), root / "llava_critic" / "pairwise" / "train-00000-of-00001.parquet")
    return {"rlhf_v": root / "rlhf_v", "llava_critic": root / "llava_critic"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/critic-cross"))
    args = parser.parse_args()
    for name, shared, copies in (("distinct texts", False, False), ("shared, apart", True, False),
                                 ("shared, copies", True, True)):
        root = args.workdir / name.replace(", ", "-").replace(" ", "-")
        shutil.rmtree(root, ignore_errors=True)
        inputs = write_sources(root, args.pairs, shared, copies)
        manifest = build(BuildOptions(out=root / "out", sources=tuple(inputs), inputs=inputs, num_proc=1))
        seconds = manifest["timings"]["sources_seconds"]
        found = manifest["sources"]["llava_critic"]["counts"]["duplicates_dropped"]
        print(f"{args.pairs}+{args.pairs} {name:15s} rlhf_v {seconds['rlhf_v']:7.2f} s   llava_critic "
              f"{seconds['llava_critic']:7.2f} s   duplicates {found}", flush=True)
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
