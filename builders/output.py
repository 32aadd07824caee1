"""The output folder: what a build may write to, and how a finished build takes its place.

A build never destroys what is not its own. Before any input is read, `--out` is checked:
it must not overlap an input, must not be `/`, the home folder, the working directory or
one of its parents, must not be a file or a symbolic link, and must be absent, empty, or
(with `--overwrite`) a previous critic-data build holding nothing a build does not write
(BUILD_FILES, and the BUILD_FOLDERS holding only files of their kind).

The build is written to a sibling staging folder, `.<name>.partial-<pid>` (a name too long
to take the suffix is cut and given a hash of the whole: `.<cut>~<hash>.partial-<pid>`). At
the end, under a lock on the parent folder, `--out` must still be what it was at the start
(else nothing is replaced); the old output is moved aside (`.<name>.old-<pid>`), the new one renamed into
place, and only then the old one removed: at no moment is there neither. A failure or an
interrupt removes the staging folder and leaves `--out` as it was. Leftovers of builds that
died (their pid is gone) are removed, or put back where a build died between the renames;
the staging folder of a build still running makes a second build into the same `--out` stop.
A leftover name that is not a folder (a file, a symbolic link) was not made by a build: it is
left alone, never followed, removed or put back.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import hashlib
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from critic_data import UserError
from critic_data.files import refuse_a_path_that_cannot_be_a_folder
from critic_data.manifest import written_by_critic_data

BUILD_FILES = ("README.md", "build.json", "rejects.jsonl")
BUILD_FOLDERS = {"data": ".parquet", "plots": ".png"}  # the shards, the card's charts: folder -> file suffix
_NAME_MAX = 255  # bytes in a file name (Linux, macOS)
_SUFFIX_MAX = len(".partial-") + 10  # what a sibling's name adds to `.<name>`: a pid has at most 10 digits
_PID_MAX = 1 << 22  # Linux's PID_MAX_LIMIT: a larger number names no process


@contextmanager
def staged(out: Path, overwrite: bool, reads: Iterable[tuple[str, Path]]) -> Iterator[Path]:
    """Check `out` against the folders the build reads (`(option, folder)` pairs), yield an
    empty staging folder beside it, and move that into place when the block ends without error.
    On any error the staging folder is removed and `out` is left as it was."""
    _refuse_folders_never_replaced(out, reads)
    refuse_a_path_that_cannot_be_a_folder("--out", out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with _locked(out.parent):
            _clear_leftovers(out)
            seen = _replaceable(out, overwrite)
            staging = _sibling(out, "partial")
            staging.mkdir()
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:
            raise UserError(f"--out {out}: {error.strerror}; choose a shorter --out") from None
        raise UserError(f"cannot write beside --out {out}: {error.strerror or error}; choose an --out in a folder "
                        "you can write to") from None
    try:
        yield staging
        old = _swap(staging, out, seen)
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise UserError(f"{os.strerror(error.errno)} while writing the build beside {out}; free some space or "
                        f"choose another --out ({out} is unchanged)") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when it was moved into place
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)  # the new build is in place: a failure here loses nothing


def _refuse_folders_never_replaced(out: Path, reads: Iterable[tuple[str, Path]]) -> None:
    """Refuse an `out` that overlaps a folder the build reads, or that is `/`, the home folder,
    or the working directory or one of its parents (symbolic links resolved)."""
    real = _resolved("--out", out)
    cwd = Path.cwd().resolve()
    never = {parent: "a parent of the working directory" for parent in cwd.parents}
    never |= {Path(os.path.expanduser("~")).resolve(): "your home folder", Path("/"): "the root folder",
              cwd: "the working directory"}
    if real in never:
        raise UserError(f"--out {out} is {never[real]}; a build never replaces it: choose a new folder for --out")
    for option, folder in reads:
        other = _resolved(option, folder)
        if real == other or other in real.parents or real in other.parents:
            raise UserError(f"--out {out} overlaps {option} {folder}; choose an --out outside every input")


def _resolved(option: str, path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError) as error:  # a symbolic link loop: RuntimeError before Python 3.13
        raise UserError(f"cannot resolve {option} {path} ({getattr(error, 'strerror', None) or error}); fix the "
                        "symbolic links on that path, or pass another folder") from None


def _replaceable(out: Path, overwrite: bool) -> tuple | None:
    """What `out` holds now (see `_state`), once it is known the build may take its place."""
    if out.is_symlink():
        raise UserError(f"--out {out} is a symbolic link; pass the folder it points to, or another --out")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"{out} already exists and is not empty; choose another --out or pass --overwrite")
        foreign = _not_written_by_a_build(out)
        if foreign:
            raise UserError(f"--overwrite replaces only a previous critic-data build, and {out} holds {foreign}; "
                            "choose another --out, or empty it yourself")
    return _state(out)


def _not_written_by_a_build(out: Path) -> str | None:
    """What in `out` a critic-data build does not write, in words; None for a previous build."""
    data = out / "data"
    foreign = [p.name for p in out.iterdir() if p.is_symlink() or not (
        p.is_file() and p.name in BUILD_FILES or p.is_dir() and p.name in BUILD_FOLDERS)]
    for name, suffix in BUILD_FOLDERS.items():
        folder = out / name
        if folder.is_dir() and not folder.is_symlink():
            foreign += [f"{name}/{p.name}" for p in folder.iterdir()
                        if p.is_symlink() or not p.is_file() or p.suffix != suffix]
    if foreign:
        listed = ", ".join(sorted(foreign)[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        return f"files a build does not write ({listed})"
    if not written_by_critic_data(out) or not data.is_dir():
        return "no critic-data build.json and data/ folder"
    return None


def _state(out: Path) -> tuple | None:
    """Every path under `out` with its inode, size and modification time: any change shows.
    None when `out` is absent."""
    if not os.path.lexists(out):
        return None
    entries = []
    for folder, names, files in os.walk(out):
        for name in ["", *names, *files]:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            entries.append((os.path.relpath(path, out), info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(sorted(entries))


def _swap(staging: Path, out: Path, seen: tuple | None) -> Path | None:
    """Rename `staging` to `out` if `out` is still what it was at the start; return the previous
    output, moved aside, for the caller to remove (None when there was none)."""
    with _locked(out.parent):
        if _state(out) != seen:
            raise UserError(f"{out} changed while the build ran (another build, or files put there); "
                            "nothing was replaced and the new build was discarded: rerun when it is settled")
        old = _sibling(out, "old") if seen is not None else None
        try:
            if old is not None:
                out.rename(old)
            try:
                staging.rename(out)
            except BaseException:
                if old is not None:
                    old.rename(out)
                raise
        except OSError as error:
            raise UserError(f"could not move the new build into {out}: {os.strerror(error.errno)}; "
                            f"{out} is unchanged") from None
    return old


def _stem(out: Path) -> str:
    """How the names of `out`'s siblings start: `.<name>`, or for a name too long to take their
    suffix, its first 150 bytes and a hash of the whole (distinct names keep distinct stems)."""
    name = out.name.encode()  # UTF-8: the options refuse any other name
    if len(name) + 1 + _SUFFIX_MAX <= _NAME_MAX:
        return f".{out.name}"
    return f".{name[:150].decode(errors='ignore')}~{hashlib.blake2b(name, digest_size=8).hexdigest()}"


def _sibling(out: Path, kind: str) -> Path:
    return out.parent / f"{_stem(out)}.{kind}-{os.getpid()}"


def _clear_leftovers(out: Path) -> None:
    """Remove what builds into `out` that died left beside it; refuse while one still runs."""
    stem = _stem(out)
    for path in sorted(out.parent.glob(f"{glob.escape(stem)}.*-*")):
        kind, _, pid = path.name[len(stem) + 1 :].partition("-")
        if kind not in ("partial", "old") or not (pid.isascii() and pid.isdigit()):
            continue
        if path.is_symlink() or not path.is_dir():
            continue  # not a build's folder: not ours to remove or put back
        if int(pid) != os.getpid() and _running(int(pid)):
            raise UserError(f"another build (pid {pid}) is writing {out}; wait for it to finish or choose another "
                            f"--out (if no build is running, remove {path})")
        if kind == "old" and not os.path.lexists(out):
            path.rename(out)  # it died between its two renames: the previous output goes back
        else:
            shutil.rmtree(path)


def _running(pid: int) -> bool:
    if not 0 < pid <= _PID_MAX:  # pid 0 would ask about our own process group; os.kill refuses huge numbers
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder` itself (no lock file is left behind); builds into the
    same parent folder take turns at their checks and swaps, each a moment long."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)
