"""`critic-data inspect` and `push` against a hostile user: a build.json edited into shapes the
figures cannot read, listed paths that leave the folder, run folders whose run.json is odd or a
FIFO, a Hub that echoes the token back, names that look like rich markup. The bar for each: one
line (a UserError, exit 2 at the CLI), no traceback, nothing read that the folder does not hold,
no secret printed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from critic_data import UserError
from critic_data.inspection import best_of_n_statistics, eval_statistics, inspect
from tests.critic_data.test_inspect import _judgement, _write_run, write_best_of_n_run

CLI = [sys.executable, "-m", "critic_data.cli"]


def _copy(built_dataset: Path, tmp_path: Path) -> Path:
    return shutil.copytree(built_dataset, tmp_path / "dataset")


def _edit(folder: Path, edit) -> None:
    manifest = json.loads((folder / "build.json").read_text())
    edit(manifest)
    (folder / "build.json").write_text(json.dumps(manifest))


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# --- inspect: a build.json whose shape the figures cannot read -----------------------------------

ODD = {
    "counts null": lambda m: m["sources"]["vlfeedback"].update(counts=None),
    "a source entry null": lambda m: m["sources"].update(vlfeedback=None),
    "a split entry a list": lambda m: m["splits"].update(train=[]),
    "files null": lambda m: m["splits"]["train"].update(files=None),
    "files numbers": lambda m: m["splits"]["train"].update(files=[1]),
    "rejects_by_reason a list": lambda m: m["sources"]["vlfeedback"].update(rejects_by_reason=[1]),
    "a reject count a string": lambda m: m["sources"]["vlfeedback"].update(rejects_by_reason={"x": "many"}),
    "duplicates_of a list": lambda m: m["sources"]["vlfeedback"].update(duplicates_of=[1]),
    "duplicates_dropped negative": lambda m: m["sources"]["vlfeedback"]["counts"].update(duplicates_dropped=-3),
    "format unknown": lambda m: m.update(format="xyz"),
    "format null": lambda m: m.update(format=None),
    "format a list": lambda m: m.update(format=[]),
    "a shard listed twice": lambda m: m["splits"]["train"]["files"].append(m["splits"]["train"]["files"][0]),
}


@pytest.mark.parametrize("edit", ODD)
def test_inspect_of_a_build_json_it_cannot_read_is_one_line_naming_it(built_dataset, tmp_path, edit):
    folder = _copy(built_dataset, tmp_path)
    _edit(folder, ODD[edit])
    with pytest.raises(UserError) as caught:
        inspect(str(folder))
    assert f"{folder / 'build.json'} is not a critic-data manifest" in _one_line(caught)


def test_inspect_of_a_build_json_nested_past_the_recursion_limit_is_one_line(built_dataset, tmp_path):
    folder = _copy(built_dataset, tmp_path)
    text = (folder / "build.json").read_text().rstrip()
    (folder / "build.json").write_text(text[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(UserError) as caught:
        inspect(str(folder))
    assert str(folder / "build.json") in _one_line(caught)


@pytest.mark.parametrize("where", ["absolute", "dotdot"])
def test_inspect_never_reads_a_listed_shard_outside_the_folder(built_dataset, tmp_path, where):
    """A build.json (one downloaded from the Hub, say) naming a parquet file elsewhere: refused, not
    reported as if it were the dataset's."""
    folder = _copy(built_dataset, tmp_path)
    outside = shutil.copy(folder / "data" / "test-00000-of-00001.parquet", tmp_path / "elsewhere.parquet")
    listed = str(outside) if where == "absolute" else "data/../../elsewhere.parquet"
    _edit(folder, lambda m: m["splits"]["test"].update(files=[listed]))
    with pytest.raises(UserError) as caught:
        inspect(str(folder))
    line = _one_line(caught)
    assert listed in line and "outside the folder" in line


