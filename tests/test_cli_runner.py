"""The tests' way of running `critic-data` (tests/cli.py): a command forked from the warm process of
tests/warm_cli.py ends as the same command in a fresh interpreter does, and one past its timeout is
killed and reported as subprocess.run reports it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli import _WarmCli, run_cli


@pytest.mark.slow
@pytest.mark.parametrize("args", [("--help",), ("build", "--source", "nope", "--out", "o"), ("inspect", "{dataset}")])
def test_a_warm_command_ends_as_a_fresh_one(args, built_dataset, tmp_path):
    args = [arg.format(dataset=built_dataset) for arg in args]
    warm, fresh = run_cli(*args, cwd=tmp_path), run_cli(*args, cwd=tmp_path, fresh=True)
    assert (warm.returncode, warm.stdout, warm.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert warm.stdout or warm.stderr


@pytest.mark.slow
def test_a_warm_command_sees_its_own_environment_and_folder(tmp_path):
    result = run_cli("build", "--source", "vlfeedback", "--input", "here", "--out", "there", cwd=tmp_path,
                     env={"HF_ENDPOINT": "not a url"})
    assert result.returncode == 2 and "HF_ENDPOINT 'not a url' is not an http(s) URL" in result.stderr
    assert not (tmp_path / "there").exists()


@pytest.mark.slow
def test_a_warm_command_past_its_timeout_is_killed_and_raises(built_dataset, tmp_path):
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        env = {"HF_ENDPOINT": f"http://127.0.0.1:{silent.getsockname()[1]}", "HF_TOKEN": "hf_never_answered",
               "HF_HOME": str(tmp_path / "hf")}
        started = time.monotonic()
        with pytest.raises(subprocess.TimeoutExpired):
            run_cli("push", built_dataset, "--repo-id", "a/b", "--timeout", "600", env=env, timeout=3)
    assert time.monotonic() - started < 30
    # the killed command's end was read: the warm process goes on serving, in step with its caller
    warm = _WarmCli.shared()
    after = run_cli("--help")
    assert after.returncode == 0 and "Usage: critic-data" in after.stdout and _WarmCli.shared() is warm


@pytest.mark.slow
@pytest.mark.parametrize("dont_write", ["1", ""])
def test_warm_commands_compile_into_a_folder_of_their_own_only_where_bytecode_is_not_written(dont_write, tmp_path,
                                                                                              monkeypatch):
    """Under PYTHONDONTWRITEBYTECODE what the commands import is compiled once into the warm process's
    own folder, not again by every command; without it (`make test`) they read and write __pycache__ as
    any process does, which the test processes have already filled."""
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", dont_write)
    warm = _WarmCli()
    try:
        result = warm.run([sys.executable, "-m", "critic_data.cli", "--help"], dict(os.environ), tmp_path, 60)
        assert result.returncode == 0 and "Usage: critic-data" in result.stdout
        compiled = {path.name.split(".")[0] for path in Path(warm.pycache.name).rglob("*.pyc")}
    finally:
        warm.stop()
    assert ("cli" in compiled) == bool(dont_write), compiled


@pytest.mark.slow
def test_a_warm_build_writes_the_bytes_of_a_fresh_one(tmp_path, charts_drawn):
    """The warm process has drawn a chart before it forks (tests/warm_cli.py): the charts, the card and the
    data files a warm build writes are the fresh build's, byte for byte."""
    sample = Path(__file__).resolve().parents[1] / "sample" / "vlfeedback"
    written = {}
    for how, fresh in (("warm", False), ("fresh", True)):
        (tmp_path / how).mkdir()
        done = run_cli("build", "--source", "vlfeedback", "--input", str(sample), "--out", "out", cwd=tmp_path / how,
                       fresh=fresh)
        assert done.returncode == 0, done.stderr
        out = tmp_path / how / "out"
        written[how] = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
                        if p.is_file() and p.name != "build.json"}  # build.json holds the build's timings
    assert [name for name in written["warm"] if name.startswith("plots/")]
    assert written["warm"] == written["fresh"]


def test_charts_of_figures_drawn_before_are_copied_and_new_figures_are_drawn(tmp_path, charts_drawn, monkeypatch):
    """tests/charts_once.py: the same figures are drawn once (the copies are the drawing's bytes, in
    the drawing's order), other figures are drawn, and a failed drawing keeps nothing."""
    from critic_data.cards import charts
    from tests.cards.test_charts import stats
    from tests.charts_once import remember_charts

    drawn = []
    draw = charts.write_dataset_plots

    def counted(named, out):
        drawn.append(named[0][0])
        if named[0][0] == "broken":
            raise RuntimeError("no drawing")
        return draw(named, out)

    monkeypatch.setattr(charts, "write_dataset_plots", counted)
    remember_charts(tmp_path / "kept")
    first = charts.write_dataset_plots([("a", stats(tokens=True))], tmp_path / "one")
    again = charts.write_dataset_plots([("a", stats(tokens=True))], tmp_path / "two")
    other = charts.write_dataset_plots([("b", stats(tokens=True))], tmp_path / "three")
    assert drawn == ["a", "b"]
    assert [p.name for p in again] == [p.name for p in first] == ["label_balance.png", "margins.png",
                                                                   "length_ratio.png", "prompt_tokens.png"]
    assert [p.parent for p in again] == [tmp_path / "two"] * 4
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in first]
    assert [p.read_bytes() for p in other] != [p.read_bytes() for p in first]  # the panel's title differs
    for _ in range(2):
        with pytest.raises(RuntimeError):
            charts.write_dataset_plots([("broken", stats())], tmp_path / "four")
    assert drawn == ["a", "b", "broken", "broken"] and len(list((tmp_path / "kept").iterdir())) == 2
