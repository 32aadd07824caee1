"""Image validation: decode to check, never re-encode.

Rows keep each image's original bytes; decoding only proves they are a complete image of
sane size. JPEGs are decoded at reduced size (PIL's draft mode), which still reads the whole
entropy-coded stream, so truncation is caught at a fraction of the cost.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from critic_data.schemas import RejectReason

DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own decompression-bomb threshold


def check_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[RejectReason, str] | None:
    """None when `data` is a complete, decodable image within `max_pixels`; else why not."""
    if not data:
        return RejectReason.IMAGE_MISSING, "empty image bytes"
    try:
        with warnings.catch_warnings():
            # our own pixel limit below decides; PIL still raises past twice its own limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    return RejectReason.IMAGE_TOO_LARGE, f"{width}x{height} exceeds {max_pixels} pixels"
                if image.format == "JPEG":
                    image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                image.load()
    except Image.DecompressionBombError as error:
        return RejectReason.IMAGE_TOO_LARGE, str(error)[:200]
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        return RejectReason.IMAGE_UNDECODABLE, f"{type(error).__name__}: {str(error)[:200]}"
    return None
