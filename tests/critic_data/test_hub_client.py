"""critic_data/hub_client.py: what reads as a Hub id, and how the commands that take one ask the Hub about it."""

from __future__ import annotations

import time

import pytest

from critic_data import UserError
from tests.cli import one_line_message, run_cli

# --- a mistyped local path that reads as a Hub id (`ou/run1` for `out/run1`) ---------------------

def _closed_port() -> str:
    import socket

    with socket.socket() as probe:  # bound, then closed: nothing listens there, connections are refused
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


# command -> its arguments, the mistyped name taking the place of the dataset
MISTYPED = {
    "inspect": ["inspect", "ou/run1"],
    "eval": ["eval", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--benchmark", "built", "--input",
             "ou/run1"],
}


@pytest.mark.slow
@pytest.mark.parametrize("hub_state", ["a Hub without it", "no Hub"])
@pytest.mark.parametrize("command", MISTYPED)
def test_a_mistyped_folder_that_reads_as_a_hub_id_is_one_line_naming_it(command, hub_state, tmp_path):
    from tests.hub_server import LocalHub, client_env

    hub = LocalHub(tmp_path / "hub", tokens={}).start() if hub_state == "a Hub without it" else None
    args = [*MISTYPED[command], *(["--out", str(tmp_path / "run")] if command == "eval" else [])]
    try:
        started = time.monotonic()
        result = run_cli(*args, environ=client_env(tmp_path, hub.url if hub else _closed_port()), cwd=tmp_path,
                         timeout=120)
        elapsed = time.monotonic() - started
    finally:
        if hub:
            hub.stop()
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    line = result.stderr
    assert "ou/run1: no such folder" in line
    assert ("has no dataset ou/run1" if hub else "could not be asked") in line
    assert elapsed < 10  # one request, not huggingface_hub's retries (about 23 s against a closed port)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("hub_state", ["a Hub without it", "no Hub"])
def test_train_given_a_mistyped_folder_that_reads_as_a_hub_id_is_one_line_naming_it(hub_state, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from critic_data.rl.train import CriticScriptArguments, load_critic_dataset
    from tests.hub_server import LocalHub

    hub = LocalHub(tmp_path / "hub", tokens={}).start() if hub_state == "a Hub without it" else None
    monkeypatch.setattr(constants, "ENDPOINT", hub.url if hub else _closed_port())
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.chdir(tmp_path)
    try:
        started = time.monotonic()
        with pytest.raises(UserError) as caught:
            load_critic_dataset(CriticScriptArguments(dataset_name="ou/run1"))
        elapsed = time.monotonic() - started
    finally:
        if hub:
            hub.stop()
    line = one_line_message(caught)
    assert line.startswith("--dataset_name ou/run1: no such folder")
    assert ("has no dataset ou/run1" if hub else "could not be asked") in line
    assert elapsed < 10


def test_a_hub_id_the_hub_cannot_be_asked_about_is_left_to_the_cache_that_holds_it(tmp_path, monkeypatch):
    """Offline with a copy in the Hub cache, the name is handed on: the loader reads the copy."""
    from huggingface_hub import constants

    from critic_data.hub_client import check_hub_repo

    monkeypatch.setattr(constants, "ENDPOINT", _closed_port())
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    with pytest.raises(UserError, match="none is in the Hub cache"):
        check_hub_repo("critic/cached", "critic/cached")
    (tmp_path / "hub-cache" / "datasets--critic--cached" / "snapshots").mkdir(parents=True)
    check_hub_repo("critic/cached", "critic/cached")  # no error
