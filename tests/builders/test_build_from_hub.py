"""`critic-data build` without `--input`: the source is fetched from the Hub (the local Hub of
tests/hub_server.py, serving a miniature MMInstruction/VLFeedback in its `data/*.parquet` layout)
into the Hugging Face cache, at the commit `--revision` pins, and can be rebuilt from that cache
with no network at all. Run as the user runs it: the CLI in a subprocess, HF_ENDPOINT at the server.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.hub_server import LocalHub, client_env
from tests.snapshots import write_vlfeedback_parquet

CLI = str(Path(sys.executable).parent / "critic-data")
REPO = "MMInstruction/VLFeedback"  # the repo the vlfeedback source fetches


def snapshot_files(folder: Path, seed: int) -> dict[str, bytes]:
    write_vlfeedback_parquet(folder, n=30, seed=seed)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.parquet"))}


@pytest.fixture
def hub(tmp_path):
    server = LocalHub(tmp_path / "hub-storage").start()
    yield server
    server.stop()


def build(env: dict, out: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, "build", "--source", "vlfeedback", "--out", str(out), "--test-size", "0.2",
                           "--num-proc", "1", *args], env=env, capture_output=True, text=True, timeout=timeout)


def data_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "data").glob("*.parquet"))}


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return " ".join(result.stderr.split())


def test_build_from_the_hub_at_a_pinned_commit_then_again_offline_from_the_cache(hub, tmp_path):
    pinned = hub.put_files("dataset", REPO, snapshot_files(tmp_path / "v1", seed=1), "v1")
    hub.put_files("dataset", REPO, snapshot_files(tmp_path / "v2", seed=2), "v2")  # main moves on
    env = client_env(tmp_path, hub.url)

    first = build(env, tmp_path / "from-hub", "--revision", pinned)
    assert first.returncode == 0, first.stderr
    manifest = json.loads((tmp_path / "from-hub" / "build.json").read_text())
    origin = manifest["inputs"]["vlfeedback"]
    assert (origin["kind"], origin["repo_id"], origin["commit"]) == ("hub", REPO, pinned)
    assert any(path.endswith(f"/resolve/{pinned}/data/train-00000-of-00002.parquet")
               for method, path, _ in hub.requests if method == "GET")

    # The pinned commit's content, not main's: the same rows as a build from a local copy of v1.
    local = build(env, tmp_path / "from-local", "--input", str(tmp_path / "v1"))
    assert local.returncode == 0, local.stderr
    assert data_files(tmp_path / "from-hub") == data_files(tmp_path / "from-local")

    # No network at all: the Hub is gone and offline mode is on; the cache alone rebuilds it.
    hub.stop()
    offline = build({**env, "HF_HUB_OFFLINE": "1"}, tmp_path / "offline", "--revision", pinned)
    assert offline.returncode == 0, offline.stderr
    assert data_files(tmp_path / "offline") == data_files(tmp_path / "from-hub")
    again = json.loads((tmp_path / "offline" / "build.json").read_text())["inputs"]["vlfeedback"]
    assert again == origin


def test_build_from_the_hub_follows_main_when_not_pinned(hub, tmp_path):
    hub.put_files("dataset", REPO, snapshot_files(tmp_path / "v1", seed=1), "v1")
    head = hub.put_files("dataset", REPO, snapshot_files(tmp_path / "v2", seed=2), "v2")
    result = build(client_env(tmp_path, hub.url), tmp_path / "out")
    assert result.returncode == 0, result.stderr
    origin = json.loads((tmp_path / "out" / "build.json").read_text())["inputs"]["vlfeedback"]
    assert (origin["repo_id"], origin["revision"], origin["commit"]) == (REPO, "main", head)


def test_offline_without_a_cached_snapshot_is_one_line_suggesting_input(tmp_path):
    line = one_error_line(build(client_env(tmp_path, "http://127.0.0.1:9", HF_HUB_OFFLINE="1"), tmp_path / "out"))
    assert REPO in line and "--input" in line
    assert not (tmp_path / "out").exists()


def test_an_unknown_revision_is_one_line(hub, tmp_path):
    hub.put_files("dataset", REPO, snapshot_files(tmp_path / "v1", seed=1), "v1")
    line = one_error_line(build(client_env(tmp_path, hub.url), tmp_path / "out", "--revision", "no-such-branch"))
    assert "no-such-branch" in line


def test_a_hub_that_never_answers_ends_the_build_in_one_line(tmp_path):
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        result = build(client_env(tmp_path, endpoint, HF_HUB_DOWNLOAD_TIMEOUT="1", HF_HUB_ETAG_TIMEOUT="1"),
                       tmp_path / "out", timeout=60)
        elapsed = time.monotonic() - started
    line = one_error_line(result)
    assert REPO in line and "--input" in line
    assert elapsed < 15


@pytest.mark.parametrize("body, content_type", [
    (b"<!doctype html><html><body>Please log in</body></html>", "text/html"), (b"\x00\xff{garbage", "application/json"),
], ids=["login page", "garbage"])
def test_an_endpoint_that_does_not_answer_like_the_hub_is_one_line(hub, tmp_path, body, content_type):
    hub.put_files("dataset", REPO, snapshot_files(tmp_path / "v1", seed=1), "v1")
    hub.answer(r"^GET /api/datasets/", body, content_type)
    line = one_error_line(build(client_env(tmp_path, hub.url), tmp_path / "out"))
    assert hub.url in line and "HF_ENDPOINT" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("revision", ["../x", "a b"])
def test_a_revision_that_is_no_ref_name_is_refused_before_any_request(hub, tmp_path, revision):
    hub.put_files("dataset", REPO, snapshot_files(tmp_path / "v1", seed=1), "v1")
    line = one_error_line(build(client_env(tmp_path, hub.url), tmp_path / "out", "--revision", revision))
    assert "--revision" in line
    assert hub.requests == []
    assert not (tmp_path / "out").exists()
