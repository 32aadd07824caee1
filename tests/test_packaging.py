"""The wheel installs every sub-package under the single import name, with its package data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("critic_data", "critic_data.builders", "critic_data.schemas", "critic_data.rl", "critic_data.cards")


def test_wheel_holds_every_subpackage_and_the_card_template(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("critic_data-*.whl")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    probe = (
        "import importlib, sys\n"
        f"for name in {SUBPACKAGES!r}:\n"
        "    print(importlib.import_module(name).__file__)\n"
        "from importlib.resources import files\n"
        "print(files('critic_data.cards').joinpath('templates/dataset_card.md').is_file())\n"
    )
    # -I ignores the environment and user site; the wheel's folder is the only place to find the project.
    result = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r})\n" + probe],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    *paths, template = result.stdout.split()
    assert len(paths) == len(SUBPACKAGES)
    assert all(path.startswith(str(site)) for path in paths), paths
    assert template == "True"
