"""Reading files the user points at, bounded, and JSON Lines files: what builders/ and rl/ share.

A leaf: it imports nothing of critic-data's but UserError and the reject reasons. Images are read only from
regular files (a FIFO would block a run, a link to /dev/zero never end), and never more than
MAX_IMAGE_BYTES; a local input is fingerprinted cheaply enough for multi-GB archives, and named in
what is published (build.json, cards) without the user's folders (`published_path`). JSON Lines
are split into lines by one rule (`split_json_lines`), for the build's inputs and the runs' files.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from critic_data import UserError
from critic_data.schemas.rejects import RejectReason

_SAMPLE = 1 << 20  # fingerprint: size + the first and last MiB of each file

# No image a source ships comes near this (its photos are a few MB): past it a file is
# rejected unread, so one huge or lying file cannot exhaust memory. Read at call time.
MAX_IMAGE_BYTES = 64 * 1024 * 1024


class ImageFileError(Exception):
    """An image file that was not read, with the reject's reason and detail."""

    def __init__(self, reason: RejectReason, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def refuse_over_cap(size: int, what: str) -> None:
    """ImageFileError (image_file_too_large) when `size`, the bytes of the image `what`, is over the cap."""
    if size > MAX_IMAGE_BYTES:
        raise ImageFileError(RejectReason.IMAGE_FILE_TOO_LARGE,
                             f"{what} is over the image size cap of {MAX_IMAGE_BYTES} bytes ({size} bytes)")


def read_capped(name: str, declared_size: int, open_data: Callable[[], BinaryIO]) -> bytes:
    """The bytes of the image `name` that `open_data()` gives, at most MAX_IMAGE_BYTES: refused
    unopened when the size its file system or archive declares is over the cap, and read no
    further than one byte past the cap should that size lie (the file grew, the archive lies)."""
    refuse_over_cap(declared_size, name)
    with open_data() as data:
        image = data.read(MAX_IMAGE_BYTES + 1)
    refuse_over_cap(len(image), name)
    return image


def image_file_status(path: Path, name: str) -> os.stat_result:
    """The status of the image file at `path` (links followed: a link to /dev/zero is a device),
    named `name` in the ImageFileError raised unless it is a regular file within the cap. OSError
    (and ValueError: a NUL byte) when there is no such file."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise ImageFileError(RejectReason.IMAGE_MISSING, f"{name} is not a regular file")
    refuse_over_cap(info.st_size, name)
    return info


def read_image_file(path: Path) -> bytes:
    """The bytes of the regular file at `path`, at most MAX_IMAGE_BYTES; else ImageFileError."""
    try:
        image_file_status(path, path.name)
        # non-blocking: a file swapped for a FIFO since the check cannot hang the open
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (OSError, ValueError) as error:  # missing, a link loop, a name too long, a NUL byte
        raise ImageFileError(RejectReason.IMAGE_MISSING, f"cannot open {path.name!r}: {_why(error)}") from None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise ImageFileError(RejectReason.IMAGE_MISSING, f"{path.name} is not a regular file")
        return read_capped(path.name, info.st_size, lambda: open(descriptor, "rb", closefd=False))
    except OSError as error:
        raise ImageFileError(RejectReason.IMAGE_UNDECODABLE, f"cannot read {path.name}: {_why(error)}") from None
    finally:
        os.close(descriptor)


def refuse_a_path_that_cannot_be_a_folder(option: str, path: Path) -> None:
    """The folder a command writes in must be one, or a name where one can be made: not a file, not
    under one, not a link to nothing (mkdir would say "File exists" or "Not a directory")."""
    if os.path.islink(path) and not os.path.exists(path):  # os.path: False, not an error, for a name too long
        raise UserError(f"{option} {path} is a link to {os.readlink(path)}, which does not exist; pass a folder")
    above = next(folder for folder in (path, *path.parents) if os.path.lexists(folder))
    if not above.is_dir():
        raise UserError(f"{option} {path}{'' if above == path else f': {above}'} is a file, not a folder; "
                        f"choose another {option}")


def _why(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error)


def fingerprint(path: Path) -> str:
    """blake2b over a file's size and its first and last MiB: cheap on multi-GB archives,
    and changes whenever a file is replaced, truncated or appended to."""
    size = path.stat().st_size
    digest = hashlib.blake2b(str(size).encode(), digest_size=16)
    with path.open("rb") as handle:
        digest.update(handle.read(_SAMPLE))
        if size > _SAMPLE:
            handle.seek(max(_SAMPLE, size - _SAMPLE))
            digest.update(handle.read(_SAMPLE))
    return digest.hexdigest()


def json_lines(path: Path) -> Iterator[tuple[int, bytes, object]]:
    """`json_values` of every line of a JSON Lines file."""
    return json_values(path.read_bytes())


def json_values(data: bytes, first_number: int = 1, errors: str = "strict") -> Iterator[tuple[int, bytes, object]]:
    """(line number, the raw line without its end, its JSON value) for each non-blank line of JSON
    Lines bytes (the first numbered `first_number`), the value replaced by the exception that
    stopped reading it (not UTF-8, not JSON, nested past Python's recursion limit, an integer past
    its 4300 digits). A line is parsed as text mode reads it, its end as "\\n" (an unterminated
    string then reads as one). Line 1 starts the file: a byte-order mark there is read as one.
    `errors`: how bytes that are not UTF-8 are decoded (`bytes.decode`)."""
    for number, line in enumerate(split_json_lines(data), start=first_number):
        raw = line.rstrip(b"\r\n")  # one end at most: content never ends in one
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8", errors) + ("\n" if raw != line else "")
            if not text.strip():
                continue
            value = json.loads(text)
        except (ValueError, RecursionError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            value = error
        yield number, raw, value


def split_json_lines(data: bytes) -> list[bytes]:
    """The lines of JSON Lines bytes, each with its end: a line ends at \\n, \\r\\n or a lone \\r,
    as Python's text mode reads a file (files written on Windows, or by old Mac tools), and
    nowhere else: a U+2028 inside a JSON string is text (`str.splitlines` would break there,
    `bytes.splitlines` does not)."""
    return data.splitlines(keepends=True)


def published_path(path: Path | str) -> str:
    """How a published file (build.json, a card) names a local path, which as it is on this
    machine holds the user's name and folders: relative to the working directory when it lies
    inside it (as typed in a project folder, so a recorded command reads back there), else its
    base name alone. A working directory above the home folder (`/`, `/home`) gives base names
    too: a path relative to it would still name the user. Content fingerprints, not the path,
    say which data it was."""
    absolute, cwd = os.path.abspath(path), os.getcwd()
    home = os.path.abspath(os.path.expanduser("~"))
    above_home = cwd != home and os.path.commonpath([cwd, home]) == cwd
    if os.path.commonpath([absolute, cwd]) == cwd and not above_home:
        return os.path.relpath(absolute, cwd)
    return os.path.basename(absolute) or absolute  # "/" has no base name, and names no one
