"""README.md's quickstart runs as written: every command of its shell blocks, in order, under
`set -e`, in a fresh folder laid out like the repository (the bundled sample and the tests'
tools beside it). Set-up lines (`make ...`, `source .venv/bin/activate`) are what this test
environment already did: the virtual environment's bin/ leads PATH instead. The one change is
the server's port, a free one, so that parallel runs cannot collide."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serve import free_port

ROOT = Path(__file__).resolve().parents[1]
SET_UP = re.compile(r"^(make |source \.venv/bin/activate)")


def quickstart_script() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    lines = [line for block in blocks for line in block.splitlines() if not SET_UP.match(line)]
    return "\n".join(lines) + "\n"


@pytest.mark.slow
def test_the_quickstart_runs_as_written(tmp_path):
    script = quickstart_script()
    assert "critic-data build" in script and "critic-data train" in script and "critic-data eval" in script
    port = str(free_port())
    (tmp_path / "sample").symlink_to(ROOT / "sample")
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "HF_HUB_OFFLINE": "1", "OPENAI_API_KEY": "placeholder", "COLUMNS": "120"}
    process = subprocess.Popen(["bash", "-c", "set -euo pipefail\n" + script.replace("8011", port)], cwd=tmp_path,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=600)
    finally:  # the server started in the background, should the script stop before `kill %1`
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert process.returncode == 0, output[-6000:]
    assert "Traceback" not in output, output[-6000:]
    out = tmp_path / "out"
    assert any(p.name.startswith("train-") for p in (out / "quickstart" / "data").iterdir())
    summary = json.loads((tmp_path / "runs" / "quickstart-eval" / "summary.json").read_text())
    assert summary["items"] == 8
    assert "accuracy_ci95" in summary
    assert (out / "tiny-critic" / "model.safetensors").is_file()
    assert (out / "mini-all" / "build.json").is_file()
    built = json.loads((out / "mini-all" / "build.json").read_text())
    assert set(built["sources"]) == {"vlfeedback", "rlhf_v", "llava_rlhf", "llava_critic"}


def test_every_test_the_docs_name_exists():
    """A promise names the test that holds it: each `test_...` named in README.md or docs/ is a test in tests/."""
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    named = {name for path in docs for name in re.findall(r"\b(test_[a-z0-9_]+)\b", path.read_text(encoding="utf-8"))}
    defined = {name for path in (ROOT / "tests").rglob("test_*.py")
               for name in re.findall(r"^(?:async )?def (test_[a-z0-9_]+)", path.read_text(encoding="utf-8"),
                                      flags=re.M)}
    files = {path.stem for path in (ROOT / "tests").rglob("test_*.py")}
    assert named - defined - files == set()
