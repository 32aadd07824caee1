"""`critic-data eval`: how well a critic judges, measured against labelled pairs.

This module owns reading the three benchmarks into one item shape, putting each item to the
critic, scoring the verdicts, and the summary the papers report:
- `built`: a critic-data dataset (local folder or Hub id); its `answer` is the label.
- `vl-rewardbench`: a local `MMInstruction/VL-RewardBench` snapshot; `human_ranking` gives
  the label; accuracy overall and `macro` accuracy over general / hallucination / reasoning,
  the categories lmms-eval assigns (`vlrb_category`).
- `mm-rlhf`: a local `yifanzhang114/MM-RLHF-RewardBench` snapshot (jsonl + images/); `chosen`
  is the label; `acc` over pairs and `acc_plus` over ids (an id counts when all its pairs do),
  overall and per category, as the official scorer counts them (`score`).

Two protocols (`--protocol`):
- `critic-data` (default): every item is rendered with the critic prompt and its think/boxed
  instruction (`render_critic_prompt`, the template the critic was trained on: a built row's own
  `template`; on the two benchmarks the `--prompt-style` the critic's training set was built with,
  `pairwise-v2` for critic-data, `llava-critic-v1` for llava-critic), sent with its image(s) as
  they are stored, and the verdict is read with `boxed_verdict`, the rule `preference_reward`
  uses. MM-RLHF video rows are skipped: the template shows one image.
- `paper`: the official critic-eval scripts of LLaVA-Critic-R1 (`PAPER_PROMPT` and the constants
  beside it, each with its source line): their system turn and prompt, the think/boxed
  instruction appended unless `--no-thinking`, images resized to their pixel bounds, images
  under 28 px skipped, MM-RLHF video rows judged from up to 32 sampled frames, `max_tokens`
  4096 / 2048; the verdict read by `paper_verdict` (our reading: no official scorer exists).
Scoring: an unparsed verdict counts as wrong in `accuracy` (and in every figure built on it),
and as half a right answer in `accuracy_unparsed_half`: the expected score of lmms-eval's
VL-RewardBench scorer, which answers an unreadable judgement with a coin (`parse_pred_ans`; on a
"tie" label a coin over 1/2 is never right, so there it scores 0). Every accuracy carries its
Wilson 95% interval (`<name>_ci95`); the macro accuracy's combines the categories' Wilson
intervals by MOVER (each metric is defined in `rl/metrics.py`; a judgement is a `rl/records.py` `Judgement`).
Each item's image paths must stay inside the snapshot folder and name regular files under the
image size cap (`_snapshot_image`); any other row is skipped and counted.
The presented order is a coin fixed by (seed, item id); with
`--both-orders` each item is judged in both orders and position consistency is reported.
Results are appended to `OUT/results.jsonl` as they arrive; `--resume` skips what is there,
and refuses a run whose options would give other results (`EvalOptions.identity`).
A row that cannot be an item (not UTF-8, a field of the wrong type, no usable label or image, an
id already read) is skipped and counted under its reason; a benchmark left with no item is one
line. An item whose image cannot be decoded, or whose answer is not a chat completion, fails
alone (`RequestFailed`).

Run it on one machine against `vllm serve CHECKPOINT` (or any OpenAI-compatible server):
    critic-data eval --base-url http://127.0.0.1:8000/v1 --model CHECKPOINT \
        --benchmark vl-rewardbench --input VL-RewardBench/ --out runs/vlrb
"""

from __future__ import annotations

import asyncio
import glob
import io
import itertools
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from critic_data import UserError
from critic_data.files import ImageFileError, json_lines, read_image_file
from critic_data.hub_client import check_hub_repo, is_repo_id
from critic_data.rl import metrics
from critic_data.rl.client import ChatClient, RunSpec, data_url, derive_seed, is_text, percent, run_jobs, write_summary
from critic_data.rl.options import EvalOptions
from critic_data.rl.records import Judgement
from critic_data.schemas import RejectReason
from critic_data.schemas.prompts import (
    DEFAULT_TEMPLATE,
    FORMAT_INSTRUCTION,
    PROMPT_STYLES,
    TEMPLATES,
    render_critic_prompt,
    strip_control_tokens,
)

