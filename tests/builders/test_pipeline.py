"""What a build does to its own process: settings made for it (pipeline._tuned) are undone at its end,
whether it succeeds or fails, and a caller's own settings are kept."""

from __future__ import annotations

import gc

import pyarrow as pa
import pytest

from critic_data import UserError
from critic_data.builders.options import BuildOptions
from critic_data.builders.pipeline import build
from tests.snapshots import write_vlfeedback_parquet


@pytest.mark.slow
@pytest.mark.parametrize("caller_froze", [False, True])
def test_a_build_leaves_the_process_settings_as_it_found_them(caller_froze, tmp_path):
    write_vlfeedback_parquet(tmp_path / "s", n=12)
    threshold, pool = gc.get_threshold(), pa.default_memory_pool()
    try:
        gc.set_threshold(500, 7, 9)
        pa.set_memory_pool(pa.system_memory_pool())
        if caller_froze:
            gc.freeze()
        for out, inputs in ((tmp_path / "ok", tmp_path / "s"), (tmp_path / "failed", tmp_path / "missing")):
            try:
                build(BuildOptions(out=out, inputs={"vlfeedback": inputs}, num_proc=2))
            except UserError:
                assert out.name == "failed"
            assert gc.get_threshold() == (500, 7, 9)
            assert pa.default_memory_pool().backend_name == "system"
            assert (gc.get_freeze_count() > 0) == caller_froze  # a caller's freeze kept; none left behind otherwise
        assert (tmp_path / "ok" / "README.md").is_file() and not (tmp_path / "failed").exists()
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        pa.set_memory_pool(pool)


@pytest.mark.slow
def test_a_build_with_workers_finishes_in_a_process_that_has_run_polars(tmp_path):
    """The card is drawn in a forked process (pipeline._card_process), while its figures are counted
    with polars in the build's own: a fork of a process whose polars thread pool is running has a
    copy of that pool without its threads, and a query there never returns. A caller that has used
    polars (a notebook, this test suite) builds with workers all the same, and gets the charts
    a one-process build draws."""
    import subprocess
    import sys

    write_vlfeedback_parquet(tmp_path / "s", n=24)
    script = f"""
import polars as pl
from pathlib import Path
from critic_data.builders.options import BuildOptions
from critic_data.builders.pipeline import build
pl.DataFrame({{"a": list(range(1000))}}).lazy().group_by(pl.col("a") % 7).agg(pl.len()).collect()
for num_proc in (2, 1):
    build(BuildOptions(out=Path({str(tmp_path)!r}) / f"out{{num_proc}}",
                       inputs={{"vlfeedback": Path({str(tmp_path / 's')!r})}}, num_proc=num_proc))
"""
    try:
        subprocess.run([sys.executable, "-c", script], check=True, timeout=120, capture_output=True)
    except subprocess.TimeoutExpired:
        pytest.fail("a build with --num-proc 2 hung in a process that had run polars")
    charts = sorted(path.name for path in (tmp_path / "out2" / "plots").iterdir())
    assert charts == ["label_balance.png", "length_ratio.png", "margins.png"]
    for name in charts:
        assert (tmp_path / "out2" / "plots" / name).read_bytes() == (tmp_path / "out1" / "plots" / name).read_bytes()
    assert "plots/margins.png" in (tmp_path / "out2" / "README.md").read_text(encoding="utf-8")


def test_an_error_in_the_card_process_is_the_builds_error(tmp_path, monkeypatch):
    """A failure while the card is drawn in its own process ends the build as it would in this one:
    the same one line, and no output folder."""
    from critic_data.cards import charts

    def no_matplotlib(*_args, **_kwargs):
        raise UserError("drawing charts (the dataset card's, --plots) needs matplotlib; install it with `pip install "
                        "matplotlib`")

    monkeypatch.setattr(charts, "write_dataset_plots", no_matplotlib)  # inherited by the forked process
    write_vlfeedback_parquet(tmp_path / "s", n=12)
    with pytest.raises(UserError, match="needs matplotlib"):
        build(BuildOptions(out=tmp_path / "out", inputs={"vlfeedback": tmp_path / "s"}, num_proc=2))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("which", ["worker", "card"])
def test_a_build_process_that_is_killed_ends_the_build_in_one_line(which, tmp_path, monkeypatch):
    """A worker or the card's process killed mid-build (the OOM killer, say): one line, not the
    executor's BrokenProcessPool traceback, and --out as it was."""
    import os
    import signal

    from critic_data.builders import parallel
    from critic_data.cards import dataset_card

    build_pid = os.getpid()

    def killed_in_a_child(real):
        def run(*args, **kwargs):
            if os.getpid() != build_pid:  # in the forked process only
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        return run

    if which == "worker":
        monkeypatch.setattr(parallel, "prepare", killed_in_a_child(parallel.prepare))
    else:
        monkeypatch.setattr(dataset_card, "card_plots", killed_in_a_child(dataset_card.card_plots))
    write_vlfeedback_parquet(tmp_path / "s", n=24, shards=2)  # two parts: the workers are used
    with pytest.raises(UserError, match="ended unexpectedly .*--out is as it was"):
        build(BuildOptions(out=tmp_path / "out", inputs={"vlfeedback": tmp_path / "s"}, num_proc=2))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["s"]
