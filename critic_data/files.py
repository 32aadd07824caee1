"""Reading files the user points at, bounded, and JSON Lines files: what builders/ and rl/ share.

A leaf: it imports nothing of critic-data's but UserError and the reject reasons. Images are read only from
regular files (a FIFO would block a run, a link to /dev/zero never end), and never more than
MAX_IMAGE_BYTES; a local input is fingerprinted cheaply enough for multi-GB archives, and named in
what is published (build.json, cards) without the user's folders (`published_path`).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

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


def over_cap(what: str) -> ImageFileError:
    return ImageFileError(RejectReason.IMAGE_FILE_TOO_LARGE, f"{what} is over the image size cap of {MAX_IMAGE_BYTES} bytes")


def read_image_file(path: Path) -> bytes:
    """The bytes of the regular file at `path`, at most MAX_IMAGE_BYTES; else ImageFileError."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # follows links: a link to /dev/zero is a device
            raise ImageFileError(RejectReason.IMAGE_MISSING, f"{path.name} is not a regular file")
        # non-blocking: a file swapped for a FIFO since the check cannot hang the open
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (OSError, ValueError) as error:  # missing, a link loop, a name too long, a NUL byte
        raise ImageFileError(RejectReason.IMAGE_MISSING, f"cannot open {path.name!r}: {_why(error)}") from None
    try:
        with open(descriptor, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ImageFileError(RejectReason.IMAGE_MISSING, f"{path.name} is not a regular file")
            if info.st_size > MAX_IMAGE_BYTES:
                raise over_cap(f"{path.name} ({info.st_size} bytes)")
            data = handle.read(MAX_IMAGE_BYTES + 1)  # the file may have grown since
    except OSError as error:
        raise ImageFileError(RejectReason.IMAGE_UNDECODABLE, f"cannot read {path.name}: {_why(error)}") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise over_cap(path.name)
    return data


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
    """(line number, the raw line, its JSON value) for each non-blank line of a JSON Lines file,
    the value replaced by the exception that stopped reading it (not UTF-8, not JSON, nested past
    Python's recursion limit, an integer past its 4300 digits). Lines end at b"\\n" only, as JSON
    Lines defines them (a U+2028 inside a string is not a line break); a byte-order mark at the
    start is read as one."""
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            if not text.strip():
                continue
            value = json.loads(text)
        except (ValueError, RecursionError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            value = error
        yield number, raw, value


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