MMRLHF_FILE = "mm_reward_bench.jsonl"

# --- the official critic-eval scripts (`--protocol paper`) -------------------------------------
# si0wang/LLaVA-Critic-R1@6fd42d1, eval_llama32v/model_vlreward_llama32v.py ("VL") and
# eval_llama32v/model_mmrlhf_llama32v.py ("MM"), the text each sends a critic that is not R1-Reward.
# The user prompt, verbatim, leading space included (VL:58-76 `prompt`, MM:63-81 `build_prompt`);
# the two answers in presented order. `--is-thinking` appends the think/boxed instruction with no
# separator (VL:116-117, MM:143-144; its text is FORMAT_INSTRUCTION's, VL:15, MM:15-19).
PAPER_PROMPT = """ You are a highly capable multimodal AI assistant tasked with evaluating answers to visual \
questions. \
Please analyze the following image and question, then determine which of the two provided answers is better.

Question: {question}

Answer 1: {answer_1}

Answer 2: {answer_2}

Please evaluate both answers based on the following criteria:
1. Accuracy: How well does the answer align with the visual information in the image?
2. Completeness: Does the answer fully address all aspects of the question?
3. Clarity: Is the answer easy to understand and well-articulated?
4. Relevance: Does the answer directly relate to the question and the image?

After your evaluation, please:
1. Explain your reasoning for each criterion.
2. Provide an overall judgment on which answer is better (Answer 1 or Answer 2). For example: \
Overall Judgment: Answer X is better.

Your response should be structured and detailed, demonstrating your understanding of both the visual and \
textual elements of the task."""
PAPER_SYSTEM = "You are a helpful assistant."  # VL:121, MM:148
# The image part's min_pixels / max_pixels (VL:127-128, MM:134-135). The scripts only declare them in
# the message: the keys are read by qwen_vl_utils, which they never call, so vLLM applied the
# checkpoint processor's own bounds. We apply the declared ones (at most 1280 image tokens).
PAPER_PIXELS = (224 * 224, 1280 * 28 * 28)
PAPER_MIN_SIDE = 28  # an image under 28 px high or wide is skipped, VL:108-110, MM:129-131
# A video row's frames go to vLLM as one video (MM:122-125, all listed frames; its max_frames 32 is a
# qwen_vl_utils key the script never applies). A chat request carries images: up to 32 frames,
# picked as MM-RLHF's own evaluation picks them (np.linspace(0, n - 1, 32, dtype=int),
# yfzhang114/MM-RLHF@7c8af1d llava/eval/eval_mm_reward_bench.py:38), each at most 128 image tokens,
# so that 32 of them (4096 tokens) fit the scripts' 8192-token context (VL:89, MM:108) beside a
# 2048-token answer.
VIDEO_FRAMES = 32
FRAME_PIXELS = (56 * 56, 128 * 28 * 28)
# "Answer 2 is better" ("is the better", "is slightly better"): lmms-eval's reading of this prompt
# (EvolvingLMMs-Lab/lmms-eval@75571cf lmms_eval/tasks/vl_rewardbench/utils.py:65-66, "*" removed),
# without its "Overall Judgment" anchor and its fall-back to asking GPT.
_ANSWER_PHRASE = re.compile(r"Answer\s*([12])\s*is\s*(?:the\s*)?(?:slightly\s*)?better", re.IGNORECASE)
_ANSWER_IN_BOX = re.compile(r"(?:\\text\{)?\s*answer\s*([12])\s*\}?\s*\.?", re.IGNORECASE)

# VL-RewardBench categories as lmms-eval assigns them (lmms-eval@75571cf
# lmms_eval/tasks/vl_rewardbench/utils.py:113-127): the id's first word (cut at "-", then "_",
# lower-cased) looked up here; any other word is "general" (LRVInstruction-... rows, for one).
VLRB_CATEGORIES = {
    "mathverse": "reasoning",
    "hallucination": "hallucination",
    "mmmu": "reasoning",
    "rlhf": "hallucination",
    "rlaif": "hallucination",
    "wildvision": "general",
    "vlfeedback": "general",
}
VLRB_GROUPS = ("general", "hallucination", "reasoning")
# MM-RLHF-RewardBench categories: the keywords its scorer looks for in a row's image or video
# path, in its order (yfzhang114/MM-RLHF@7c8af1d llava/eval/cal_performance_mmreweard_bench.py:12).
MMRLHF_CATEGORIES = ("mcq", "long", "short", "safety", "video")


