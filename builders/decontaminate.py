"""Benchmark decontamination: which training pairs a critic benchmark already holds.

VL-RewardBench draws items from VLFeedback and RLHF-V; a critic trained on those sources and scored
on it may have seen its test items. This module owns reading a benchmark for that purpose (the items
`critic-data eval` reads, with its reader `rl.evaluate.benchmark_items`, from a local snapshot or from
the Hub at a pinned revision), the matching rule, and the counts the build records.

A pair is *contaminated* when its question matches a benchmark item's and its image is a copy of
that item's image; an *image-only* match has a copy of some item's image and another question.
- question: the build's own cleaning (`clean_question`: `<image>` placeholders and chat markers
  removed), then NFKC, case folding and collapsed whitespace (`duplicates.normalize_text`), so a
  built row's question and the benchmark's compare like for like;
- image: identical bytes, or the near-duplicate rule of cross-source duplicates (duplicates.py:
  8x8 grey thumbnails within MAX_PIXEL_DISTANCE grey levels on average). On synthetic photos of
  300-1024 px, copies re-encoded at JPEG quality 30-95 or resized to 0.25-1.5x were at most 1.6
  apart, unrelated photos 8.7 or more (benchmarks/decontaminate.py prints the histograms); a
  64-bit dHash separated them less (copies up to 9 bits apart, unrelated from 15), so the
  existing rule is kept rather than a second one written.

Speed: decoding a training image for its thumbnail costs ~0.5 ms (a 50 KB JPEG, at reduced
scale), 20 s for 40k rows, twice the build. So a pair's image is decoded only when its question matches a
benchmark question (a set lookup), or, for image-only matches with `near_image_only`, when its
aspect ratio (read from the header) is within ASPECT_TOLERANCE of a benchmark image's. Image-only
matches are otherwise found by identical bytes only: by the digest the build computes of every image
anyway (`keys.image_digest`), which it passes in. A benchmark image is decoded the first time a
training pair is compared with it.
"""

from __future__ import annotations

import io
import math
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image

from critic_data import UserError
from critic_data.builders.duplicates import MAX_PIXEL_DISTANCE, THUMBNAIL, normalize_text, thumbnail
from critic_data.builders.images import check_image
from critic_data.builders.keys import image_digest
from critic_data.builders.snapshot import fetch_from_hub, hub_origin, local_snapshot
from critic_data.builders.text import clean_question
from critic_data.files import published_path

CONTAMINATED = "contaminated"
IMAGE_ONLY = "image_only"
ASPECT_TOLERANCE = 0.03  # |log(w/h) difference|: a resized copy's sides are rounded to whole pixels


@dataclass(frozen=True)
class Benchmark:
    repo_id: str
    revision: str  # pinned: a build reads the same items until this module says otherwise
    files: tuple[str, ...]  # what `benchmark_items` reads (Hub allow_patterns)


# Commits of the layout `critic-data eval` reads: VL-RewardBench's "Cleanup parquet data (#3)", which made
# data/test-00000-of-00001.parquet, and MM-RLHF-RewardBench's upload of mm_reward_bench.jsonl beside images/.
BENCHMARKS = {
    "vl-rewardbench": Benchmark("MMInstruction/VL-RewardBench", "49b8e26430f73b021bd0655fcd27ebf0f384fede",
                                ("data/test-*.parquet",)),
    "mm-rlhf": Benchmark("yifanzhang114/MM-RLHF-RewardBench", "3cf983d3acc020ff590e8beb10b3bae0473908e1",
                         ("mm_reward_bench.jsonl", "images/*")),
}


def question_key(question: str) -> str:
    """A question as matching compares it; ASCII text (most) skips NFKC, which leaves it as it is.
    Invisible format characters (Unicode category Cf: zero-width spaces and joiners, direction
    marks, byte-order marks) are removed first: NFKC keeps them, and a copy may carry them."""
    question = clean_question(question)
    if question.isascii():
        return " ".join(question.lower().split())  # what normalize_text gives, without its NFKC pass
    return normalize_text("".join(c for c in question if unicodedata.category(c) != "Cf"))


def describe_rule(near_image_only: bool) -> str:
    """The rule as build.json and the card record it."""
    image = f"identical bytes or 8x8 grey thumbnails within {MAX_PIXEL_DISTANCE:g} grey levels (mean)"
    image_only = (f"the same image rule, among images of the same aspect ratio (within {ASPECT_TOLERANCE:g})"
                  if near_image_only else "identical image bytes")
    return (f"contaminated: question equal after <image> removal, invisible format characters removed, NFKC, "
            f"case folding and whitespace collapse, "
            f"and image {image}; image-only: {image_only}")


@dataclass(frozen=True)
class Match:
    kind: str  # CONTAMINATED or IMAGE_ONLY
    benchmark: str
    item_id: str


