"""Cross-source duplicates: one pair published by two sources, found by content that survives copying.

LLaVA-Critic-113k re-judged pairs of VLFeedback, RLHF-V and LLaVA-RLHF, and its copies were
re-encoded (JPEG) and re-spaced, so the exact key of the build's own dedup (image bytes, question,
responses) misses them. A pair's *content key* survives that:
- text: the question and the two responses (as a set) after NFKC, case folding and collapsing
  whitespace, hashed;
- image: an 8x8 grey thumbnail of the decoded pixels (JPEGs are decoded at 1/8 scale); two
  copies match when their thumbnails differ by at most MAX_PIXEL_DISTANCE grey levels on average.
  Re-encoding at JPEG quality 30 to 95 moved test thumbnails by at most 1.7; different images
  were 5.75 or more apart, and they must share their whole text first.

The build keeps the content keys of the pairs each source kept; a pair of a later source with an
earlier source's text key and a close thumbnail is a duplicate of that source. Within one source,
exact keys decide, as before. Each key keeps the response its pair preferred: a copy that prefers
the other one (or calls a tie where the kept one does not, or the reverse) is a conflict between
the sources, counted apart by the build (decide.py).
"""

from __future__ import annotations

import io
import unicodedata
import warnings

import numpy as np
import xxhash
from PIL import Image

MAX_PIXEL_DISTANCE = 4.0  # mean absolute grey-level difference of the 8x8 thumbnails (0-255)
THUMBNAIL = (8, 8)


