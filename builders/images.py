"""Image validation: never re-encode; read only as much as the check needs.

Rows keep each image's original bytes. Two levels of check (`--image-check`):

- `structure` (default): every header segment is parsed (for JPEG, by libjpeg-turbo through
  simplejpeg, the library Pillow decodes JPEGs with: markers, quantisation and Huffman tables,
  the frame, up to the first scan; for other formats by PIL), the pixel count is bounded, and
  the data must be complete: a JPEG must end its scan data with an end-of-image marker, a
  PNG's chunks (an animated PNG's frames included) must all pass their CRCs through IEND;
  other formats are decoded, every frame of an animation (a GIF must also end with its
  trailer: one cut between two frames decodes). This catches truncated downloads and damaged
  headers at a small fraction of the cost of decoding (a few microseconds per JPEG).
- `decode`: the same, and every image is decoded too, every frame of an animation (JPEGs at
  1/8 size via PIL's draft mode, which still reads the whole entropy-coded stream). libjpeg
  only warns about most corrupt entropy data (it even accepts a scan cut short and
  re-terminated), so this rejects little more, for about a hundred times the CPU.

An animation's pixels are its frames' (frames x width x height): `max_pixels` bounds the
work of decoding it as it bounds a still image's.

Zip archive members are read here, by the bounded read of image files (`files.read_capped`):
never more than MAX_IMAGE_BYTES (a member's declared size is checked before inflating, and
inflating stops past the cap should it lie).
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zipfile

import simplejpeg
from PIL import Image

from critic_data import files
from critic_data.builders.options import DEFAULT_MAX_PIXELS
from critic_data.files import ImageFileError
from critic_data.schemas import RejectReason

_JPEG_SOI = b"\xff\xd8\xff"  # start-of-image and the first marker's 0xFF, as PIL requires
_JPEG_EOI = b"\xff\xd9"
_JPEG_SOS = 0xDA
_GIF_TRAILER = b";"
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]++")  # "<_io.BytesIO object at 0x7f...>": differs from run to run


def read_archive_member(archive: zipfile.ZipFile, name: str) -> bytes:
    """A zip member's bytes, at most MAX_IMAGE_BYTES: judged by its declared size before
    inflating, and inflated no further than the cap. A damaged member is an ImageFileError."""
    info = archive.getinfo(name)
    try:
        return files.read_capped(name, info.file_size, lambda: archive.open(info))
    except (MemoryError, ImageFileError):
        raise  # the machine's limit, not the member's defect; or over the cap
    except Exception as error:  # zipfile raises what its parts do: BadZipFile, zlib.error, LZMAError, EOFError
        # (a declared size past the data), RuntimeError (encrypted), NotImplementedError (a compression method)
        raise ImageFileError(RejectReason.IMAGE_UNDECODABLE,
                             f"cannot read {name} from the archive: {_detail(error)}") from None


def _detail(error: Exception) -> str:
    """An error as a reject's detail: short, and the same in every run (no memory address)."""
    return f"{type(error).__name__}: {_ADDRESS.sub('', str(error)[:300])[:200]}"


def check_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS,
                level: str = "structure") -> tuple[RejectReason, str] | None:
    """None when `data` is a complete image within `max_pixels`; else the reason and a detail."""
    if not data:
        return RejectReason.IMAGE_MISSING, "empty image bytes"
    try:
        files.refuse_over_cap(len(data), "the image")  # bytes from parquet met no bounded read
    except ImageFileError as error:
        return error.reason, error.detail
    try:
        if data.startswith(_JPEG_SOI):
            problem = _jpeg_problem(data, max_pixels)
            if problem or level == "structure":
                return problem
        with warnings.catch_warnings():
            # our own pixel limit below decides; PIL still raises past twice its own limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    return RejectReason.IMAGE_TOO_LARGE, f"{width}x{height} exceeds {max_pixels} pixels"
                kind = image.format
                frames = getattr(image, "n_frames", 1)  # a GIF's frames are counted by reading their headers
                if frames * width * height > max_pixels:
                    return RejectReason.IMAGE_TOO_LARGE, (f"{frames} frames of {width}x{height} exceed {max_pixels} "
                                                          "pixels")
                if kind == "PNG":
                    image.verify()  # every chunk's CRC, through IEND
            if level == "decode" or kind not in ("JPEG", "PNG"):
                with Image.open(io.BytesIO(data)) as image:
                    if kind == "JPEG":
                        image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                    for frame in range(frames):  # a later frame may be the damaged one
                        image.seek(frame)
                        image.load()
            if kind == "GIF" and not data.rstrip(b"\0").endswith(_GIF_TRAILER):
                return RejectReason.IMAGE_UNDECODABLE, "GIF data ends before its trailer (truncated)"
    except Image.DecompressionBombError as error:
        return RejectReason.IMAGE_TOO_LARGE, str(error)[:200]
    except MemoryError:
        raise  # the machine's limit, not the image's defect
    except Exception as error:  # decoders raise what they like: OSError, SyntaxError, RuntimeError (AVIF), struct.error
        return RejectReason.IMAGE_UNDECODABLE, _detail(error)
    return None


def _jpeg_problem(data: bytes, max_pixels: int) -> tuple[RejectReason, str] | None:
    """The structural check of a JPEG: libjpeg-turbo reads the header, and the scan data must
    end in an end-of-image marker."""
    try:
        width, height, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError as error:
        return RejectReason.IMAGE_UNDECODABLE, f"JPEG header: {str(error)[:200]}"
    if width * height > max_pixels:
        return RejectReason.IMAGE_TOO_LARGE, f"{width}x{height} exceeds {max_pixels} pixels"
    scan_start = _jpeg_scan_start(data)
    if scan_start is None or data.rfind(_JPEG_EOI) < scan_start:
        return RejectReason.IMAGE_UNDECODABLE, "JPEG data ends before its end-of-image marker (truncated)"
    return None


def _jpeg_scan_start(data: bytes) -> int | None:
    """Where the first scan's entropy-coded data begins: just past the start-of-scan segment
    (walking the segment lengths libjpeg has just checked; an embedded thumbnail's markers
    sit inside an APP segment and are stepped over)."""
    position, last = 2, len(data) - 4  # a segment's marker and length: 4 bytes
    while position <= last:
        fill, marker, length = _SEGMENT_HEAD(data, position)
        if fill != 0xFF:
            return None
        if marker == 0xFF:  # a fill byte before a marker
            position += 1
            continue
        if marker == _JPEG_SOS:
            return position + 2 + length
        position += 2 + length
    return None


_SEGMENT_HEAD = struct.Struct(">BBH").unpack_from  # 0xFF, the marker, the segment's length
