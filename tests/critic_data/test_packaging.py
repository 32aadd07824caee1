"""The wheel installs every sub-package under the single import name, with its package data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUBPACKAGES = ("critic_data", "critic_data.builders", "critic_data.schemas", "critic_data.rl", "critic_data.cards")


@pytest.mark.slow
def test_wheel_holds_every_subpackage_and_the_card_template(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    # No packaging warnings: setuptools' are raised as BuildBackendWarning (e.g. a data folder left out of `packages`).
    assert "BuildBackendWarning" not in built.stdout + built.stderr, built.stdout + built.stderr
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


def _imported_modules(folder: Path) -> set[str]:
    """Top-level names of every module the package code in `folder` imports (lazy imports included)."""
    import ast

    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names


def test_every_third_party_import_is_a_declared_dependency():
    """A module the code imports directly must come from a distribution pyproject.toml names (in the
    core list, or in the extra that holds the code using it): one that only arrives as someone
    else's dependency can vanish in their next release."""
    import re
    import tomllib
    from importlib.metadata import packages_distributions

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements) -> set[str]:
        return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}

    declared = names(project["dependencies"]) | names(project["optional-dependencies"]["rl"])
    # `vllm` and `deepspeed` are looked up by `critic-data env` only, never imported to run
    optional = {"vllm", "deepspeed", "flash_attn", "peft"}
    distributions = packages_distributions()
    missing = {}
    for package in ("critic_data", "builders", "schemas", "rl", "cards"):
        for module in _imported_modules(ROOT / package) - set(sys.stdlib_module_names) - {"critic_data"} - optional:
            providers = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
            if not providers & declared:
                missing[module] = sorted(providers)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
