"""Format-exact miniature snapshots of the sources, with their known quirks planted; and each
source's Hub repository as it is laid out today, files the build does not read included
(`write_*_repo`), for the tests that fetch from a local Hub.

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
                                                     "There are a few details in the background.",
                                                     "Nothing else stands out."])
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


def write_vlfeedback_jsonl(folder: Path, n: int = 24, seed: int = 0, quirks: bool = True,
                           broken_lines: bool = True) -> list[dict]:
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


def write_vlfeedback_parquet(folder: Path, n: int = 24, seed: int = 0, quirks: bool = True,
                             shards: int = 2) -> list[dict]:
    """The parquet copy: `data/train-0000K-of-0000N.parquet`, completions as a struct of lists."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    rows = vlfeedback_rows(n, seed, quirks)
    records = _vlfeedback_records(rows, quirks)
    per_shard = -(-len(records) // shards)
    for k in range(shards):
        chunk = records[k * per_shard:(k + 1) * per_shard]
        pq.write_table(pa.Table.from_pylist(chunk), folder / "data" / f"train-{k:05d}-of-{shards:05d}.parquet",
                       # several row groups: parts of several groups when ROWS_PER_BATCH is patched low
                       row_group_size=5)
    return rows


def write_vlfeedback_converted(folder: Path, n: int = 24, seed: int = 0, shards: int = 2,
                               image_column: str = "img_path",
                               image=None) -> list[dict]:
    """The Hub's parquet conversion of VLFeedback (revision `refs/convert/parquet`):
    `default/train/NNNN.parquet`, the image in the loading script's `img_path` Image column.
    `image(index, value)`, when given, turns a row's Image struct (None: no image) into the
    column's value: a type the conversion might have given it (a path string, raw bytes)."""
    (folder / "default" / "train").mkdir(parents=True, exist_ok=True)
    rows = vlfeedback_rows(n, seed, quirks=True)
    records = _vlfeedback_records(rows, quirks=True)
    for index, record in enumerate(records):
        value = record.pop("image")
        record[image_column] = value if image is None else image(index, value)
    per_shard = -(-len(records) // shards)
    for k in range(shards):
        pq.write_table(pa.Table.from_pylist(records[k * per_shard:(k + 1) * per_shard]),
                       folder / "default" / "train" / f"{k:04d}.parquet", row_group_size=5)
    return rows


def write_vlfeedback_repo(folder: Path, n: int = 24, seed: int = 0) -> list[dict]:
    """MMInstruction/VLFeedback's main branch: `vlfeedback_80k.jsonl`, `merged_images.zip`, and
    what the build does not read: `instruction_source.jsonl`, the loading script, the card."""
    rows = write_vlfeedback_jsonl(folder, n, seed)
    with (folder / "instruction_source.jsonl").open("w") as handle:
        for row in rows:
            handle.write(json.dumps({"id": row["id"], "source": row["id"].rsplit("-", 1)[0]}) + "\n")
    (folder / "VLFeedback.py").write_text(
        'import datasets\n\n\nclass VLFeedback(datasets.GeneratorBasedBuilder):\n'
        '    """Yields id, prompt, models, completions and the image as img_path."""\n')
    _write_repo_card(folder, "VLFeedback")
    return rows


def _write_repo_card(folder: Path, title: str) -> None:
    """The README.md and .gitattributes every Hub repository holds."""
    (folder / "README.md").write_text(f"---\nlicense: other\n---\n# {title}\n")
    (folder / ".gitattributes").write_text("*.parquet filter=lfs diff=lfs merge=lfs -text\n")


def _vlfeedback_records(rows: list[dict], quirks: bool) -> list[dict]:
    """Rows as the parquet copies store them: completions as a struct of lists, the image embedded."""
    records = []
    for i, row in enumerate(rows):
        completions = row["completions"]
        data = _image_for(i, quirks)
        records.append({
            "id": row["id"],
            "prompt": row["prompt"],
            "models": row["models"],
            "completions": {
                "annotations": [{a: {"Rating": str(c["annotations"][a]["Rating"]),
                                     "Rationale": c["annotations"][a]["Rationale"]}
                                 for a in ASPECTS} for c in completions],
                "model": [c["model"] for c in completions],
                "response": [c["response"] for c in completions],
            },
            "image": None if data is None else {"bytes": data, "path": f"{row['id']}.jpg"},
        })
    return records




# --- RLHF-V -------------------------------------------------------------------------------

def rlhf_v_texts(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"question": ("<image>\n" if i % 2 else "") + QUESTIONS[i % len(QUESTIONS)] + f" (#{i})",
             "chosen": f"The image shows {SUBJECTS[i % len(SUBJECTS)]}. Corrected detail {rng.randrange(10**6)}.",
             "rejected": f"The image shows {SUBJECTS[(i + 3) % len(SUBJECTS)]}. Hallucinated detail "
                         f"{rng.randrange(10**6)}."}
            for i in range(n)]


RLHF_V_FAULTS = {1: "json_invalid", 2: "identical_responses", 3: "image_undecodable", 4: "image_missing",
                 5: "row_malformed"}


def write_rlhf_v(folder: Path, n: int = 12, seed: int = 0) -> list[dict]:
    """`RLHF-V-Dataset.parquet` at the repo root; faults at the rows of RLHF_V_FAULTS."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = rlhf_v_texts(n, seed)
    records = []
    for i, text in enumerate(texts):
        body = json.dumps(text)
        image = {"bytes": jpeg(100 + i), "path": f"rlhf-v/{i}.jpg"}
        if i == 1:
            body = body[:-5]
        elif i == 2:
            body = json.dumps({**text, "rejected": text["chosen"]})
        elif i == 3:
            image = {"bytes": corrupt_jpeg(100 + i), "path": f"rlhf-v/{i}.jpg"}
        elif i == 4:
            image = None
        elif i == 5:
            body = json.dumps({"question": text["question"], "chosen": text["chosen"]})
        records.append({"ds_name": "RLHF-V", "image": image, "text": body, "origin_dataset": "OK-VQA",
                        "origin_split": json.dumps({"model": "muffin"}), "idx": 5000 + i,
                        "image_path": f"rlhf-v/{i}.jpg"})
    pq.write_table(pa.Table.from_pylist(records), folder / "RLHF-V-Dataset.parquet")
    return texts


# --- LLaVA-RLHF ---------------------------------------------------------------------------

LLAVA_RLHF_FAULTS = {1: "image_missing", 2: "image_path_unsafe", 3: "row_malformed", 4: "identical_responses"}
LLAVA_RLHF_NESTED, LLAVA_RLHF_MULTITURN = 5, 6


def write_llava_rlhf(folder: Path, image_root: Path, n: int = 12, seed: int = 0) -> list[dict]:
    """`llava_7b_v1_preference.json` (a JSON array) and COCO-named JPEGs under `image_root`."""
    folder.mkdir(parents=True, exist_ok=True)
    image_root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        image = f"{300000 + i:012d}.jpg"
        conversations = [{"from": "human", "value": "<image>\n" + QUESTIONS[i % len(QUESTIONS)] + f" [{i}]"},
                         {"from": "gpt", "value": ""}]
        if i == LLAVA_RLHF_MULTITURN:
            conversations = [{"from": "human", "value": "<image>\nWhat animal is this?"},
                             {"from": "gpt", "value": "It is a cat."},
                             {"from": "human", "value": "What colour is its fur?"},
                             {"from": "gpt", "value": ""}]
        row = {"id": f"llava-rlhf-{i}", "image": image,
               "conversations": [conversations] if i == LLAVA_RLHF_NESTED else conversations,
               "output_1": {"from": "llava", "value": f"Answer one about {SUBJECTS[i % 10]} {rng.randrange(10**6)}."},
               "output_2": {"from": "llava",
                            "value": f"Answer two about {SUBJECTS[(i + 1) % 10]} {rng.randrange(10**6)}."},
               "preference": 1 + i % 2, "hallucination": bool(i % 3)}
        if i == 2:
            row["image"] = "../outside.jpg"
        if i == 3:
            row["preference"] = 3
        if i == 4:
            row["output_2"] = dict(row["output_1"])
        if i != 1:
            (image_root / image).write_bytes(jpeg(300 + i))
        rows.append(row)
    (image_root.parent / "outside.jpg").write_bytes(jpeg(999))
    (folder / "llava_7b_v1_preference.json").write_text(json.dumps(rows))
    return rows


# --- LLaVA-Critic-113k (pairwise) -----------------------------------------------------------

CRITIC_TEMPLATES = [
    # (instruction with criteria, first label, second label, bracketed values, trailer)
    ("Given an image and a corresponding question, please serve as an unbiased and fair judge. CRITERIA-SECRET: "
     "accuracy, helpfulness.", "The first response:", "The second response:", True, "\nASSISTANT:\n"),
    ("You are a critic. CRITERIA-SECRET: judge visual faithfulness first.", "Response 1:", "Response 2:", False,
     "\n\nPlease output your judgement ending with 'The better response: [1|2]'. CRITERIA-SECRET"),
    ("Compare two answers. CRITERIA-SECRET: no length bias.", "Response A:", "Response B:", True, ""),
]
VERDICTS = ["The better response: [first]", "The better response: second", "The better response: [1]",
            "The better response: 2", "The better response: [A]", "Therefore, the better response: B"]
CRITIC_TIE_ROW, CRITIC_UNPARSABLE_ROW, CRITIC_DUPLICATE_ROW = 6, 7, 8


def critic_prompt(question: str, first: str, second: str, template: int) -> str:
    instruction, label_1, label_2, brackets, trailer = CRITIC_TEMPLATES[template]
    wrap = (lambda v: f"[{v}]") if brackets else (lambda v: v)  # noqa: E731
    return (f"<image>\n{instruction}\nQuestion: {wrap(question)}\n{label_1} {wrap(first)}\n{label_2} "
            f"{wrap(second)}{trailer}")


def write_llava_critic(folder: Path, n: int = 12, seed: int = 0, duplicate_of: dict | None = None,
                       shards: int = 2) -> list[dict]:
    """`pairwise/train-0000K-of-0000N.parquet`. Row i uses template i % 3 and verdict i % 6;
    one tie, one unparsable verdict, and (with `duplicate_of`, an RLHF-V text and image
    bytes) a row that re-judges an RLHF-V pair."""
    rng = random.Random(seed)
    records, expected = [], []
    for i in range(n):
        question, first, second = (f"{QUESTIONS[i % 5]} [{i}]", f"First answer {rng.randrange(10**6)} [with brackets].",
                                   f"Second answer {rng.randrange(10**6)}.")
        verdict = VERDICTS[i % len(VERDICTS)]
        label = "1" if i % 2 == 0 else "2"
        image = jpeg(500 + i)
        if i == CRITIC_TIE_ROW:
            verdict, label = "Both responses are equally good.", "tie"
        if i == CRITIC_UNPARSABLE_ROW:
            verdict, label = "I cannot decide.", None
        if i == CRITIC_DUPLICATE_ROW and duplicate_of:
            question, first, second = duplicate_of["question"], duplicate_of["chosen"], duplicate_of["rejected"]
            image, verdict, label = duplicate_of["image"], "The better response: [first]", "1"
        gpt = f"JUSTIFICATION-SECRET: the reasons are many. {verdict}"
        records.append({"id": f"critic_{i}", "source": "vlfeedback",
                        "conversations": [{"from": "human", "value": critic_prompt(question, first, second, i % 3)},
                                          {"from": "gpt", "value": gpt}],
                        "image": {"bytes": image, "path": None}})
        expected.append({"question": question, "first": first, "second": second, "label": label})
    (folder / "pairwise").mkdir(parents=True, exist_ok=True)
    per_shard = -(-n // shards)
    for k in range(shards):
        pq.write_table(pa.Table.from_pylist(records[k * per_shard:(k + 1) * per_shard]),
                       folder / "pairwise" / f"train-{k:05d}-of-{shards:05d}.parquet")
    return expected


def write_llava_critic_pointwise(folder: Path, n: int = 12, shards: int = 6) -> None:
    """`pointwise/train-0000K-of-0000N.parquet`: one response scored per row (not read)."""
    (folder / "pointwise").mkdir(parents=True, exist_ok=True)
    records = [{"id": f"pointwise_{i}", "source": "vlfeedback",
                "conversations": [{"from": "human", "value": f"<image>\nRate this response: Answer {i}."},
                                  {"from": "gpt", "value": f"The response deserves a score of {1 + i % 10}."}],
                "image": {"bytes": jpeg(700 + i), "path": None}} for i in range(n)]
    per_shard = -(-n // shards)
    for k in range(shards):
        pq.write_table(pa.Table.from_pylist(records[k * per_shard:(k + 1) * per_shard]),
                       folder / "pointwise" / f"train-{k:05d}-of-{shards:05d}.parquet")


def write_llava_critic_repo(folder: Path) -> list[dict]:
    """lmms-lab/llava-critic-113k: the pairwise config's 5 shards beside the pointwise config's 6, and the card."""
    expected = write_llava_critic(folder, n=15, shards=5)
    write_llava_critic_pointwise(folder)
    _write_repo_card(folder, "LLaVA-Critic-113k")
    return expected


def write_rlhf_v_repo(folder: Path) -> list[dict]:
    """openbmb/RLHF-V-Dataset: `RLHF-V-Dataset.parquet` at the root, and the card."""
    texts = write_rlhf_v(folder)
    _write_repo_card(folder, "RLHF-V-Dataset")
    return texts


def write_llava_rlhf_repo(folder: Path, image_root: Path) -> list[dict]:
    """zhiqings/LLaVA-Human-Preference-10K: `llava_7b_v1_preference.json` and the card; the COCO
    images it names go to `image_root`, which the user supplies."""
    rows = write_llava_rlhf(folder, image_root)
    _write_repo_card(folder, "LLaVA-Human-Preference-10K")
    return rows


if __name__ == "__main__":  # `python -m tests.snapshots DIR`: a miniature of every source, laid out as its Hub repo
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "out/mini")
    write_vlfeedback_repo(target / "vlfeedback", n=48, seed=7)  # seed 7: the bundled sample/vlfeedback's rows
    write_rlhf_v_repo(target / "rlhf_v")
    write_llava_rlhf_repo(target / "llava_rlhf", target / "coco-train2017")
    write_llava_critic_repo(target / "llava_critic")
    print(f"wrote {target}/: vlfeedback, rlhf_v, llava_rlhf (images in coco-train2017), llava_critic")
