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

The build keeps the content keys of the pairs each source kept; a pair of a later source whose
text key joins (polars) an earlier source's and whose thumbnail is close is a duplicate of that
source. Within one source, exact keys decide, as before.
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


def text_key(question: str, first: str, second: str) -> int:
    """A 64-bit hash of the normalised question and the two normalised responses, in either order."""
    responses = sorted((normalize_text(first), normalize_text(second)))
    return xxhash.xxh3_64_intdigest("\x00".join([normalize_text(question), *responses]).encode("utf-8", "surrogatepass"))


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
    """Content keys of the pairs kept from the sources built so far."""

    def __init__(self) -> None:
        self._index = None  # a polars DataFrame (text_key, source, thumbnail) once a source has keys
        self._pending: list[tuple[int, str, bytes]] = []

    def add(self, key: int, source: str, image: bytes | None) -> None:
        if image is not None:
            self._pending.append((key, source, image))

    def seal(self) -> None:
        """Make the keys added so far (a finished source's) visible to `earlier_copies`."""
        if self._pending:
            import polars as pl  # only builds of several sources get here

            schema = {"text_key": pl.UInt64, "source": pl.String, "thumbnail": pl.Binary}
            added = pl.DataFrame(self._pending, schema=schema, orient="row")
            self._index = added if self._index is None else pl.concat([self._index, added]).rechunk()
            self._pending = []

    def earlier_copies(self, keys: list[int], images: list[bytes | None]) -> list[str | None]:
        """For each pair (text key, thumbnail), the earlier source that holds a copy of it, or None."""
        found: list[str | None] = [None] * len(keys)
        if self._index is None or not keys:
            return found
        import polars as pl

        candidates = pl.DataFrame({"row": range(len(keys)), "text_key": keys}, schema={"row": pl.UInt32, "text_key": pl.UInt64})
        joined = candidates.join(self._index, on="text_key", how="inner").sort("row", maintain_order=True)
        for row, source, earlier in joined.select("row", "source", "thumbnail").iter_rows():
            image = images[row]
            if found[row] is None and image is not None and _distance(image, earlier) <= MAX_PIXEL_DISTANCE:
                found[row] = source
        return found


def _distance(a: bytes, b: bytes) -> float:
    return float(np.abs(np.frombuffer(a, np.uint8).astype(np.int16) - np.frombuffer(b, np.uint8)).mean())