def vlrb_category(item_id: str) -> str:
    """general, hallucination or reasoning for a VL-RewardBench id, as lmms-eval assigns it."""
    return VLRB_CATEGORIES.get(item_id.split("-")[0].split("_")[0].lower(), "general")


def paper_prompt(question: str, answer_1: str, answer_2: str, thinking: bool) -> str:
    """The official scripts' prompt (chat-control markers left out), then the instruction if `thinking`."""
    text = PAPER_PROMPT.format(question=strip_control_tokens(question), answer_1=strip_control_tokens(answer_1),
                               answer_2=strip_control_tokens(answer_2))
    return text + FORMAT_INSTRUCTION if thinking else text


def paper_verdict(text: str) -> str | None:
    """The answer ("1" or "2") a completion to the official prompt names, or None.

    Our reading (the official repository publishes no scorer for this prompt): the last \\boxed{}
    when it names 1 or 2 by the reward's rule or says "Answer 1" / "Answer 2"; else the last
    "Answer X is (the) (slightly) better".
    """
    from critic_data.rl.rewards import boxed_verdict, last_boxed, normalize_completion  # see `_run`

    verdict = boxed_verdict(text)
    if verdict in ("1", "2"):
        return verdict
    box = last_boxed(normalize_completion(text))
    if box is not None and (match := _ANSWER_IN_BOX.fullmatch(box.strip())):
        return match.group(1)
    phrases = _ANSWER_PHRASE.findall(text.replace("*", ""))
    return phrases[-1] if phrases else None