def normalize_text(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def content_key(question: str, better: str, worse: str, tie: bool = False) -> tuple[int, int]:
    """A pair's text key, a 64-bit hash of the normalised question and the two normalised responses
    in either order; and the response it prefers, comparable between copies of the pair: 0 for a
    tie, 1 when the better response's normalised text sorts first (or both read the same once
    normalised: no copy can then disagree), 2 when it sorts second."""
    normalized = normalize_text(better), normalize_text(worse)
    text = "\x00".join([normalize_text(question), *sorted(normalized)])
    key = xxhash.xxh3_64_intdigest(text.encode("utf-8", "surrogatepass"))
    return key, 0 if tie else 1 if normalized[0] <= normalized[1] else 2


def thumbnail(data: bytes) -> bytes | None:
    """The 8x8 grey thumbnail of an image's pixels (64 bytes), or None when it cannot be decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the image check has bounded it
            with Image.open(io.BytesIO(data)) as image:
                image.draft("L", (THUMBNAIL[0] * 8, THUMBNAIL[1] * 8))  # JPEG: decode at a fraction of the size
                return image.convert("L").resize(THUMBNAIL, Image.Resampling.BOX).tobytes()
    except Exception:  # noqa: BLE001 - a key is a hint: an image the check passed but this cannot read has none
        return None


class CrossSourceIndex:
    """Content keys of the pairs kept from the sources built so far, with the label each was kept with.

    Searched in bulk with numpy, in time close to linear in the pairs even when thousands share one
    text (short answers to a stock question): a pair is compared only with the entries of its text
    key whose *brightness* (the sum of the thumbnail's 64 grey levels) lies within 64 *
    MAX_PIXEL_DISTANCE of its own, since two thumbnails that close differ by at most that much in
    sum. The entries are sorted by (text key, brightness) once per source, so each pair's window is
    found by binary search. Of the entries that match, the one added first wins (the earliest
    source in build order, then the earliest kept pair)."""

    def __init__(self) -> None:
        self._pending: list[tuple[int, str, bytes, int]] = []  # added since the last `seal`
        self._sources: list[str] = []  # the sources' names; entries hold their index here
        # each entry in the order added: its source (index in _sources) and the label it was kept with
        self._source = np.empty(0, np.int16)
        self._preferred = np.empty(0, np.int8)
        self._keys = np.empty(0, np.uint64)
        self._thumbnails = np.empty((0, THUMBNAIL[0] * THUMBNAIL[1]), np.uint8)
        # the entries sorted by (text key, brightness, order added): their place in the order added,
        # keys, thumbnails, and a searchable (rank of the key, brightness) number
        self._order = np.empty(0, np.int64)
        self._sorted_keys, self._sorted_thumbnails, self._window_key = self._keys, self._thumbnails, self._order

    def add(self, key: int, source: str, image: bytes | None, preferred: int) -> None:
        """A kept pair's content: text key, thumbnail (None: no copy can be found), and which response
        it prefers (`content_key`)."""
        if image is not None:
            self._pending.append((key, source, image, preferred))

    def seal(self) -> None:
        """Make the keys added so far (a finished source's) visible to `earlier_copies`."""
        if not self._pending:
            return
        keys, sources, images, preferred = zip(*self._pending)
        self._pending = []
        self._sources += [name for name in dict.fromkeys(sources) if name not in self._sources]
        self._source = np.concatenate((self._source,
                                       np.array([self._sources.index(name) for name in sources], np.int16)))
        self._preferred = np.concatenate((self._preferred, np.array(preferred, np.int8)))
        self._keys = np.concatenate((self._keys, np.array(keys, np.uint64)))
        self._thumbnails = np.concatenate((self._thumbnails, _thumbnail_rows(images)))
        brightness = self._thumbnails.sum(axis=1, dtype=np.int64)
        self._order = np.lexsort((brightness, self._keys))  # stable: equal entries stay in the order added
        self._sorted_keys, self._sorted_thumbnails = self._keys[self._order], self._thumbnails[self._order]
        rank = np.concatenate(([0], np.cumsum(self._sorted_keys[1:] != self._sorted_keys[:-1])))
        self._window_key = rank * _BRIGHTNESS_SPAN + brightness[self._order]

    def earlier_copies(self, keys: list[int], images: list[bytes | None]) -> list[tuple[str, int] | None]:
        """For each pair (text key, thumbnail), the earlier copy of it: the source that kept it and the
        response that copy prefers (`content_key`), or None."""
        found: list[tuple[str, int] | None] = [None] * len(keys)
        rows = [row for row, image in enumerate(images) if image is not None]
        if not len(self._order) or not rows:
            return found
        thumbnails = _thumbnail_rows([images[row] for row in rows])
        starts, ends = self._windows(np.array([keys[row] for row in rows], np.uint64), thumbnails)
        for row, entry in zip(rows, self._first_matches(thumbnails, starts, ends).tolist()):
            if entry >= 0:
                found[row] = (self._sources[self._source[entry]], int(self._preferred[entry]))
        return found

    def _windows(self, keys: np.ndarray, thumbnails: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per pair, the range of sorted entries with its text key and a brightness close enough."""
        at = np.minimum(np.searchsorted(self._sorted_keys, keys), len(self._sorted_keys) - 1)
        known = self._sorted_keys[at] == keys
        middle = self._window_key[at] - self._window_key[at] % _BRIGHTNESS_SPAN + thumbnails.sum(axis=1, dtype=np.int64)
        starts = np.searchsorted(self._window_key, middle - _MAX_SUM_DISTANCE, side="left")
        ends = np.searchsorted(self._window_key, middle + _MAX_SUM_DISTANCE, side="right")
        return starts, np.where(known, ends, starts)

    def _first_matches(self, thumbnails: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Per pair, the entry (its place in the order added) that matches first, or -1. The (pair,
        entry) comparisons are made _COMPARED_AT_ONCE at a time (a pair's whole window at least)."""
        sizes = ends - starts
        before = np.concatenate(([0], np.cumsum(sizes)))  # comparisons before each pair's
        first = np.full(len(thumbnails), len(self._order), np.int64)
        done = 0
        while done < len(thumbnails):
            upto = max(done + 1, int(np.searchsorted(before, before[done] + _COMPARED_AT_ONCE, side="right")) - 1)
            pair = np.repeat(np.arange(done, upto), sizes[done:upto])
            entry = np.arange(before[done], before[upto]) - before[pair] + starts[pair]
            distance = np.abs(thumbnails[pair].astype(np.int16) - self._sorted_thumbnails[entry]).sum(axis=1)
            close = distance <= _MAX_SUM_DISTANCE
            np.minimum.at(first, pair[close], self._order[entry[close]])
            done = upto
        return np.where(first < len(self._order), first, -1)


def _thumbnail_rows(images) -> np.ndarray:
    return np.frombuffer(b"".join(images), np.uint8).reshape(-1, THUMBNAIL[0] * THUMBNAIL[1])


# MAX_PIXEL_DISTANCE as a sum over the 64 grey levels (a mean <= 4.0 is a sum <= 256, exactly)
_MAX_SUM_DISTANCE = int(MAX_PIXEL_DISTANCE * THUMBNAIL[0] * THUMBNAIL[1])
_BRIGHTNESS_SPAN = 1 << 15  # more than a brightness (at most 64 * 255) plus _MAX_SUM_DISTANCE
_COMPARED_AT_ONCE = 1 << 18  # (pair, entry) comparisons per numpy step: 16 MiB of thumbnails