def test_a_listed_shard_that_is_a_fifo_is_one_line_and_never_opened(built_dataset, tmp_path):
    folder = _copy(built_dataset, tmp_path)
    shard = folder / "data" / "train-00000-of-00001.parquet"
    shard.unlink()
    os.mkfifo(shard)
    with pytest.raises(UserError) as caught:
        inspect(str(folder))
    assert "data/train-00000-of-00001.parquet" in _one_line(caught) and "not a regular file" in str(caught.value)


@pytest.mark.parametrize("name", ["runs[1]", "run*"])
def test_a_folder_whose_name_looks_like_a_glob_is_read_as_named(built_dataset, tmp_path, name):
    """polars reads a path as a glob pattern by default: `runs[1]` ended in "invalid glob
    pattern", and `run*` also read the shards of `runs-other` beside it (twice the rows)."""
    from critic_data.cards.statistics import dataset_statistics
    from critic_data.hub import plan_push

    folder = shutil.copytree(built_dataset, tmp_path / name)
    shutil.copytree(built_dataset, tmp_path / "runs-other")
    (tmp_path / "runs-other" / "rejects.jsonl").write_text("")
    expected = dataset_statistics(built_dataset)
    found = dataset_statistics(folder)
    for figure in ("rows", "margins", "length_bias", "rejects", "images"):
        assert found[figure] == expected[figure], figure
    assert plan_push(folder, "critic/vlf").files["README.md"]


# --- inspect: run folders ------------------------------------------------------------------------

def _eval_run(folder: Path) -> Path:
    records = [_judgement(f"i{k}", "1", (1, 2), "1" if k % 2 else "2") for k in range(6)]
    return _write_run(folder, "results.jsonl", records, {"benchmark": "built"})


@pytest.mark.parametrize("n", ["8", 10**9, 0, -4, True, None])
def test_a_best_of_n_run_json_with_an_odd_n_replays_the_recorded_candidates(tmp_path, n):
    """n is what picks.jsonl records (one final answer per candidate), whatever run.json says: a
    string used to end in a traceback, 10**9 in a bracket of a billion candidates."""
    folder = write_best_of_n_run(tmp_path / "run", "knockout")
    _edit_json(folder / "run.json", lambda run: run.update(n=n))
    started = time.monotonic()
    report = best_of_n_statistics(folder)
    assert report["n"] == 8 and [point["n"] for point in report["curve"]] == [1, 2, 4, 8]
    assert time.monotonic() - started < 10