def sample_frames(frames: list) -> list:
    """Up to VIDEO_FRAMES of `frames`, evenly spread, first and last kept (np.linspace(0, n - 1, 32, dtype=int))."""
    if len(frames) <= VIDEO_FRAMES:
        return frames
    return [frames[i * (len(frames) - 1) // (VIDEO_FRAMES - 1)] for i in range(VIDEO_FRAMES)]


@dataclass
class Item:
    """One labelled pair: `responses` in the source's order, `label` names the better one ("1"/"2"/"tie")."""

    id: str
    images: list[bytes]
    question: str
    responses: tuple[str, str]
    label: str
    template: str = DEFAULT_TEMPLATE
    frames: bool = False  # `images` are a video's sampled frames
    extra: dict = field(default_factory=dict)  # written to results.jsonl: category, group, keywords, source


# --- reading the benchmarks -------------------------------------------------------------------

def _snapshot_image(name: object, roots: list[Path]) -> bytes:
    """The bytes of the image file `name` under the first of `roots` that holds it; else ImageFileError,
    whose reason is the skip's.

    `name` must be a relative path that stays inside (no `..` part, not absolute); one that does
    not is never opened. This is judged on the text, links are not resolved, so that a Hub cache
    snapshot (links into its blobs/ folder) reads. Only a regular file up to the image size cap is
    read (`read_image_file`).
    """
    if not isinstance(name, str) or not name:
        raise ImageFileError(RejectReason.IMAGE_MISSING, "the row names no image")
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise ImageFileError(RejectReason.IMAGE_PATH_UNSAFE, f"{name[:200]!r} leads outside the snapshot folder")
    candidates = [root / name for root in roots]
    return read_image_file(next((path for path in candidates if os.path.lexists(path)), candidates[-1]))


def _image_bytes(value, root: Path | None = None) -> bytes:
    """Bytes of a Hub Image struct ({bytes, path}); without bytes, its path is read inside `root`
    (`_snapshot_image`); else ImageFileError."""
    if isinstance(value, dict):
        if isinstance(value.get("bytes"), bytes) and value["bytes"]:
            return value["bytes"]
        value = value.get("path")
    if root is None:
        raise ImageFileError(RejectReason.IMAGE_MISSING, "the row holds no image bytes")
    return _snapshot_image(value, [root])


def _parquet_rows(folder: Path, split: str, columns: list[str]) -> tuple[int, Iterator[dict]]:
    """Rows of `folder/data/<split>-*.parquet`, read one record batch at a time; a damaged file is one line."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # The split is a name, never a pattern: --split 't*' would read the test and train shards as one.
    files = sorted((folder / "data").glob(f"{glob.escape(split)}-*.parquet"))
    if not files:
        raise UserError(f"{folder} holds no data/{split}-*.parquet; pass the snapshot folder (and --split if needed)")

    def damaged(f: Path, error: Exception) -> UserError:
        return UserError(f"{f} cannot be read ({type(error).__name__}: {' '.join(str(error).split())[:200]}); "
                         "download the benchmark again")

    total = 0
    for f in files:
        if not f.is_file():  # opening a FIFO waits for a writer, for ever
            raise UserError(f"{f} is not a regular file; download the benchmark again")
        try:
            total += pq.ParquetFile(f).metadata.num_rows
        except (OSError, pa.ArrowException) as error:
            raise damaged(f, error) from None

    def rows():
        for f in files:
            try:
                parquet = pq.ParquetFile(f)
                present = [c for c in columns if c in parquet.schema_arrow.names]
                for batch in parquet.iter_batches(batch_size=64, columns=present):
                    yield from batch.to_pylist()
            except (OSError, pa.ArrowException) as error:
                raise damaged(f, error) from None

    return total, rows()


def _built_rows(source: str, split: str) -> tuple[int, Iterator[dict]]:
    columns = ["id", "source", "images", "question", "response_1", "response_2", "answer", "template"]
    folder = Path(source)
    if folder.is_dir():
        return _parquet_rows(folder, split, columns)
    if not is_repo_id(source):
        raise UserError(f"--input {source}: no such folder, and not a Hub dataset id (OWNER/NAME)")
    check_hub_repo(source, f"--input {source}")
    import datasets

    try:
        dataset = datasets.load_dataset(source, split=split)
    except Exception as error:  # the Hub client raises many types (offline, not found, bad split)
        raise UserError(f"could not load {source} (split {split}) from the Hub: {type(error).__name__}: "
                        f"{' '.join(str(error).split())[:200]}; pass a local dataset folder instead") from None
    # Arrow format keeps Image columns as their {bytes, path} structs: no decoding, no re-encoding.
    batches = dataset.with_format("arrow").iter(batch_size=64)
    return len(dataset), (row for batch in batches for row in batch.to_pylist())


def _built_items(source: str, split: str, skipped: Counter) -> tuple[int, Iterator[Item]]:
    from critic_data.schemas import ANSWERS

    total, rows = _built_rows(source, split)

    def items():
        for row in rows:
            if "response_2" not in row:  # the column, not a value: every row would be skipped
                raise UserError(f"{source} has no response_1/response_2 columns (built with --format easyr1?); "
                                "eval reads datasets built with --format trl, the default")
            texts = [row.get(name) for name in ("question", "response_1", "response_2")]
            if not (is_text(row.get("id")) and all(map(is_text, texts)) and isinstance(row.get("images"), list)
                    and row.get("answer") in ANSWERS and (row.get("source") is None or is_text(row["source"]))):
                skipped["row_malformed"] += 1
                continue
            template = row.get("template") or DEFAULT_TEMPLATE
            if not isinstance(template, str) or template not in TEMPLATES:
                raise UserError(f"row {row['id']} uses critic template {template!r}, unknown to this version; "
                                f"known: {', '.join(TEMPLATES)}")
            try:
                images = [_image_bytes(image) for image in row["images"]]
            except ImageFileError as error:
                skipped[error.reason.value] += 1
                continue
            if not images:
                skipped["image_missing"] += 1
                continue
            yield Item(id=row["id"], images=images, question=texts[0], responses=(texts[1], texts[2]),
                       label=row["answer"], template=template, extra={"source": row.get("source")})

    return total, items()


def _vlrb_items(folder: Path, split: str, skipped: Counter, template: str) -> tuple[int, Iterator[Item]]:
    columns = ["id", "query", "response", "image", "human_ranking", "query_source"]
    total, rows = _parquet_rows(folder, split, columns)
    # human_ranking is a rank per response: [0, 1] = the first is preferred, [1, 0] = the second.
    labels = {(0, 1): "1", (1, 0): "2"}

    def items():
        for row in rows:
            responses = row.get("response")
            responses = responses if isinstance(responses, list) else []  # a string "ab" is not two answers
            ranking = row.get("human_ranking")
            label = labels.get(tuple(ranking)) if isinstance(ranking, list) and all(isinstance(r, int)
                                                                                    for r in ranking) else None
            if not (is_text(row.get("query")) and row.get("id") is not None):
                skipped["row_malformed"] += 1
                continue
            if len(responses) != 2 or not all(is_text(r) for r in responses):
                skipped["responses_malformed"] += 1
                continue
            if label is None:
                skipped["ranking_unusable"] += 1
                continue
            try:
                image = _image_bytes(row.get("image"), folder)
            except ImageFileError as error:
                skipped[error.reason.value] += 1
                continue
            yield Item(id=str(row["id"]), images=[image], question=row["query"], responses=tuple(responses),
                       label=label, template=template, extra={"category": vlrb_category(str(row["id"])),
                                           "query_source": row.get("query_source")})

    return total, items()


def _mmrlhf_keywords(row: dict) -> list[str]:
    """The category keywords a row's image path (else its video path or frame paths) contains, in the
    scorer's order; the first is the row's category (cal_performance_mmreweard_bench.py:25-33)."""
    where = row.get("image") or row.get("video") or ""
    text = " ".join(map(str, where)) if isinstance(where, list) else str(where)
    return [keyword for keyword in MMRLHF_CATEGORIES if keyword in text]


def _mmrlhf_items(folder: Path, skipped: Counter, videos: bool, template: str) -> tuple[int, Iterator[Item]]:
    path = folder / MMRLHF_FILE
    if not path.is_file():
        raise UserError(f"{folder} holds no {MMRLHF_FILE}; pass a local yifanzhang114/MM-RLHF-RewardBench snapshot")
    with path.open("rb") as handle:
        total = sum(1 for line in handle if line.strip())

    def items():
        seen: Counter = Counter()  # several rows share an id: item ids become "<id>#<k>"
        for _, _, row in json_lines(path):
            if isinstance(row, UnicodeDecodeError):
                skipped["not_utf8"] += 1
                continue
            try:
                group, prompt, chosen, rejected = row["id"], row["prompt"], row["chosen"], row["rejected"]
            except (KeyError, TypeError):  # not an object (or not JSON at all), or missing a field
                skipped["row_malformed"] += 1
                continue
            texts = (prompt, chosen, rejected)
            if isinstance(group, int) and not isinstance(group, bool):
                group = str(group)
            if any(isinstance(t, str) and not is_text(t) for t in (group, *texts)):
                skipped["not_utf8"] += 1  # a lone surrogate, escaped in the JSON
                continue
            if not all(isinstance(t, str) for t in (group, *texts)):
                skipped["row_malformed"] += 1
                continue
            k = seen[group]
            seen[group] += 1
            video = row.get("video") if not row.get("image") else None
            if video and not videos:
                skipped["video"] += 1  # the critic-data template shows one image
                continue
            if video and not isinstance(video, list):
                skipped["video_not_frames"] += 1  # the official script reads a list of frame files
                continue
            try:
                if video:  # frame files under images/ (MM:92)
                    images = [_snapshot_image(name, [folder / "images"]) for name in sample_frames(video)]
                else:  # the official script reads images/<image> (MM:127); "images/..." is read too
                    images = [_snapshot_image(row.get("image"), [folder, folder / "images"])]
            except ImageFileError as error:
                skipped[error.reason.value] += 1
                continue
            yield Item(id=f"{group}#{k}", images=images, question=prompt, responses=(chosen, rejected),
                       label="1", template=template, frames=bool(video),
                       extra={"group": group, "keywords": _mmrlhf_keywords(row)})

    return total, items()


def benchmark_items(benchmark: str, folder: Path, skipped: Counter, *, split: str = "test", videos: bool = False,
                    template: str = DEFAULT_TEMPLATE) -> tuple[int, Iterator[Item]]:
    """(upper bound on the item count, the items read lazily) of a local snapshot of `benchmark`
    (vl-rewardbench or mm-rlhf; MM-RLHF video rows only with `videos`); unusable rows are counted in
    `skipped`. The build's decontamination reads the benchmarks here too."""
    if benchmark == "vl-rewardbench":
        return _vlrb_items(folder, split, skipped, template)
    return _mmrlhf_items(folder, skipped, videos, template)


def load_items(options: EvalOptions, skipped: Counter) -> tuple[int, Iterator[Item]]:
    """(upper bound on the item count, the items read lazily); unusable rows are counted in `skipped`."""
    if options.benchmark == "built":
        total, items = _built_items(options.input, options.split, skipped)
    else:
        folder = Path(options.input)
        if not folder.is_dir():
            repo = ("MMInstruction/VL-RewardBench" if options.benchmark == "vl-rewardbench"
                    else "yifanzhang114/MM-RLHF-RewardBench")
            raise UserError(f"--input {folder} is not a folder; download the benchmark with "
                            f"`hf download {repo} --repo-type dataset --local-dir {folder}`")
        # the template of the critic's training rows (--protocol paper sends its own prompt instead)
        template = PROMPT_STYLES[options.prompt_style or "critic-data"][0]  # the benchmarks hold no tie
        total, items = benchmark_items(options.benchmark, folder, skipped, split=options.split,
                                       videos=options.protocol == "paper", template=template)
        if options.protocol == "paper":
            items = _without_small_images(items, skipped)
    items = _unique(items, skipped)
    if options.limit is not None:
        return min(total, options.limit), itertools.islice(items, options.limit)
    return total, items


def _unique(items: Iterator[Item], skipped: Counter) -> Iterator[Item]:
    """The items whose id is new: results are keyed by id (a repeat would be scored as the other
    order of the first, and a resume would take it as done), so a repeated id is skipped and counted."""
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            skipped["duplicate_id"] += 1
            continue
        seen.add(item.id)
        yield item


def _without_small_images(items: Iterator[Item], skipped: Counter) -> Iterator[Item]:
    """The items whose image is at least PAPER_MIN_SIDE px high and wide, as the official scripts
    keep them (its header read here; one that cannot be read is left for `data_url` to refuse)."""
    from PIL import Image

    for item in items:
        if not item.frames:
            try:
                with Image.open(io.BytesIO(item.images[0])) as opened:
                    small = min(opened.size) < PAPER_MIN_SIDE
            except Exception:  # noqa: BLE001 - not an image: data_url fails the item with the reason
                small = False
            if small:
                skipped["image_under_28px"] += 1
                continue
        yield item


# --- judging and scoring ----------------------------------------------------------------------

def presentations(item: Item, seed: int, both_orders: bool) -> list[tuple[int, int]]:
    """Which source response goes in position 1 and 2: (1, 2) or (2, 1); a seeded coin per item."""
    if both_orders:
        return [(1, 2), (2, 1)]
    return [(1, 2) if derive_seed(seed, "order", item.id) % 2 == 0 else (2, 1)]


def _mmrlhf_categories(records: list[Judgement], groups: dict[str, list[Judgement]]) -> dict:
    """Accuracy and Acc+ per keyword, as the official scorer counts them
    (cal_performance_mmreweard_bench.py:29-76): a row counts in its first keyword; an id whose rows
    are all right counts for the first keyword (in the scorer's order) any of its rows holds, over
    the ids any of whose rows holds the keyword. Keywords without rows are left out."""
    def keywords(record: Judgement) -> list[str]:
        return record.extra.get("keywords", [])

    def first(rows: list[Judgement]) -> str | None:
        held = {keyword for r in rows for keyword in keywords(r)}
        return next((keyword for keyword in MMRLHF_CATEGORIES if keyword in held), None)

    categories = {}
    for keyword in MMRLHF_CATEGORIES:
        rows = [r for r in records if keywords(r)[:1] == [keyword]]
        ids = [rs for rs in groups.values() if any(keyword in keywords(r) for r in rs)]
        if rows:
            acc_plus = sum(all(r.correct for r in rs) and first(rs) == keyword for rs in ids) / len(ids)
            categories[keyword] = {"n": len(rows), **metrics.accuracies(rows), "acc_plus": acc_plus,
                                   "acc_plus_ci95": metrics.wilson_interval(acc_plus, len(ids)), "ids": len(ids)}
    return categories


def _grouped(records: list[Judgement], field: str, default: str | None = None) -> dict[str, list[Judgement]]:
    groups: dict[str, list[Judgement]] = defaultdict(list)
    for record in records:
        groups[record.extra.get(field, default)].append(record)
    return groups


def _vlrb_figures(records: list[Judgement]) -> dict:
    """Accuracy per lmms-eval category, and their macro mean over the three it defines."""
    groups = _grouped(records, "category", "other")
    categories = {name: {"n": len(rs), **metrics.accuracies(rs)} for name, rs in sorted(groups.items())}
    present = [categories[name] for name in VLRB_GROUPS if groups.get(name)]
    return {"categories": categories, **metrics.macro(present, "accuracy"),
            **metrics.macro(present, "accuracy_unparsed_half"),
            "macro_ci_method": "mover over the categories' wilson intervals"}


def _mmrlhf_figures(records: list[Judgement], figures: dict) -> dict:
    """Acc (`accuracy` by the scorer's name) and Acc+ over ids, overall and per keyword."""
    groups = _grouped(records, "group")
    acc_plus = sum(all(r.correct for r in rs) for rs in groups.values()) / len(groups) if groups else None
    return {"acc": figures["accuracy"], "acc_ci95": figures["accuracy_ci95"], "acc_plus": acc_plus,
            "acc_plus_ci95": metrics.wilson_interval(acc_plus, len(groups)) if groups else None, "ids": len(groups),
            "categories": _mmrlhf_categories(records, groups)}


def score(records: list[Judgement], benchmark: str) -> dict:
    """The metrics of a set of results (one record per judgement), as the papers report them.

    Unparsed verdicts count as wrong (`accuracy`, Acc+, both-orders) and as half credit
    (`accuracy_unparsed_half`); `unparsed_rate` says how many there were. Each accuracy `x` has
    its 95% interval in `x_ci95`.
    """
    figures: dict = {
        "n": len(records),
        "items": len(metrics.by_item(records)),
        **metrics.accuracies(records),
        "ci_method": "wilson",
        "unparsed_rate": metrics.unparsed_rate(records),
    }
    twice = metrics.judged_twice(records)
    if twice:
        figures["position_consistency"] = metrics.position_consistency(twice)
        figures["both_orders_correct"] = metrics.both_orders_correct(twice)
        figures["both_orders_correct_ci95"] = metrics.wilson_interval(figures["both_orders_correct"], len(twice))
    if benchmark == "vl-rewardbench":
        figures |= _vlrb_figures(records)
    if benchmark == "mm-rlhf":
        figures |= _mmrlhf_figures(records, figures)
    return figures


def run_eval(options: EvalOptions, progress=None) -> dict:
    """Judge every item (resuming a previous run when asked), write results and summary; return the summary."""
    return asyncio.run(_run(options, progress))


async def _ask(client: ChatClient, item: Item, presented: tuple[int, int], options: EvalOptions) -> str:
    """The critic's completion for `item` shown in the `presented` order, in the run's protocol."""
    first, second = (item.responses[i - 1] for i in presented)
    paper = options.protocol == "paper"
    if paper:
        pixels = FRAME_PIXELS if item.frames else PAPER_PIXELS
        urls = [data_url(image, pixels) for image in item.images]
        text = paper_prompt(item.question, first, second, options.thinking)
    else:
        urls = [data_url(image) for image in item.images]
        text = render_critic_prompt(item.template, item.question, first, second)
    completions = await client.chat(urls, text, temperature=options.temperature, seed=options.seed,
                                    system=PAPER_SYSTEM if paper else None)
    return completions[0]


async def _run(options: EvalOptions, progress) -> dict:
    skipped: Counter = Counter()
    # imported here, not with the module: the reward's grader imports sympy (0.5 s), which the build,
    # reading the benchmarks through `benchmark_items` to decontaminate, has no use for
    from critic_data.rl.rewards import boxed_verdict

    total, items = load_items(options, skipped)
    read_verdict = paper_verdict if options.protocol == "paper" else boxed_verdict

    def jobs(done: set):
        for item in items:
            for presented in presentations(item, options.seed, options.both_orders):
                if (item.id, presented) not in done:
                    yield item, presented

    def record(job, completion: str) -> Judgement:
        item, presented = job
        return Judgement(item.id, item.label, presented, read_verdict(completion), item.extra, completion)

    spec = RunSpec(name="eval", unit="request", log_name="results.jsonl",
                   read=lambda line: Judgement.from_json(line, options.benchmark), key=lambda r: (r.id, r.presented),
                   jobs=jobs, total=total * (2 if options.both_orders else 1),
                   work=lambda client, job: _ask(client, *job, options), record=record,
                   job_id=lambda job: job[0].id, accuracy=metrics.accuracy, window=2 * options.concurrency)
    finished = await run_jobs(options, spec, progress)
    if not finished.records:  # a summary of nothing, exit 0, would read as a run that worked
        reasons = ", ".join(f"{count} {reason}" for reason, count in skipped.items())
        raise UserError(f"--input {options.input} has no item to judge "
                        f"({f'rows skipped: {reasons}' if reasons else 'no rows'}); check --input, --benchmark and "
                        "--split")
    return write_summary(options, finished, {
        "benchmark": options.benchmark,
        "model": options.model,
        "protocol": options.protocol,
        "thinking": options.thinking,
        "prompt_style": options.prompt_style,  # None: a built dataset's rows name theirs; --protocol paper
        **score(finished.records, options.benchmark),
        "skipped": dict(skipped),
    })


def summary_table(summary: dict):
    """A short rich table of the headline metrics, each accuracy with its 95% interval."""
    from rich.table import Table

    def accuracy_rows(label: str, figures: dict, key: str = "accuracy", n: int | None = None) -> None:
        """`key` with unparsed verdicts wrong, then with them scoring half."""
        table.add_row(f"{label} %" + (f" (n={n})" if n else ""), percent(figures[key], figures[f"{key}_ci95"]))
        table.add_row(f"{label} % ({f'n={n}, ' if n else ''}unparsed = 1/2)",
                      percent(figures[f"{key}_unparsed_half"], figures[f"{key}_unparsed_half_ci95"]))

    table = Table(title=f"{summary['benchmark']} ({summary['protocol']} protocol): {summary['model']}",
                  caption="(low-high): Wilson 95% interval. unparsed = 1/2: an unparsed verdict scores half, "
                          "as lmms-eval's coin does on average")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("judgements", str(summary["n"]))
    accuracy_rows("accuracy", summary)
    if "acc_plus" in summary:
        table.add_row(f"acc+ % (ids={summary['ids']})", percent(summary["acc_plus"], summary.get("acc_plus_ci95")))
    for name, group in summary.get("categories", {}).items():
        accuracy_rows(f"  {name}", group, n=group["n"])
        if "acc_plus" in group:
            table.add_row(f"  {name} acc+ % (ids={group['ids']})",
                          percent(group["acc_plus"], group.get("acc_plus_ci95")))
    if "macro_accuracy" in summary:
        accuracy_rows("macro accuracy", summary, "macro_accuracy")
    if "position_consistency" in summary:
        table.add_row("position consistency %", percent(summary["position_consistency"]))
    table.add_row("unparsed %", percent(summary["unparsed_rate"]))
    if summary["failed"]:
        table.add_row("failed requests", str(summary["failed"]))
    if summary["skipped"]:
        table.add_row("skipped rows", ", ".join(f"{k} {v}" for k, v in summary["skipped"].items()))
    return table
