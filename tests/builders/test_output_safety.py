"""The output folder: a build never destroys what is not its own, and a failed build keeps
the old output (README "Guarantees")."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from critic_data import UserError
from critic_data.builders.options import BuildOptions
from critic_data.builders.pipeline import build
from critic_data.builders.writer import SplitWriter
from tests.cli import one_line_error, run_cli
from tests.snapshots import write_vlfeedback_jsonl

# About the output folder and the rows, not the card: builds here skip drawing its charts
# (conftest.charts_not_drawn).
pytestmark = pytest.mark.usefixtures("charts_not_drawn")

BUILD = ("build", "--source", "vlfeedback", "--num-proc", "1")


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("snap") / "vlfeedback"
    write_vlfeedback_jsonl(folder, n=12)
    return folder


@pytest.fixture(scope="module")
def previous(snapshot, tmp_path_factory) -> Path:
    """A finished build with another seed than the builds below: other data bytes."""
    out = tmp_path_factory.mktemp("previous") / "o"
    build(BuildOptions(out=out, inputs={"vlfeedback": snapshot}, seed=1, test_size=0.3))
    return out


def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` with its bytes (None for a folder)."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def _siblings(folder: Path) -> list[str]:
    """Staging and set-aside folders a build leaves beside its output."""
    return sorted(p.name for p in folder.rglob(".*") if ".partial-" in p.name or ".old-" in p.name)


def _cli(*args: object, **how) -> subprocess.CompletedProcess:
    return run_cli(*BUILD, *args, **how)


def _no_read(*args, **kwargs):
    raise AssertionError("the build read its input before refusing --out")


@pytest.mark.parametrize("where", ["the input", "inside the input", "a folder holding the input",
                                   "the input through a symlink", "inside --image-root"])
def test_an_out_overlapping_an_input_is_refused_before_reading(where, snapshot, tmp_path):
    inputs = tmp_path / "inputs"
    shutil.copytree(snapshot, inputs / "vlf")
    (inputs / "coco").mkdir()
    (inputs / "coco" / "1.jpg").write_bytes(b"an image")
    (tmp_path / "link").symlink_to(inputs / "vlf")
    before = _tree(inputs)
    given, out = {
        "the input": (inputs / "vlf", inputs / "vlf"),
        "inside the input": (inputs / "vlf", inputs / "vlf" / "data"),
        "a folder holding the input": (inputs / "vlf", inputs),
        "the input through a symlink": (tmp_path / "link", inputs / "vlf"),
        "inside --image-root": (inputs / "vlf", inputs / "coco" / "out"),
    }[where]
    line = one_line_error(_cli("--input", given, "--image-root", inputs / "coco", "--out", out, "--overwrite"))
    assert f"--out {out} overlaps" in line
    assert _tree(inputs) == before
    assert not _siblings(tmp_path)


def test_overlap_is_refused_before_any_input_is_opened(snapshot, monkeypatch):
    monkeypatch.setattr("critic_data.builders.pipeline.resolve_snapshot", _no_read)
    with pytest.raises(UserError, match="overlaps --input"):
        build(BuildOptions(out=snapshot / "out", inputs={"vlfeedback": snapshot}))


@pytest.mark.parametrize("which", ["the working directory", "a parent of the working directory", "your home folder"])
def test_overwrite_never_replaces_home_or_the_working_directory(which, previous, snapshot, tmp_path):
    # each of them holds a critic-data build: only the rule for these folders stops the build
    build_copy = tmp_path / "build"
    shutil.copytree(previous, build_copy)
    before = _tree(build_copy)
    cwd, out, home = {
        "the working directory": (build_copy, ".", tmp_path / "home"),
        "a parent of the working directory": (build_copy / "data", "..", tmp_path / "home"),
        "your home folder": (tmp_path, build_copy, build_copy),
    }[which]
    line = one_line_error(_cli("--input", snapshot, "--out", out, "--overwrite", cwd=cwd,
                          env={"HOME": str(home)}))
    assert f"is {which}" in line
    assert _tree(build_copy) == before
    assert not _siblings(tmp_path)


def test_the_root_folder_is_never_an_out(snapshot, monkeypatch):
    monkeypatch.setattr("critic_data.builders.pipeline.resolve_snapshot", _no_read)
    with pytest.raises(UserError, match="is the root folder"):
        build(BuildOptions(out=Path("/"), inputs={"vlfeedback": snapshot}, overwrite=True))


def _user_folder(out: Path, previous: Path) -> None:
    out.mkdir()
    (out / "notes.txt").write_text("mine")


def _build_plus_a_file(out: Path, previous: Path) -> None:
    shutil.copytree(previous, out)
    (out / "notes.txt").write_text("mine")


def _lookalike(out: Path, previous: Path) -> None:
    """build.json and data/, but not a critic-data build."""
    shutil.copytree(previous, out)
    (out / "build.json").write_text('{"tool": {"name": "something-else"}}')


def _a_symlinked_shard(out: Path, previous: Path) -> None:
    shutil.copytree(previous, out)
    shard = next((out / "data").iterdir())
    shard.unlink()
    shard.symlink_to(previous / "data" / shard.name)


@pytest.mark.parametrize("make", [_user_folder, _build_plus_a_file, _lookalike, _a_symlinked_shard])
def test_overwrite_replaces_only_a_previous_build(make, previous, snapshot, tmp_path, monkeypatch):
    out = tmp_path / "o"
    make(out, previous)
    before = _tree(out)
    monkeypatch.setattr("critic_data.builders.pipeline.resolve_snapshot", _no_read)
    with pytest.raises(UserError, match="--overwrite replaces only a previous critic-data build") as refused:
        build(BuildOptions(out=out, inputs={"vlfeedback": snapshot}, overwrite=True))
    assert "\n" not in str(refused.value)
    assert _tree(out) == before
    assert not _siblings(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_second_build_into_the_same_out_is_refused_and_the_first_is_kept(overwrite, previous, snapshot, tmp_path,
                                                                           monkeypatch):
    """Two processes: while this build writes, another `critic-data build` into the same --out."""
    out = tmp_path / "o"
    if overwrite:
        shutil.copytree(previous, out)
    second = []
    write = SplitWriter.write

    def write_then_start_another(self, table):
        if not second:
            second.append(_cli("--input", snapshot, "--out", out, *(["--overwrite"] if overwrite else [])))
        write(self, table)

    monkeypatch.setattr(SplitWriter, "write", write_then_start_another)
    manifest = build(BuildOptions(out=out, inputs={"vlfeedback": snapshot}, overwrite=overwrite))
    line = one_line_error(second[0])
    assert f"another build (pid {os.getpid()}) is writing {out}" in line
    assert json.loads((out / "build.json").read_text()) == manifest
    assert manifest["seed"] == 0
    assert not _siblings(tmp_path)


@pytest.mark.parametrize("overwrite", [False, True])
def test_files_put_into_out_while_the_build_runs_are_kept(overwrite, previous, snapshot, tmp_path, monkeypatch):
    out = tmp_path / "o"
    if overwrite:
        shutil.copytree(previous, out)
    write = SplitWriter.write

    def write_and_meddle(self, table):
        out.mkdir(exist_ok=True)
        (out / "notes.txt").write_text("mine")
        write(self, table)

    monkeypatch.setattr(SplitWriter, "write", write_and_meddle)
    expected = {**(_tree(previous) if overwrite else {}), "notes.txt": b"mine"}
    with pytest.raises(UserError, match=f"{out} changed while the build ran"):
        build(BuildOptions(out=out, inputs={"vlfeedback": snapshot}, overwrite=overwrite))
    assert _tree(out) == expected
    assert not _siblings(tmp_path)


@pytest.mark.parametrize("depth", [1, 2])
def test_an_out_under_a_file_is_one_line_naming_the_file(depth, snapshot, tmp_path):
    """Before: "cannot write beside --out ...: File exists" (or "Not a directory")."""
    (tmp_path / "notes").write_text("mine")
    out = tmp_path / "notes" / "o" if depth == 1 else tmp_path / "notes" / "a" / "o"
    line = one_line_error(_cli("--input", snapshot, "--out", out))
    assert f"--out {out}: {tmp_path / 'notes'} is a file, not a folder" in line
    assert (tmp_path / "notes").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes"]


@pytest.mark.parametrize("kind", ["a file", "a symlink to an empty folder", "a symlink to a build"])
def test_an_out_that_is_a_file_or_a_symlink_is_one_line(kind, previous, snapshot, tmp_path):
    out = tmp_path / "o"
    target = tmp_path / "target"
    if kind == "a file":
        out.write_text("mine")
        target = out
    else:
        if kind == "a symlink to a build":
            shutil.copytree(previous, target)
        else:
            target.mkdir()
        out.symlink_to(target)
    before = _tree(tmp_path)
    line = one_line_error(_cli("--input", snapshot, "--out", out, "--overwrite"))
    assert f"--out {out} is {'a file' if kind == 'a file' else 'a symbolic link'}" in line
    assert _tree(tmp_path) == before and out.is_symlink() == (kind != "a file")
    assert not _siblings(tmp_path)


def test_an_out_in_a_folder_that_cannot_be_written_is_one_line(snapshot, tmp_path, monkeypatch):
    # a read-only folder, as root sees none: refuse every folder made inside it
    locked = tmp_path / "readonly"
    locked.mkdir()
    mkdir = os.mkdir

    def refuse(path, *args, **kwargs):
        if Path(path).parent == locked:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", refuse)
    with pytest.raises(UserError, match="Permission denied") as refused:
        build(BuildOptions(out=locked / "o", inputs={"vlfeedback": snapshot}))
    assert "\n" not in str(refused.value) and "choose an --out in a folder you can write to" in str(refused.value)
    assert list(locked.iterdir()) == []


def test_a_full_disk_mid_build_is_one_line_and_keeps_the_old_output(previous, snapshot, tmp_path, monkeypatch):
    out = tmp_path / "o"
    shutil.copytree(previous, out)
    before = _tree(out)

    def disk_full(writer, table):  # what pyarrow raises when the device is full
        raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr("critic_data.builders.writer._write_contiguous", disk_full)
    with pytest.raises(UserError, match="No space left on device") as refused:
        build(BuildOptions(out=out, inputs={"vlfeedback": snapshot}, overwrite=True))
    assert "\n" not in str(refused.value) and f"{out} is unchanged" in str(refused.value)
    assert _tree(out) == before
    assert not _siblings(tmp_path)


def _dead_pid() -> int:
    finished = subprocess.Popen(["true"])
    finished.wait()
    return finished.pid


def test_leftovers_of_dead_builds_are_removed(snapshot, tmp_path):
    leftover = tmp_path / f".o.partial-{_dead_pid()}"
    (leftover / "data").mkdir(parents=True)
    (leftover / "data" / ".train-00000.parquet.partial").write_bytes(b"half")
    build(BuildOptions(out=tmp_path / "o", inputs={"vlfeedback": snapshot}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_a_build_that_died_between_its_two_renames_gets_its_old_output_back(previous, snapshot, tmp_path, monkeypatch):
    """The previous output moved aside, the new one not yet in place: the next build puts
    the previous one back (and, without --overwrite, refuses to replace it)."""
    dead = _dead_pid()
    shutil.copytree(previous, tmp_path / f".o.old-{dead}")
    (tmp_path / f".o.partial-{dead}").mkdir()
    monkeypatch.setattr("critic_data.builders.pipeline.resolve_snapshot", _no_read)
    with pytest.raises(UserError, match="already exists and is not empty"):
        build(BuildOptions(out=tmp_path / "o", inputs={"vlfeedback": snapshot}))
    assert _tree(tmp_path / "o") == _tree(previous)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_a_running_build_s_staging_folder_is_named_not_removed(snapshot, tmp_path):
    running = subprocess.Popen(["sleep", "60"])
    try:
        staging = tmp_path / f".o.partial-{running.pid}"
        staging.mkdir()
        with pytest.raises(UserError, match=f"another build \\(pid {running.pid}\\) is writing .*remove {staging}"):
            build(BuildOptions(out=tmp_path / "o", inputs={"vlfeedback": snapshot}))
        assert staging.is_dir() and not (tmp_path / "o").exists()
    finally:
        running.kill()
        running.wait()


@pytest.mark.parametrize("failure", [RuntimeError("a bug mid-build"), KeyboardInterrupt()])
def test_a_build_that_fails_mid_way_keeps_the_old_output(failure, previous, snapshot, tmp_path, monkeypatch):
    out = tmp_path / "o"
    shutil.copytree(previous, out)
    before = _tree(out)

    def fail(self, table):
        raise failure

    monkeypatch.setattr(SplitWriter, "write", fail)
    with pytest.raises(type(failure)):
        build(BuildOptions(out=out, inputs={"vlfeedback": snapshot}, overwrite=True))
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


@pytest.mark.parametrize("failure", [OSError(errno.EBUSY, os.strerror(errno.EBUSY)), KeyboardInterrupt()])
@pytest.mark.parametrize("step", ["moving the old output aside", "moving the new one into place"])
def test_a_failure_during_the_final_swap_keeps_the_old_output(step, failure, previous, snapshot, tmp_path, monkeypatch):
    """Everything written, then the swap's first or second rename fails: never neither."""
    out = tmp_path / "o"
    shutil.copytree(previous, out)
    before = _tree(out)
    rename = os.rename

    def failing_rename(source, target, *args, **kwargs):
        if step == "moving the old output aside" and Path(source) == out or \
                step == "moving the new one into place" and ".partial-" in Path(source).name and Path(target) == out:
            raise failure
        rename(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(UserError if isinstance(failure, OSError) else KeyboardInterrupt) as raised:
        build(BuildOptions(out=out, inputs={"vlfeedback": snapshot}, overwrite=True))
    if isinstance(failure, OSError):
        assert str(raised.value) == (f"could not move the new build into {out}: Device or resource busy; {out} is "
                                     "unchanged")
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


@pytest.mark.parametrize("which", ["--input", "--out"])
def test_a_symbolic_link_loop_on_a_path_is_one_line(which, snapshot, tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    args = ("--input", loop, "--out", tmp_path / "o") if which == "--input" else ("--input", snapshot, "--out",
                                                                                  loop / "o")
    line = one_line_error(_cli(*args))
    assert f"cannot resolve {which} " in line and "symbolic links" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loop"]


@pytest.mark.slow
def test_an_out_name_too_long_for_a_suffix_still_builds(snapshot, tmp_path):
    """A 245-byte name is valid, `.<name>.partial-<pid>` would not be: its siblings take a cut
    name and a hash of the whole; a dead build's leftover of that name is found and removed."""
    out = tmp_path / ("n" * 245)
    from critic_data.builders.output import _sibling

    leftover = Path(str(_sibling(out, "partial")).rsplit("-", 1)[0] + f"-{_dead_pid()}")
    assert len(leftover.name) <= 255 and leftover.name != f".{out.name}.partial-{_dead_pid()}"
    (leftover / "data").mkdir(parents=True)
    result = _cli("--input", snapshot, "--out", out)
    assert result.returncode == 0, result.stderr
    assert (out / "build.json").is_file() and sorted(p.name for p in tmp_path.iterdir()) == [out.name]
    line = one_line_error(_cli("--input", snapshot, "--out", tmp_path / ("n" * 256)))
    assert "File name too long; choose a shorter --out" in line


@pytest.mark.parametrize("kind", ["old", "partial"])
@pytest.mark.parametrize("thing", ["a file", "a symlink to a folder", "a symlink to nowhere"])
def test_a_leftover_name_that_is_not_a_folder_is_left_alone(kind, thing, snapshot, tmp_path):
    """Builds leave folders: a file or a symbolic link under a leftover's name is not theirs. It
    is never removed, followed or put back as --out (a `.o.old-N` file used to become --out),
    and it blocks no build (a `.o.partial-N` file used to end every build in "Not a directory",
    a link in "None")."""
    stray = tmp_path / f".o.{kind}-{_dead_pid()}"
    (tmp_path / "elsewhere").mkdir()
    if thing == "a file":
        stray.write_text("mine")
    else:
        stray.symlink_to(tmp_path / ("elsewhere" if thing == "a symlink to a folder" else "nowhere"))
    build(BuildOptions(out=tmp_path / "o", inputs={"vlfeedback": snapshot}))
    assert (tmp_path / "o" / "build.json").is_file() and not (tmp_path / "o").is_symlink()
    assert stray.is_symlink() == (thing != "a file") and (thing != "a file" or stray.read_text() == "mine")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["o", "elsewhere", stray.name])


def test_leftovers_named_with_pids_no_process_can_have_are_removed(snapshot, tmp_path):
    """Pid 0 would ask about the build's own process group, and os.kill refuses a 20-digit
    number: neither names a running build."""
    for pid in ("0", "99999999999999999999"):
        (tmp_path / f".o.partial-{pid}").mkdir()
    build(BuildOptions(out=tmp_path / "o", inputs={"vlfeedback": snapshot}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


@pytest.mark.slow
def test_a_build_that_keeps_no_row_leaves_the_old_output_as_it_was(previous, snapshot, tmp_path):
    """Every pair filtered (a margin no gap exceeds): one line, exit 2, the previous build
    untouched with --overwrite, no folder where there was none."""
    out = tmp_path / "o"
    shutil.copytree(previous, out)
    before = _tree(out)
    empty = tmp_path / "not-there"
    for args in (["--out", out, "--overwrite"], ["--out", empty]):
        line = one_line_error(_cli("--input", snapshot, "--margin", "100", *args))
        assert line.startswith("error: no rows kept (vlfeedback: 13 rows read, ") and "below_margin" in line
    assert _tree(out) == before and not empty.exists()
    assert not _siblings(tmp_path)