class TrainingPair:
    """A training pair's question and image as matching sees them, each form computed once, when first
    needed. What the build has already may be given instead: `key` (`question_key` of the question,
    computed in a worker), `digest` (`keys.image_digest`: the build digests every image),
    `known_thumbnail` (`duplicates.thumbnail`: a build of several sources has it); and `image` may be
    a function returning the bytes, called only if they are needed (to decode the image)."""

    def __init__(self, question: str = "", image: bytes | Callable[[], bytes] = b"", *, key: str | None = None,
                 digest: str | None = None, known_thumbnail: bytes | None = None):
        self.question, self._image = question, image
        for name, value in (("key", key), ("digest", digest)):
            if value is not None:
                setattr(self, name, value)
        if known_thumbnail is not None:
            self.thumbnail = np.frombuffer(known_thumbnail, np.uint8)

    @cached_property
    def image(self) -> bytes:
        return self._image() if callable(self._image) else self._image

    @cached_property
    def key(self) -> str:
        return question_key(self.question)

    @cached_property
    def digest(self) -> str:
        return image_digest(self.image)

    @cached_property
    def thumbnail(self) -> np.ndarray | None:
        pixels = thumbnail(self.image)
        return None if pixels is None else np.frombuffer(pixels, np.uint8)

    @cached_property
    def log_aspect(self) -> float | None:
        return log_aspect(self.image)


def log_aspect(image: bytes) -> float | None:
    """log(width / height) from the image's header (nothing is decoded), or None if it cannot be read."""
    try:
        if image.startswith(b"\xff\xd8"):
            width, height, _, _ = simplejpeg.decode_jpeg_header(image)
        else:
            with Image.open(io.BytesIO(image)) as opened:
                width, height = opened.size
        return math.log(width / height)
    except Exception:  # noqa: BLE001 - an unreadable header only rules out the near-duplicate search
        return None


class BenchmarkIndex:
    """One benchmark's items: by question key, by image digest, and (lazily) by image thumbnail."""

    def __init__(self, name: str, items: Iterable[tuple[str, str, bytes]], origin: dict | None = None,
                 skipped: Counter | None = None, near_image_only: bool = False):
        """`items`: (id, question, image bytes) as the benchmark holds them; an image that fails the
        build's structural check (truncated, damaged header) is skipped and counted in `skipped`."""
        self.name, self.origin, self.near_image_only = name, origin or {}, near_image_only
        self.skipped = skipped if skipped is not None else Counter()
        self.ids: list[str] = []
        self._images: list[bytes] = []
        self._by_question: dict[str, list[int]] = {}
        self._by_digest: dict[str, list[int]] = {}
        for item_id, question, image in items:
            if problem := check_image(image):
                self.skipped[problem[0].value] += 1
                continue
            self._by_question.setdefault(question_key(question), []).append(len(self.ids))
            self._by_digest.setdefault(image_digest(image), []).append(len(self.ids))
            self.ids.append(item_id)
            self._images.append(image)
        self._thumbnails = np.zeros((len(self.ids), THUMBNAIL[0] * THUMBNAIL[1]), np.uint8)
        self._state = np.zeros(len(self.ids), np.int8)  # 0: not decoded yet, 1: thumbnail, -1: cannot be decoded

    @cached_property
    def _aspects(self) -> tuple[np.ndarray, np.ndarray]:
        """The items' log aspect ratios, sorted, and the item each belongs to (read when first needed)."""
        aspects = np.array([log_aspect(image) for image in self._images], np.float64)  # None: NaN, sorted last
        order = np.argsort(aspects, kind="stable")
        return aspects[order], order

    def match(self, pair: TrainingPair) -> Match | None:
        """The pair's match in this benchmark: contaminated before image-only, the first item in the
        benchmark's order of those that match; None when the pair is clean."""
        same_bytes = self._by_digest.get(pair.digest, ())
        same_question = self._by_question.get(pair.key, ())
        if same_question:
            found = next((i for i in same_question if i in same_bytes), None)
            if found is None:
                found = self._closest(pair, list(same_question))
            if found is not None:
                return Match(CONTAMINATED, self.name, self.ids[found])
        if same_bytes:
            return Match(IMAGE_ONLY, self.name, self.ids[same_bytes[0]])
        if self.near_image_only and pair.log_aspect is not None:
            found = self._closest(pair, self._same_aspect(pair.log_aspect))
            if found is not None:
                return Match(IMAGE_ONLY, self.name, self.ids[found])
        return None

    def _same_aspect(self, log_aspect: float) -> np.ndarray:
        """The items whose image's aspect ratio is within ASPECT_TOLERANCE of `log_aspect`, in order."""
        aspects, order = self._aspects
        start = np.searchsorted(aspects, log_aspect - ASPECT_TOLERANCE, side="left")
        end = np.searchsorted(aspects, log_aspect + ASPECT_TOLERANCE, side="right")
        return np.sort(order[start:end])

    def _closest(self, pair: TrainingPair, candidates) -> int | None:
        """Of `candidates` (item numbers, in order), the first whose image is a near-duplicate of the
        pair's, or None. An item's image is decoded the first time it is a candidate."""
        candidates = np.asarray(candidates, np.int64)
        if not len(candidates) or pair.thumbnail is None:
            return None
        for i in candidates[self._state[candidates] == 0].tolist():
            pixels = thumbnail(self._images[i])
            self._state[i] = -1 if pixels is None else 1  # an image the check passed but PIL cannot decode
            if pixels is not None:
                self._thumbnails[i] = np.frombuffer(pixels, np.uint8)
        rows = candidates[self._state[candidates] == 1]
        distance = np.abs(self._thumbnails[rows].astype(np.int16) - pair.thumbnail).mean(axis=1)
        close = np.flatnonzero(distance <= MAX_PIXEL_DISTANCE)
        return int(rows[close[0]]) if len(close) else None