def test_a_pick_without_candidates_is_left_out_not_fatal(tmp_path):
    folder = write_best_of_n_run(tmp_path / "run", "knockout")
    lines = (folder / "picks.jsonl").read_text().splitlines()
    first = {**json.loads(lines[0]), "final_answers": []}
    (folder / "picks.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    (folder / "run.json").unlink()
    (folder / "summary.json").unlink()
    report = best_of_n_statistics(folder)
    assert (report["n"], report["questions"], report["lines_left_out"]) == (8, 2, 1)


@pytest.mark.parametrize("kind", ["eval", "best-of-n"])
def test_a_summary_whose_options_are_not_an_object_is_read_as_absent(tmp_path, kind):
    folder = _eval_run(tmp_path / "run") if kind == "eval" else write_best_of_n_run(tmp_path / "run", "knockout")
    (folder / "run.json").unlink()
    (folder / "summary.json").write_text(json.dumps({"options": [1, 2]}))
    report = eval_statistics(folder) if kind == "eval" else best_of_n_statistics(folder)
    assert report["kind"] == kind and report["questions" if kind == "best-of-n" else "judgements"] in (3, 6)


def test_a_run_json_that_is_a_fifo_is_one_line_not_a_hang(tmp_path):
    folder = _eval_run(tmp_path / "run")
    (folder / "run.json").unlink()
    os.mkfifo(folder / "run.json")
    result = subprocess.run([*CLI, "inspect", str(folder)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "run.json is not a regular file" in result.stderr


def _edit_json(path: Path, edit) -> None:
    value = json.loads(path.read_text())
    edit(value)
    path.write_text(json.dumps(value))


# --- push ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("repo_id",
                         ["critic/vlf ü", "critic/vl f", "críticó/vlf", "critic/" + "x" * 200, "critic/\u200bvlf",
                          "critic/vlf\n", " critic/vlf", "critic/..", "critic/-vlf"])
def test_a_repo_id_the_hub_refuses_is_one_line_before_any_request(built_dataset, repo_id):
    from critic_data.hub import plan_push

    with pytest.raises(UserError, match="is not a repo id") as caught:
        plan_push(built_dataset, repo_id)
    assert "\n" not in str(caught.value).replace(repr(repo_id), "")


@pytest.mark.parametrize("make", ["fifo", "folder", "link to /dev/zero"])
def test_include_rejects_takes_rejects_jsonl_only_as_a_regular_file(built_dataset, tmp_path, make):
    from critic_data.hub import plan_push

    folder = _copy(built_dataset, tmp_path)
    rejects = folder / "rejects.jsonl"
    rejects.unlink()
    {"fifo": os.mkfifo, "folder": Path.mkdir, "link to /dev/zero": lambda p: p.symlink_to("/dev/zero")}[make](rejects)
    with pytest.raises(UserError, match="rejects.jsonl") as caught:
        plan_push(folder, "critic/vlf", include_rejects=True)
    assert "nothing was sent" in _one_line(caught)


def test_a_hub_that_echoes_the_token_in_its_error_never_gets_it_printed(built_dataset, tmp_path):
    """A proxy or a misconfigured server answering 400 with the request's Authorization header in
    its message: the one line says what the Hub refused, with the token masked."""
    from tests.hub_server import LocalHub, client_env

    token = "hf_write_" + "e" * 32
    hub = LocalHub(tmp_path / "hub", tokens={token: "write"}).start()
    try:
        hub.answer(r"POST /api/repos/create",
                   json.dumps({"error": f"bad header Authorization: Bearer {token}"}).encode(),
                   "application/json", status=400)
        result = subprocess.run([*CLI, "push", str(built_dataset), "--repo-id", "critic/vlf"],
                                env=client_env(tmp_path, hub.url, token), capture_output=True, text=True, timeout=120)
    finally:
        hub.stop()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert token not in result.stdout + result.stderr
    assert "bad header Authorization" in result.stderr and "nothing was published" in result.stderr


@pytest.mark.parametrize("command", ["inspect", "push", "push --dry-run"])
def test_a_path_that_looks_like_rich_markup_is_printed_as_it_is(built_dataset, tmp_path, command):
    """A folder named `run[/red]` (a `[/red]` made of the folder `run[` and its `red]`): rich
    would read it as a closing tag (a MarkupError traceback); `[bold]` would vanish from a name."""
    folder = tmp_path / "run[" / "red]"
    if command == "push --dry-run":  # a valid dataset: the plan table's title names the folder
        shutil.copytree(built_dataset, folder)
    else:
        folder.mkdir(parents=True)
    args = ["--repo-id", "critic/vlf", *command.split()[1:]] if command.startswith("push") else []
    result = subprocess.run([*CLI, command.split()[0], str(folder), *args], capture_output=True, text=True, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == (0 if command == "push --dry-run" else 2), result.stderr
    assert str(folder) in "".join(result.stderr.split())  # rich may wrap the line


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


@pytest.mark.parametrize("hub_state", ["a Hub without it", "no Hub"])
@pytest.mark.parametrize("command", MISTYPED)
def test_a_mistyped_folder_that_reads_as_a_hub_id_is_one_line_naming_it(command, hub_state, tmp_path):
    from tests.hub_server import LocalHub, client_env

    hub = LocalHub(tmp_path / "hub", tokens={}).start() if hub_state == "a Hub without it" else None
    args = [*MISTYPED[command], *(["--out", str(tmp_path / "run")] if command == "eval" else [])]
    try:
        started = time.monotonic()
        result = subprocess.run([*CLI, *args], env=client_env(tmp_path, hub.url if hub else _closed_port()),
                                cwd=tmp_path, capture_output=True, text=True, timeout=120)
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
    line = _one_line(caught)
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
