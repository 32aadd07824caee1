"""The CLI shell: every user mistake ends in one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "critic_data.cli"]


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


@pytest.mark.parametrize(("args", "message"), [
    (["build", "--source", "vlfeedback"], "Missing option '--out'. (`critic-data build --help` lists the options)"),
    (["build", "--source", "vlfeedback", "--out", "o", "--seed", "abc"], "Invalid value for '--seed'"),
    (["bild"], "No such command 'bild'"),
    (["eval", "--nope"], "No such option: --nope"),
])
def test_usage_errors_are_one_line(args, message):
    result = _run(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and message in result.stderr


def test_a_line_break_in_a_path_stays_on_one_line(tmp_path):
    result = _run("build", "--source", "vlfeedback", "--input", str(tmp_path / "no\nsuch"), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "no\\nsuch" in result.stderr


@pytest.mark.parametrize("endpoint", ["http://[::1", "ftp://example.org", "not a url"])
def test_a_malformed_hf_endpoint_is_one_line_before_anything_imports_it(endpoint, tmp_path):
    result = _run("build", "--source", "vlfeedback", "--input", str(tmp_path), "--out", str(tmp_path / "o"),
                  env={"HF_ENDPOINT": endpoint})
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "HF_ENDPOINT" in result.stderr


# a slow image check (half a second each) keeps a build busy long enough to interrupt it
_SLOW_BUILD = ("import time, critic_data.builders.prepare as prepare; check = prepare.check_image; "
               "prepare.check_image = lambda *a, **k: (time.sleep(0.5), check(*a, **k))[1]; "
               "from critic_data.cli import main; import sys; sys.argv = ['critic-data'] + sys.argv[1:]; main()")


def test_an_interrupted_build_says_so_and_leaves_no_output(tmp_path):
    """Ctrl-C mid-build: exit 130 with one line (typer would exit silently), --out untouched."""
    from tests.snapshots import write_vlfeedback_jsonl

    write_vlfeedback_jsonl(tmp_path / "snapshot", n=24)
    process = subprocess.Popen([sys.executable, "-c", _SLOW_BUILD, "build", "--source", "vlfeedback", "--input",
                                str(tmp_path / "snapshot"), "--out", str(tmp_path / "out"), "--num-proc", "1"],
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(6)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stderr.strip().splitlines()[-1] == "interrupted; --out is as it was"
    assert not (tmp_path / "out").exists() and not [p for p in Path(tmp_path).iterdir() if p.name.startswith(".")]


def _slow_build_with_workers(tmp_path) -> subprocess.Popen:
    """`critic-data build --num-proc 2` in a session of its own, each image check slowed to half a
    second: two parts of 12 rows keep both workers busy for six seconds."""
    from tests.snapshots import write_vlfeedback_parquet

    write_vlfeedback_parquet(tmp_path / "snapshot", n=24, shards=2)
    return subprocess.Popen([sys.executable, "-c", _SLOW_BUILD, "build", "--source", "vlfeedback", "--input",
                             str(tmp_path / "snapshot"), "--out", str(tmp_path / "out"), "--num-proc", "2"],
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _processes_left(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def test_ctrl_c_during_a_build_with_workers_is_one_line_and_ends_every_process(tmp_path):
    """Ctrl-C reaches every process of the build (its workers and the card's process too): one line
    from the build, no traceback from the others, none of them left running."""
    process = _slow_build_with_workers(tmp_path)
    time.sleep(3)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stderr.strip().splitlines() == ["interrupted; --out is as it was"]
    time.sleep(1)
    assert not _processes_left(process.pid)
    assert not (tmp_path / "out").exists()


def test_a_build_killed_by_sigterm_leaves_no_worker_behind(tmp_path):
    """SIGTERM to the build's process alone: its workers and the card's process end with it,
    instead of waiting for work forever."""
    process = _slow_build_with_workers(tmp_path)
    time.sleep(3)
    process.terminate()
    process.communicate(timeout=60)
    deadline = time.monotonic() + 10
    while _processes_left(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _processes_left(process.pid)


@pytest.mark.parametrize("num_proc", ["1", "2"])
def test_a_build_without_a_working_matplotlib_is_one_line(num_proc, tmp_path):
    """matplotlib that fails to import: the card cannot be drawn, in this process or in the card's
    own; one line naming the missing library, exit 2, nothing written."""
    from tests.snapshots import write_vlfeedback_parquet

    write_vlfeedback_parquet(tmp_path / "s", n=24, shards=2)
    (tmp_path / "broken" / "matplotlib").mkdir(parents=True)
    (tmp_path / "broken" / "matplotlib" / "__init__.py").write_text('raise ImportError("a broken matplotlib")\n')
    result = _run("build", "--source", "vlfeedback", "--input", str(tmp_path / "s"), "--out", str(tmp_path / "o"),
                  "--num-proc", num_proc, env={"PYTHONPATH": str(tmp_path / "broken")})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: drawing charts (the dataset card's, --plots) needs matplotlib; install it with `pip install matplotlib`"]
    assert not (tmp_path / "o").exists()


def test_the_build_command_run_in_process_leaves_pyarrow_looking_for_pandas(tmp_path):
    """Only `main` spares pandas' import: the `build` command invoked in-process (typer's CliRunner)
    leaves pyarrow's pandas handling as it was for the rest of the caller's process."""
    from tests.snapshots import write_vlfeedback_parquet

    write_vlfeedback_parquet(tmp_path / "s", n=12)
    script = ("from typer.testing import CliRunner; from critic_data.cli import app; "
              f"result = CliRunner().invoke(app, ['build', '--source', 'vlfeedback', '--input', {str(tmp_path / 's')!r}, "
              f"'--out', {str(tmp_path / 'o')!r}]); assert result.exit_code == 0, result.output; "
              "import pandas as pd, pyarrow as pa; print(pa.array(pd.Categorical(['a', 'b'])).type)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip().startswith("dictionary<")  # with pandas unseen: string


def test_a_build_from_the_command_line_spares_pandas_import_and_leaves_pandas_usable(tmp_path):
    """pyarrow imports pandas (0.2 s) to look for pandas objects among the Python values it converts;
    `critic-data build` tells it pandas is absent, so neither its process nor its workers import it,
    with the same data files. pandas is still imported where a conversion needs it."""
    import hashlib

    from tests.snapshots import write_vlfeedback_parquet

    write_vlfeedback_parquet(tmp_path / "s", n=24)
    digests = []
    for cli in (True, False):
        out = tmp_path / f"o{cli}"
        build = (f"sys.argv = ['critic-data', 'build', '--source', 'vlfeedback', '--input', {str(tmp_path / 's')!r}, "
                 f"'--out', {str(out)!r}, '--num-proc', '2']; from critic_data.cli import main; main()" if cli else
                 "from critic_data.builders.options import BuildOptions; from critic_data.builders.pipeline import build; "
                 f"build(BuildOptions(out=Path({str(out)!r}), inputs={{'vlfeedback': Path({str(tmp_path / 's')!r})}}, num_proc=2))")
        script = (f"import sys; from pathlib import Path; {build}; print('pandas' in sys.modules, file=sys.stderr); "
                  "import pyarrow as pa; print(pa.table({'a': [1, 2]}).to_pandas()['a'].sum())")
        # -X importtime: every import of the process and of its forked workers, on stderr
        result = subprocess.run([sys.executable, "-X", "importtime", "-c", script], capture_output=True, text=True,
                                check=True, timeout=120)
        during_build, _, _ = result.stderr.rpartition(f"\n{not cli}\n")
        assert bool(re.search(r"\| +pandas\.core", during_build)) != cli
        assert result.stdout.split()[-1] == "3"  # to_pandas works after the build
        digests.append(hashlib.md5(b"".join(p.read_bytes() for p in sorted(out.glob("data/*.parquet")))).hexdigest())
    assert digests[0] == digests[1]


def test_main_run_in_a_process_leaves_its_garbage_collector_as_it_was(tmp_path):
    """main() defers its exit-time gc.freeze to the process's exit: a caller running it in its own
    process gets its collector back, and the command's files are complete."""
    from tests.snapshots import write_vlfeedback_parquet

    write_vlfeedback_parquet(tmp_path / "s", n=12)
    script = ("import gc, sys; from critic_data.cli import main; "
              f"sys.argv = ['critic-data', 'build', '--source', 'vlfeedback', '--input', {str(tmp_path / 's')!r}, '--out', {str(tmp_path / 'o')!r}]; "
              "main(); print('frozen after main:', gc.get_freeze_count())")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "frozen after main: 0"
    assert json.loads((tmp_path / "o" / "build.json").read_text())["splits"]["train"]["rows"] > 0