def benchmark_snapshot(name: str, path: Path | None) -> tuple[Path, dict]:
    """The folder of benchmark `name` and what build.json records of it: a local snapshot at `path`
    (each file read, fingerprinted), or without one the Hub repo at the pinned revision."""
    benchmark = BENCHMARKS[name]
    download = (f"hf download {benchmark.repo_id} --repo-type dataset --revision {benchmark.revision} "
                "--local-dir DIR")
    if path is None:
        try:
            folder = fetch_from_hub(benchmark.repo_id, benchmark.revision, list(benchmark.files))
        except UserError as error:  # its advice names the build's --input, which reads sources, not benchmarks
            advice = str(error).replace("--input DIR", f"--decontaminate {name}=DIR")
            raise UserError(f"--decontaminate {name}: {advice}") from None
        return folder, hub_origin(benchmark.repo_id, folder, benchmark.revision)
    if not path.is_dir():
        raise UserError(f"--decontaminate {name}={path}: no such folder; download the benchmark with "
                        f"`{download.replace('DIR', str(path))}`")
    files = [f for pattern in benchmark.files for f in path.glob(pattern) if f.is_file()]
    return path, local_snapshot(path, files).origin


def load_benchmark(name: str, path: Path | None, read_items: Callable, near_image_only: bool = False) -> BenchmarkIndex:
    """The index of benchmark `name` (a key of BENCHMARKS), its items read by `read_items` (eval's
    reader, `rl.evaluate.benchmark_items`, which the caller passes: builders do not import rl); rows
    eval would skip are skipped and counted. A benchmark left with no item is one line."""
    folder, origin = benchmark_snapshot(name, path)
    skipped: Counter = Counter()
    try:
        _, items = read_items(name, folder, skipped)
        index = BenchmarkIndex(name, ((item.id, item.question, item.images[0]) for item in items), origin, skipped,
                               near_image_only)
    except UserError as error:  # eval's reader says what is wrong with the folder; say which option gave it
        # eval's advice names its own --split; a build reads the benchmark's test split
        problem = str(error).removesuffix("; pass the snapshot folder (and --split if needed)")
        raise UserError(f"--decontaminate {name}: {problem}; pass a snapshot of {BENCHMARKS[name].repo_id} as DIR, or "
                        "leave =DIR out to fetch it") from None
    if not index.ids:
        raise UserError(f"--decontaminate {name}: {published_path(folder)} holds no usable item "
                        f"(skipped: {dict(skipped) or 'none'}); pass a snapshot of {BENCHMARKS[name].repo_id}")
    return index


class Decontamination:
    """The build's decontamination against one or more benchmarks: which pairs it drops, and its counts."""

    def __init__(self, indices: list[BenchmarkIndex], drop_image_only: bool = False):
        self.indices, self.drop_image_only = indices, drop_image_only
        self.pairs: dict[str, Counter] = {index.name: Counter() for index in indices}
        self.items: dict[str, dict[str, set]] = {index.name: {CONTAMINATED: set(), IMAGE_ONLY: set()}
                                                 for index in indices}  # the benchmark items matched

    def check(self, pair: TrainingPair, pairs: int = 1) -> Match | None:
        """Match a row's question and image against every benchmark, counting its `pairs` under each
        benchmark's verdict; return the match that drops them (contaminated, or image-only when
        those are dropped too; the first benchmark's first), else None."""
        dropping = None
        for index in self.indices:
            found = index.match(pair)
            if found is None:
                continue
            self.pairs[index.name][found.kind] += pairs
            self.items[index.name][found.kind].add(found.item_id)
            if dropping is None and (found.kind == CONTAMINATED or self.drop_image_only):
                dropping = found
        return dropping

    def record(self) -> dict:
        """What build.json records per benchmark (key "contamination")."""
        return {index.name: {
            "origin": index.origin,
            "items": len(index.ids),
            "items_skipped": dict(sorted(index.skipped.items())),
            "rule": describe_rule(index.near_image_only),
            "pairs_contaminated": self.pairs[index.name][CONTAMINATED],
            "pairs_image_only": self.pairs[index.name][IMAGE_ONLY],
            "items_contaminated": len(self.items[index.name][CONTAMINATED]),  # benchmark items a training pair copies
            "items_image_only": len(self.items[index.name][IMAGE_ONLY]),
            "image_only_dropped": self.drop_image_only,
        } for index in self.indices}
