"""The house rules a newcomer relies on: imports point one way, and the build's steps stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"critic_data.schemas": "schemas", "critic_data.cards": "cards", "critic_data.builders": "builders",
            "critic_data.rl": "rl"}
LEAVES = ("critic_data.files", "critic_data.hub_client", "critic_data.manifest")  # utilities every package may use
SHELL = "critic_data"  # cli, hub, inspection, env: on top, may use everything
# package -> what it may import of critic-data besides itself, the top-level `critic_data` (UserError) and the leaves
ALLOWED = {
    "critic_data.schemas": set(),
    "critic_data.cards": {"critic_data.schemas"},
    "critic_data.builders": {"critic_data.schemas", "critic_data.cards"},
    "critic_data.rl": {"critic_data.schemas", "critic_data.cards"},
}


def _modules() -> dict[str, Path]:
    modules = {}
    for package, folder in PACKAGES.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            modules[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    for path in sorted((ROOT / "critic_data").glob("*.py")):
        modules[SHELL if path.stem == "__init__" else f"{SHELL}.{path.stem}"] = path
    return modules


def _imports(path: Path, module_level_only: bool = False) -> set[str]:
    """The critic_data modules a file imports (lazy imports inside functions too, unless asked)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if module_level_only else ast.walk(tree)
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
            names.add(node.module)
    modules = _modules()
    return {name for name in names if name in modules}


def _package(module: str) -> str:
    return next((package for package in PACKAGES if module == package or module.startswith(package + ".")), module)


@pytest.mark.parametrize("module", sorted(m for m in _modules() if _package(m) in PACKAGES or m in LEAVES))
def test_imports_point_one_way(module):
    own = _package(module)
    allowed = {own, SHELL, *LEAVES,
               *ALLOWED.get(own, set())} if module not in LEAVES else {SHELL, "critic_data.schemas", *LEAVES}
    wrong = {name for name in _imports(_modules()[module]) if _package(name) not in allowed}
    assert not wrong, (f"{module} imports {sorted(wrong)}: only {sorted(allowed)} (see "
                       "tests/critic_data/test_structure.py)")


def test_no_import_cycle_between_modules():
    """Module-level imports form no cycle (a half-initialised module would be seen by its importer)."""
    modules = _modules()
    graph = {name: {_owner(target, modules) for target in _imports(path, module_level_only=True)} - {name}
             for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph.get(name, ())):
            if state.get(target) == 1:
                raise AssertionError(" -> ".join([*trail, name, target]))
            if target not in state:
                visit(target, [*trail, name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def _owner(target: str, modules: dict) -> str:
    """`critic_data.builders.options.BuildOptions` -> the module `critic_data.builders.options`;
    a package's own name stands for its __init__."""
    while target not in modules:
        target = target.rpartition(".")[0]
    return target


@pytest.mark.parametrize("folder", ["critic_data", *PACKAGES.values()])
def test_no_package_function_is_over_50_lines(folder):
    long = {f"{path.relative_to(ROOT)}:{node.name}": node.end_lineno - node.lineno + 1
            for path in sorted((ROOT / folder).rglob("*.py"))
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 50}
    assert not long, f"functions over 50 lines: {long}"


@pytest.mark.slow
def test_a_build_imports_only_what_it_uses(tmp_path):
    """`datasets` (half a second) is not imported by a build: its files and card are written from
    the schema's own serialisation (schemas/row.py). (pandas is: pyarrow imports it to look for
    pandas objects among the Python values it converts.)"""
    import subprocess
    import sys

    from tests.snapshots import write_vlfeedback_parquet

    write_vlfeedback_parquet(tmp_path / "s", n=12)
    script = ("import sys; from pathlib import Path; from critic_data.builders.options import BuildOptions; "
              "from critic_data.builders.pipeline import build; "
              f"build(BuildOptions(out=Path({str(tmp_path / 'o')!r}), inputs={{'vlfeedback': "
              f"Path({str(tmp_path / 's')!r})}})); print(sorted(m for m in ('datasets', 'torch', 'transformers', "
              "'trl') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    assert (tmp_path / "o" / "README.md").is_file()
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_what_the_card_process_imports_leaves_polars_out():
    """The process that draws a build's card (pipeline._card_process) imports the card and its
    charts while the data is written; polars (a tenth of a second of CPU) is not among them:
    the card's statistics are counted in the build's process."""
    import subprocess
    import sys

    script = ("import sys, critic_data.cards.charts, critic_data.cards.dataset_card, critic_data.builders.pipeline; "
              "print('polars' in sys.modules, 'critic_data.cards.statistics' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.split() == ["False", "False"]
