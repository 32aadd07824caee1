"""Running `critic-data` as a user does, and reading the one line a user's mistake must end in."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

SECRET_KEY = "sk-test-NEVER-PRINT-THIS-0123456789"  # set in every run: no output may show it


def run_cli(*args: object, env: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None,
            cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`critic-data ARGS` in a fresh process. Its environment: `environ` (default this process's), then
    a recognisable API key and a wide terminal, then `env`."""
    environ = os.environ if environ is None else environ
    return subprocess.run([sys.executable, "-m", "critic_data.cli", *map(str, args)], capture_output=True, text=True,
                          env={**environ, "OPENAI_API_KEY": SECRET_KEY, "COLUMNS": "200", **(env or {})}, cwd=cwd,
                          timeout=timeout)


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
