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
