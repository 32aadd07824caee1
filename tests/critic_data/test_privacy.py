"""Nothing a build writes for publishing, and nothing `critic-data push` sends, names a local
folder: not the home folder, not the user's name, not where the inputs or the output lie.

A build records local inputs by their content fingerprints and a path relative to the working
directory when they lie inside it (else the folder's name); the command line likewise. push
refuses, before any request, a text file it would publish that names the home folder or the
folder being pushed (a hand-edited build.json, another tool's config).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli import one_line_error, run_cli
from tests.hub_server import LocalHub, client_env
from tests.snapshots import write_llava_critic, write_llava_rlhf, write_rlhf_v, write_vlfeedback_jsonl

USER = "alice-h3"  # a name that appears nowhere but in the home folder's path
TOKEN = "hf_write_privacy"
REPO = "critic/private-paths"


@pytest.fixture(scope="module")
def machine(tmp_path_factory) -> Path:
    """A home folder holding a project with every source's snapshot (and COCO images for llava_rlhf)."""
    root = tmp_path_factory.mktemp("machine")
    project = root / "home" / USER / "project"
    write_vlfeedback_jsonl(project / "snapshots" / "vlf", n=30, seed=2)
    write_rlhf_v(project / "snapshots" / "rlhfv", n=12, seed=2)
    write_llava_rlhf(project / "snapshots" / "llrlhf", project / "coco", n=12, seed=2)
    write_llava_critic(project / "snapshots" / "llcritic", n=12, seed=2)
    (root / "elsewhere").mkdir()
    return root


def _build(machine: Path, cwd: Path, out: Path) -> subprocess.CompletedProcess:
    """The real command, every path given absolute, `--out=DIR` and `--input SOURCE=DIR` forms included."""
    snapshots = machine / "home" / USER / "project" / "snapshots"
    args = ["build", "--source", "all", "--input", f"vlfeedback={snapshots / 'vlf'}", "--input",
            f"rlhf_v={snapshots / 'rlhfv'}", "--input", f"llava_rlhf={snapshots / 'llrlhf'}", "--input",
            f"llava_critic={snapshots / 'llcritic'}", "--image-root", str(snapshots.parent / "coco"), f"--out={out}",
            "--num-proc", "1"]
    env = {**client_env(machine, "http://127.0.0.1:9"), "HOME": str(machine / "home" / USER)}
    return run_cli(*args, environ=env, cwd=cwd)


def _leaks(folder: Path, machine: Path) -> list[str]:
    """The files under `folder` (the parquet data aside) that name the machine's folders or the user."""
    needles = [str(machine).encode(), USER.encode()]
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*")
                  if path.is_file() and path.suffix != ".parquet" and any(n in path.read_bytes() for n in needles))


# where the build runs from -> how the build records the project's paths
WHERE = {
    "outside the project": (lambda machine: machine / "elsewhere", "vlf"),
    "in the project": (lambda machine: machine / "home" / USER / "project", "snapshots/vlf"),
    "above the home folder": (lambda machine: machine, "vlf"),  # relative, it would be home/alice-h3/...
}


@pytest.mark.slow
@pytest.mark.parametrize("where", WHERE)
def test_a_build_names_no_local_folder_in_what_it_publishes(machine, tmp_path, where):
    cwd_of, recorded = WHERE[where]
    out = machine / "home" / USER / "project" / "out" / where.replace(" ", "-")
    result = _build(machine, cwd_of(machine), out)
    assert result.returncode == 0, result.stderr
    assert _leaks(out, machine) == []
    manifest = json.loads((out / "build.json").read_text())
    assert manifest["inputs"]["vlfeedback"]["folder"] == manifest["options"]["inputs"]["vlfeedback"] == recorded
    assert all(origin["files"] and origin["kind"] == "local" for origin in manifest["inputs"].values())
    assert f"local snapshot `{recorded}`" in (out / "README.md").read_text()
    # the command line as typed, its paths written the same way
    assert (f"vlfeedback={recorded}" in manifest["command"]
            and f"--out={manifest['options']['out']}" in manifest["command"])
    shutil.rmtree(out)


