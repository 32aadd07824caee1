"""Running `critic-data` as a user does, and reading the one line a user's mistake must end in."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

import pytest

SECRET_KEY = "sk-test-NEVER-PRINT-THIS-0123456789"  # set in every run: no output may show it
ROOT = Path(__file__).resolve().parents[1]
# Where the charts drawn in this run are kept (tests/charts_once.py; set by conftest), or None: the
# warm commands then draw every chart.
CHARTS_KEPT_IN: Path | None = None


def run_cli(*args: object, env: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None,
            cwd: Path | None = None, timeout: float = 300, fresh: bool = False) -> subprocess.CompletedProcess:
    """`critic-data ARGS` in a process of its own, as `subprocess.run` would give it. Its environment:
    `environ` (default this process's), then a recognisable API key and a wide terminal, then `env`.

    The process is forked from a warm one that has imported the libraries (tests/warm_cli.py) unless
    `fresh`, the environment sets a PYTHON* variable (read at interpreter start) or the warm one is
    busy with another thread's command: then a new interpreter, `python -m critic_data.cli ARGS`."""
    environ = os.environ if environ is None else environ
    full = {**environ, "OPENAI_API_KEY": SECRET_KEY, "COLUMNS": "200", **(env or {})}
    command = [sys.executable, "-m", "critic_data.cli", *map(str, args)]
    warm = None if fresh or any(name.startswith("PYTHON") for name in env or {}) else _WarmCli.shared()
    if warm is not None and warm.lock.acquire(blocking=False):
        try:
            return warm.run(command, full, cwd, timeout)
        finally:
            warm.lock.release()
    return subprocess.run(command, capture_output=True, text=True, env=full, cwd=cwd, timeout=timeout)


class _WarmCli:
    """This process's warm `critic-data` (tests/warm_cli.py), started on first use; ready once made."""

    _shared: _WarmCli | None = None

    @classmethod
    def shared(cls) -> _WarmCli:
        if cls._shared is None or cls._shared.process.poll() is not None:
            cls._shared = cls()
        return cls._shared

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pycache = tempfile.TemporaryDirectory(prefix="critic-data-pycache-")
        self.process = subprocess.Popen([sys.executable, "-m", "tests.warm_cli", self.pycache.name], cwd=ROOT,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True, bufsize=1)
        atexit.register(self.stop)
        if not json.loads(self.process.stdout.readline() or "{}").get("ready"):
            raise RuntimeError("tests/warm_cli.py did not start: run `python -m tests.warm_cli /tmp/x` to see why")

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self.pycache.cleanup()

    def run(self, command: list[str], env: dict, cwd: Path | None, timeout: float) -> subprocess.CompletedProcess:
        """`command` (python -m critic_data.cli ARGS) in a child of the warm process."""
        with tempfile.TemporaryDirectory(prefix="critic-data-cli-") as scratch:
            out, err = Path(scratch, "stdout"), Path(scratch, "stderr")
            out.touch()
            err.touch()
            request = {"args": command[3:], "env": env, "cwd": str(cwd or os.getcwd()), "stdout": str(out),
                       "stderr": str(err), "charts": CHARTS_KEPT_IN and str(CHARTS_KEPT_IN)}
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            pid = json.loads(self.process.stdout.readline())["pid"]
            expired = threading.Event()

            def expire() -> None:
                expired.set()
                with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                    os.kill(pid, signal.SIGKILL)

            timer = threading.Timer(timeout, expire)
            timer.start()
            try:
                status = json.loads(self.process.stdout.readline())["status"]
            finally:
                timer.cancel()
            stdout, stderr = out.read_text(), err.read_text()  # as subprocess.run(text=True) decodes
        if expired.is_set():
            raise subprocess.TimeoutExpired(command, timeout, stdout, stderr)
        return subprocess.CompletedProcess(command, status, stdout, stderr)


def one_line_error(result: subprocess.CompletedProcess, alone: bool = True) -> str:
    """The single line a user's mistake ends in: exit code 2, no traceback, one `error:` line on stderr,
    and (`alone`) nothing else there; without `alone` what the command said before it (push's plan) may stay."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and (not alone or len(lines) == 1), result.stderr
    return errors[0]


def one_line_message(error: pytest.ExceptionInfo) -> str:
    """The message of a raised UserError, which the CLI prints as its one line: no line break in it."""
    message = str(error.value)
    assert "\n" not in message, message
    return message
