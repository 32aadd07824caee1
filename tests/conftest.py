"""Shared fixtures: a tiny Qwen2.5-VL checkpoint and a small built dataset, made once per session."""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import tempfile
from pathlib import Path

# Keep `datasets`' cache of loaded folders out of the user's cache (it reads this at import), in a
# folder of this process's own that goes when it ends.
if "HF_DATASETS_CACHE" not in os.environ:
    os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="critic-data-test-cache-")
    atexit.register(functools.partial(shutil.rmtree, os.environ["HF_DATASETS_CACHE"], ignore_errors=True))

import pytest

from tests.snapshots import write_vlfeedback_jsonl

# Fixtures that start a model or a server: a test that uses one is slow, whatever its own body costs.
SLOW_FIXTURES = {"tiny_qwen_dir", "server"}


# The files that take the longest (most to least, measured on 2 cores) run first, so that `make test`'s
# workers end together instead of one finishing a long file alone. Each worker takes whole files in this
# order: `--dist loadfile --no-loadscope-reorder` (xdist would otherwise order files by their test count).
LONGEST_FIRST = ["critic_data/test_push.py", "rl/test_train.py", "test_readme.py", "rl/test_client.py",
                 "rl/test_eval.py", "critic_data/test_cli.py", "rl/test_best_of_n.py",
                 "builders/test_build_from_hub.py"]


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0].removeprefix("tests/"), len(rank)))


@pytest.fixture(scope="session", autouse=True)
def warm_cli() -> None:
    """This process's warm `critic-data` (tests/warm_cli.py) is started and ready before the first test:
    a test that times a command does not time the warm process's own imports."""
    from tests.cli import _WarmCli

    _WarmCli.shared()


@pytest.fixture(scope="session", autouse=True)
def charts_drawn_once(tmp_path_factory, worker_id) -> None:
    """The card's charts of given figures are drawn once a run, by whichever process of it needs them
    first (tests/charts_once.py): in this process, the processes it forks and the warm commands."""
    from tests import cli
    from tests.charts_once import remember_charts

    folder = _run_folder(tmp_path_factory, worker_id) / "charts"
    remember_charts(folder)
    cli.CHARTS_KEPT_IN = folder


@pytest.fixture
def charts_drawn(monkeypatch) -> None:
    """For the tests about drawing itself: every chart is drawn, here and in the warm commands."""
    from critic_data.cards import charts
    from tests import cli
    from tests.charts_once import drawing_function

    monkeypatch.setattr(charts, "write_dataset_plots", drawing_function())
    monkeypatch.setattr(cli, "CHARTS_KEPT_IN", None)


def _run_folder(tmp_path_factory, worker_id) -> Path:
    """The folder of the whole run, above each pytest-xdist worker's own."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if worker_id != "master" else base


@pytest.fixture
def charts_not_drawn(monkeypatch):
    """For the files whose tests are about a build's rows and rejects, not its card (`pytestmark`): a
    build a test runs in its own process (and the build's forked card process) writes each chart file
    holding, as JSON, the figures it would draw (the same statistics give the same bytes, as the PNGs
    do), without matplotlib: a third of a second a build, about 30 s of the suite's CPU. The statistics
    are still counted from the data files. (Drawing each chart of new figures once, as the rest of the
    suite does, would draw 48 more here.) Still drawn, once a run: the builds of module- and
    session-scoped fixtures (set up before this fixture) and every build run as a command; every time:
    the tests about drawing (`charts_drawn`)."""
    from critic_data.cards import charts

    def write_figures(named: list[tuple[str, dict]], folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        written = [folder / name for name, _, shown in charts._CHARTS if shown(named)]
        for path in written:
            path.write_text(json.dumps(named, sort_keys=True, allow_nan=True))
        return written

    monkeypatch.setattr(charts, "write_dataset_plots", write_figures)


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory, worker_id) -> Path:
    """A tiny random Qwen2.5-VL checkpoint folder (sampling enabled in its generation_config), read-only
    to the tests. Made once a run: the first pytest-xdist worker to need it builds it (5 s, torch's
    import included), the others wait for it and share it."""
    from filelock import FileLock

    from tests.tiny_qwen import build_tiny_qwen

    shared = _run_folder(tmp_path_factory, worker_id)
    folder, done = shared / "tiny-qwen" / "model", shared / "tiny-qwen" / "built"
    with FileLock(shared / "tiny-qwen.lock"):
        if not done.exists():
            build_tiny_qwen(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def built_dataset(tmp_path_factory) -> Path:
    """A critic-data dataset folder built from a miniature VLFeedback snapshot (train and test non-empty)."""
    from critic_data.builders.options import BuildOptions
    from critic_data.builders.pipeline import build

    root = tmp_path_factory.mktemp("built")
    write_vlfeedback_jsonl(root / "snapshot", n=60, seed=3)
    out = root / "dataset"
    build(BuildOptions(out=out, inputs={"vlfeedback": root / "snapshot"}, test_size=0.2, seed=0))
    return out


@pytest.fixture(scope="session")
def two_seeds(tmp_path_factory) -> tuple[Path, Path]:
    """Two builds of one LLaVA-Critic snapshot, seeds 1 and 11: same-size train shards, other labels."""
    from critic_data.builders.options import BuildOptions
    from critic_data.builders.pipeline import build
    from tests.snapshots import write_llava_critic

    root = tmp_path_factory.mktemp("seeds")
    write_llava_critic(root / "snapshot")
    for seed in (1, 11):
        build(BuildOptions(out=root / f"s{seed}", sources=("llava_critic",), inputs={"llava_critic": root / "snapshot"},
                           seed=seed))
    return root / "s1", root / "s11"
