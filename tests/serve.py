"""A real OpenAI-compatible server for the tests: `transformers serve` on 127.0.0.1 with a tiny model.

`served_model(model_dir, workdir)` starts it on a free port (CPU, an empty HF_HUB_CACHE so that
/v1/models answers, offline), waits for GET /health, yields (base_url, model name) and stops the
process it started. Requests must name the model folder as `model`; the server ignores `n`,
rejects unknown fields with 422 and generates one request at a time (TESTING.md).
`run_cli` runs the `critic-data` command as a user would, with an API key set that must never
appear in its output.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

START_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def served_model(model_dir: Path, workdir: Path) -> Iterator[tuple[str, str]]:
    cache = workdir / "hf-hub-cache"
    cache.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = (workdir / "serve.log").open("wb")
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    command = [str(Path(sys.executable).parent / "transformers"), "serve", str(model_dir),
               "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"transformers serve exited ({process.returncode}): "
                                   f"{(workdir / 'serve.log').read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"transformers serve did not answer /health within {START_TIMEOUT:.0f}s")
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/v1", str(model_dir)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


SECRET_KEY = "sk-test-NEVER-PRINT-THIS-0123456789"


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`critic-data ARGS` in a fresh process, as a user runs it, with a recognisable API key set."""
    env = {**os.environ, "OPENAI_API_KEY": SECRET_KEY, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "critic_data.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)
