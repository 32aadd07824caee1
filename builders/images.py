"""Image validation: never re-encode; read only as much as the check needs.

Rows keep each image's original bytes. Two levels of check (`--image-check`):

- `structure` (default): PIL parses every header segment (for JPEG: markers, tables and the
  frame up to the first scan), the pixel count is bounded, and the data must be complete: a
  JPEG must end its scan data with an end-of-image marker, a PNG's chunks must all pass
  their CRCs through IEND; other formats are decoded. This catches truncated downloads and
  damaged headers at a tenth of the cost of decoding.
- `decode`: the same, and every image is decoded too (JPEGs at 1/8 size via PIL's draft
  mode, which still reads the whole entropy-coded stream). libjpeg only warns about most
  corrupt entropy data (it even accepts a scan cut short and re-terminated), so this
  rejects few more images, e.g. a bogus Huffman table, for roughly ten times the CPU.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from critic_data.schemas import RejectReason

DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own decompression-bomb threshold
IMAGE_CHECKS = ("structure", "decode")
_JPEG_EOI = b"\xff\xd9"


def check_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, level: str = "structure") -> tuple[RejectReason, str] | None:
    """None when `data` is a complete image within `max_pixels`; else the reason and a detail."""
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
                kind = image.format
                if kind == "JPEG":
                    scan_start = image.tile[0][2] if image.tile else len(data)
                    if data.rfind(_JPEG_EOI) < scan_start:
                        return RejectReason.IMAGE_UNDECODABLE, "JPEG data ends before its end-of-image marker (truncated)"
                elif kind == "PNG":
                    image.verify()  # every chunk's CRC, through IEND
            if level == "decode" or kind not in ("JPEG", "PNG"):
                with Image.open(io.BytesIO(data)) as image:
                    if kind == "JPEG":
                        image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                    image.load()
    except Image.DecompressionBombError as error:
        return RejectReason.IMAGE_TOO_LARGE, str(error)[:200]
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
        return RejectReason.IMAGE_UNDECODABLE, f"{type(error).__name__}: {str(error)[:200]}"
    return None