@pytest.mark.slow
def test_a_command_run_in_the_project_is_recorded_as_it_reads_back_there(machine):
    """Inside the working directory, paths are kept relative: pasted back in the project, the
    recorded command builds the same data."""
    project = machine / "home" / USER / "project"
    result = _build(machine, project, project / "first")
    assert result.returncode == 0, result.stderr
    command = json.loads((project / "first" / "build.json").read_text())["command"]
    again = run_cli(*[("--out=again" if word.startswith("--out=") else word) for word in command[1:]], cwd=project,
                    environ={**client_env(machine, "http://127.0.0.1:9"), "HOME": str(machine / "home" / USER)})
    assert again.returncode == 0, f"{shlex.join(command)}\n{again.stderr}"
    for shard in (project / "first" / "data").iterdir():
        assert (project / "again" / "data" / shard.name).read_bytes() == shard.read_bytes()
    shutil.rmtree(project / "first")
    shutil.rmtree(project / "again")


@pytest.fixture
def hub(tmp_path):
    server = LocalHub(tmp_path / "hub-storage", tokens={TOKEN: "write"}).start()
    yield server
    server.stop()


def _push(folder: Path, tmp_path: Path, hub: LocalHub, home: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**client_env(tmp_path, hub.url, TOKEN), "HOME": str(home)}
    return run_cli("push", folder, "--repo-id", REPO, *extra, environ=env)


@pytest.mark.slow
def test_a_pushed_build_publishes_no_local_folder(machine, tmp_path, hub):
    home = machine / "home" / USER
    out = home / "project" / "pushed"
    assert _build(machine, machine / "elsewhere", out).returncode == 0
    result = _push(out, tmp_path, hub, home, "--include-rejects")
    assert result.returncode == 0, result.stderr
    published = hub.repo("dataset", REPO).resolve("main").files
    assert {"README.md", "build.json", "rejects.jsonl"} <= set(published)
    for path, blob in published.items():
        if not path.endswith(".parquet"):
            data = hub.read(blob)
            assert str(machine).encode() not in data and USER.encode() not in data, path
    shutil.rmtree(out)


@pytest.fixture
def built_copy(built_dataset, tmp_path) -> Path:
    return shutil.copytree(built_dataset, tmp_path / "work" / "dataset")


def _add_to_manifest(folder: Path, **fields) -> None:
    manifest = json.loads((folder / "build.json").read_text())
    manifest.update(fields)
    (folder / "build.json").write_text(json.dumps(manifest, indent=2))


@pytest.mark.slow
@pytest.mark.parametrize("dry_run", [False, True])
def test_a_build_json_naming_the_home_folder_is_not_pushed(built_copy, tmp_path, hub, dry_run):
    home = tmp_path / "home" / USER
    _add_to_manifest(built_copy, command=["critic-data", "build", "--input", f"{home}/snapshots/vlf", "--out", "x"])
    line = one_line_error(_push(built_copy, tmp_path, hub, home, *(["--dry-run"] if dry_run else [])))
    assert "build.json" in line and str(home) in line and "your home folder" in line and "nothing was sent" in line
    assert hub.requests == []


@pytest.mark.slow
def test_a_build_json_naming_the_folder_being_pushed_is_not_pushed(built_copy, tmp_path, hub):
    _add_to_manifest(built_copy, command=["critic-data", "build", "--out", str(built_copy)])
    line = one_line_error(_push(built_copy, tmp_path, hub, tmp_path / "home" / USER))
    assert "build.json" in line and str(built_copy) in line and "nothing was sent" in line
    assert hub.requests == []


@pytest.mark.slow
def test_a_path_that_only_begins_like_the_home_folder_is_not_taken_for_it(built_copy, tmp_path, hub):
    home = tmp_path / "home" / USER
    _add_to_manifest(built_copy, note=f"{home}-archive and {home}.old are other folders")
    result = _push(built_copy, tmp_path, hub, home)
    assert result.returncode == 0, result.stderr


def test_a_checkpoint_whose_config_names_the_home_folder_is_not_pushed(tiny_qwen_dir, tmp_path, hub):
    home = tmp_path / "home" / USER
    folder = shutil.copytree(tiny_qwen_dir, tmp_path / "run")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "_name_or_path": f"{home}/models/base"}))
    line = one_line_error(_push(folder, tmp_path, hub, home), alone=False)  # after the warning of no model card
    assert "config.json" in line and str(home) in line and "nothing was sent" in line
    assert hub.requests == []
