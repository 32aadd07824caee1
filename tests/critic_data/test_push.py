"""`critic-data push` over real HTTP: the real huggingface_hub and datasets clients, run in
subprocesses with HF_ENDPOINT pointing at the local Hub of tests/hub_server.py.

Covered: create + upload in one commit + load back identically (Image column included), no-op
re-push, the card's charts in the repo where its links point (drawn from the pushed shards),
refusal to replace a different dataset, a new --revision branch, --create-pr, --force
replacing stale shards, transient failures retried, permanent failures stopping at once, a Hub
that is down, a failed commit publishing nothing, the token never leaking, and checkpoints.
Then what a push verifies before sending anything (links, FIFOs, shards that are not the
build's, edited counts, OS leftovers left out, unreadable weights), an endpoint that answers
like a proxy rather than the Hub, and one that never answers (--timeout).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from critic_data import UserError
from tests.cli import one_line_error, one_line_message, run_cli
from tests.hub_server import LocalHub
from tests.hub_server import client_env as hub_client_env

CLI = str(Path(sys.executable).parent / "critic-data")
# fixed, not random: pytest-xdist's workers must collect the same test names (a token is a parameter)
WRITE_TOKEN = "hf_write_5d1c0a9e7b3f42c8a6e1d0b9f4c7a2e3"
READ_TOKEN = "hf_read_8b2e6f1a4c9d47e0b3a5c8f2d1e6b9a7"
REPO = "critic/vlf"

# Loads each (target, revision) with `datasets` and prints, per split, the row count, the
# features and a digest of every row with the image bytes undecoded.
LOAD = """
import hashlib, json, sys
import datasets
datasets.disable_progress_bars()
def describe(target, revision):
    out = {}
    for split, ds in datasets.load_dataset(target, revision=revision).items():
        features = ds.features.to_dict()
        ds = ds.cast_column("images", datasets.List(datasets.Image(decode=False)))
        rows = json.dumps(ds.to_list(), sort_keys=True, default=lambda b: b.hex())
        out[split] = {"rows": ds.num_rows, "features": features, "digest": hashlib.sha256(rows.encode()).hexdigest()}
    return out
print(json.dumps([describe(target, revision) for target, revision in json.loads(sys.argv[1])]))
"""


@pytest.fixture
def hub(tmp_path):
    server = LocalHub(tmp_path / "hub-storage", tokens={WRITE_TOKEN: "write", READ_TOKEN: "read"}).start()
    yield server
    server.stop()


def client_env(tmp_path: Path, endpoint: str, token: str | None = WRITE_TOKEN) -> dict:
    return hub_client_env(tmp_path, endpoint, token)


@pytest.fixture
def env(tmp_path, hub):
    return client_env(tmp_path, hub.url)


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return run_cli("push", *args, environ=env)


def describe(env: dict, *targets: tuple[str | Path, str | None]) -> list[dict]:
    result = subprocess.run([sys.executable, "-c", LOAD, json.dumps([[str(t), r] for t, r in targets])],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def files_at(hub: LocalHub, revision: str = "main", repo_type: str = "dataset", repo_id: str = REPO) -> set[str]:
    repo = hub.repo(repo_type, repo_id)
    return set(repo.resolve(revision).files)


def history(hub: LocalHub, revision: str = "main", repo_type: str = "dataset") -> list[str]:
    repo = hub.repo(repo_type, REPO)
    commit, titles = repo.resolve(revision), []
    while commit:
        titles.append(commit.title)
        commit = repo.commits.get(commit.parent)
    return titles


def hits(hub: LocalHub, method: str, fragment: str) -> int:
    return sum(1 for m, path, _ in hub.requests if m == method and fragment in path)


@pytest.fixture(scope="module")
def other_dataset(tmp_path_factory) -> Path:
    """A different build whose train split has several shards (the first build has one)."""
    from critic_data.builders.options import BuildOptions
    from critic_data.builders.pipeline import build
    from tests.snapshots import write_vlfeedback_jsonl

    root = tmp_path_factory.mktemp("other")
    write_vlfeedback_jsonl(root / "snapshot", n=80, seed=11)
    build(BuildOptions(out=root / "dataset", inputs={"vlfeedback": root / "snapshot"}, test_size=0.2, seed=5,
                       max_shard_bytes=20_000))
    assert 1 < len(list((root / "dataset" / "data").glob("train-*"))) < 6
    return root / "dataset"


@pytest.mark.slow
def test_push_publishes_one_commit_that_loads_back_identically(built_dataset, hub, env, tmp_path):
    result = cli(env, built_dataset, "--repo-id", REPO)
    assert result.returncode == 0, result.stderr

    manifest = json.loads((built_dataset / "build.json").read_text())
    shards = {f for split in manifest["splits"].values() for f in split["files"]}
    assert files_at(hub) == {".gitattributes", "README.md", "build.json", *shards, *PLOTS}  # no rejects.jsonl
    assert len(history(hub)) == 2  # the repo's initial commit + exactly one push commit
    assert hits(hub, "POST", "/commit/main") == 1
    card = hub.read(hub.repo("dataset", REPO).resolve("main").files["README.md"]).decode()
    assert f'load_dataset("{REPO}")' in card and "OWNER/NAME" not in card
    assert hub.read(hub.repo("dataset",
                             REPO).resolve("main").files["build.json"]) == (built_dataset / "build.json").read_bytes()

    remote, local = describe(env, (REPO, None), (built_dataset, None))
    assert remote == local
    assert set(remote) == {"train", "test"}
    assert {split: remote[split]["rows"] for split in remote} == {s: v["rows"] for s, v in manifest["splits"].items()}
    assert remote["train"]["features"]["images"]["feature"]["_type"] == "Image"

    # The token reached the server but appears in no output and no file the clients wrote.
    assert WRITE_TOKEN not in result.stdout + result.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert WRITE_TOKEN.encode() not in path.read_bytes(), path


PLOTS = {"plots/label_balance.png", "plots/length_ratio.png", "plots/margins.png"}


def _image_links(card: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", card)


@pytest.mark.slow
def test_the_hub_page_shows_the_charts_of_the_data_it_serves(built_dataset, hub, env, tmp_path):
    """The card's charts are in the repo where its relative links point, drawn from the pushed
    shards: a chart changed, lost or linked out of the folder is not what gets published."""
    folder = shutil.copytree(built_dataset, tmp_path / "work" / "dataset")
    (folder / "plots" / "label_balance.png").write_bytes(b"\x89PNG\r\n\x1a\nnot the build's chart")
    (folder / "plots" / "margins.png").unlink()
    (folder / "plots" / "length_ratio.png").unlink()
    (folder / "plots" / "length_ratio.png").symlink_to(_secret(folder))
    result = cli(env, folder, "--repo-id", REPO)
    assert result.returncode == 0, result.stderr

    published = hub.repo("dataset", REPO).resolve("main").files
    card = hub.read(published["README.md"]).decode()
    links = _image_links(card)
    assert sorted(links) == sorted(PLOTS) and PLOTS <= set(published)
    for link in links:  # each link resolves to a file of the repo: the chart the build drew
        assert hub.read(published[link]) == (built_dataset / link).read_bytes(), link
    assert b"hf_SECRET" not in b"".join(hub.read(published[path]) for path in published)
    # the figures on the card are the shards' (a local card links the same files)
    assert _image_links((built_dataset / "README.md").read_text(encoding="utf-8")) == links

    # A build with fewer charts (--format easyr1 has no margins, no responses) replaces them all.
    from critic_data.builders.options import BuildOptions
    from critic_data.builders.pipeline import build
    from tests.snapshots import write_vlfeedback_jsonl

    write_vlfeedback_jsonl(tmp_path / "snapshot", n=30, seed=4)
    build(BuildOptions(out=tmp_path / "easyr1", inputs={"vlfeedback": tmp_path / "snapshot"}, format="easyr1"))
    forced = cli(env, tmp_path / "easyr1", "--repo-id", REPO, "--force")
    assert forced.returncode == 0, forced.stderr
    published = hub.repo("dataset", REPO).resolve("main").files
    assert {path for path in published if path.startswith("plots/")} == {"plots/label_balance.png"}
    assert _image_links(hub.read(published["README.md"]).decode()) == ["plots/label_balance.png"]


@pytest.mark.slow
def test_pushing_the_same_dataset_again_changes_nothing(built_dataset, hub, env):
    assert cli(env, built_dataset, "--repo-id", REPO).returncode == 0
    again = cli(env, built_dataset, "--repo-id", REPO)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stderr
    assert len(history(hub)) == 2


@pytest.mark.slow
def test_a_different_dataset_is_not_pushed_over_a_published_one(built_dataset, other_dataset, hub, env):
    assert cli(env, built_dataset, "--repo-id", REPO, "--include-rejects").returncode == 0
    published = hub.repo("dataset", REPO).refs["main"]

    line = one_line_error(cli(env, other_dataset, "--repo-id", REPO))
    assert "already holds a different dataset" in line and "--force" in line and "--revision" in line
    assert hub.repo("dataset", REPO).refs["main"] == published

    # A pull request only proposes it: main stays as it was.
    proposed = cli(env, other_dataset, "--repo-id", REPO, "--create-pr")
    assert proposed.returncode == 0, proposed.stderr
    assert "/discussions/1" in proposed.stderr
    assert hub.repo("dataset", REPO).refs["main"] == published and "refs/pr/1" in hub.repo("dataset", REPO).refs

    # A new branch publishes beside it; what the branch inherited from main is replaced, not mixed in.
    branched = cli(env, other_dataset, "--repo-id", REPO, "--revision", "v2")
    assert branched.returncode == 0, branched.stderr
    assert "new branch" in branched.stderr
    assert hub.repo("dataset", REPO).refs["main"] == published
    assert "rejects.jsonl" not in files_at(hub, "v2")
    main, v2, first, second = describe(env, (REPO, None), (REPO, "v2"), (built_dataset, None), (other_dataset, None))
    assert main == first and v2 == second and main != v2

    # --force replaces main: the old single shards and rejects.jsonl go, in the same one commit.
    forced = cli(env, other_dataset, "--repo-id", REPO, "--force")
    assert forced.returncode == 0, forced.stderr
    assert len(history(hub)) == 3
    assert not {"data/train-00000-of-00001.parquet", "rejects.jsonl"} & files_at(hub)
    assert describe(env, (REPO, None)) == [second]


@pytest.mark.slow
def test_transient_failures_are_retried(built_dataset, hub, env):
    hub.fail(r"POST /api/repos/create", 503, times=2)
    hub.fail(r"PUT /lfs-upload/", 500, times=1)
    hub.fail(r"POST /api/datasets/.*/commit/", 429, times=1)
    result = cli(env, built_dataset, "--repo-id", REPO)
    assert result.returncode == 0, result.stderr
    assert "retrying" in result.stderr
    assert hits(hub, "POST", "/api/repos/create") == 3
    assert hits(hub, "POST", "/commit/main") == 2
    assert len(history(hub)) == 2  # the retried commit landed once
    remote, local = describe(env, (REPO, None), (built_dataset, None))
    assert remote == local


@pytest.mark.slow
@pytest.mark.parametrize("token, expected", [(READ_TOKEN, "403"), ("hf_not_a_token", "401")])
def test_permanent_failures_stop_at_once(built_dataset, hub, tmp_path, token, expected):
    result = cli(client_env(tmp_path, hub.url, token), built_dataset, "--repo-id", REPO)
    line = one_line_error(result)
    assert expected in line and "token" in line and "nothing was published" in line
    assert hits(hub, "POST", "/api/repos/create") == 1  # not retried
    assert hub.repo("dataset", REPO) is None
    assert token not in result.stdout + result.stderr


@pytest.mark.slow
def test_a_commit_that_keeps_failing_publishes_nothing(built_dataset, other_dataset, hub, env):
    assert cli(env, built_dataset, "--repo-id", REPO).returncode == 0
    before = hub.repo("dataset", REPO).refs["main"]
    hub.fail(r"POST /api/datasets/.*/commit/", 503, times=None)
    line = one_line_error(cli(env, other_dataset, "--repo-id", REPO, "--force"), alone=False)
    assert "503" in line and "nothing was published" in line
    assert hits(hub, "POST", "/commit/main") == 1 + 4  # the first push, then every attempt of the second
    assert hub.repo("dataset", REPO).refs["main"] == before
    hub.clear_failures()
    remote, local = describe(env, (REPO, None), (built_dataset, None))
    assert remote == local


@pytest.mark.slow
def test_an_unreachable_hub_ends_with_one_line(built_dataset, tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    line = one_line_error(cli(client_env(tmp_path, f"http://127.0.0.1:{port}"), built_dataset, "--repo-id", REPO),
                          alone=False)
    assert "cannot reach the Hub" in line and f"127.0.0.1:{port}" in line
    assert time.monotonic() - started < 20


@pytest.mark.slow
def test_no_token_is_a_clear_error(built_dataset, hub, tmp_path):
    line = one_line_error(cli(client_env(tmp_path, hub.url, token=None), built_dataset, "--repo-id", REPO))
    assert "HF_TOKEN" in line and "hf auth login" in line
    assert hub.requests == []


@pytest.mark.slow
def test_dry_run_lists_files_and_destination_and_sends_nothing(built_dataset, hub, env):
    result = cli(env, built_dataset, "--repo-id", f"datasets/{REPO}", "--dry-run", "--revision", "v3")
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stderr.split())
    assert f"{hub.url}/datasets/{REPO}" in out and "v3" in out
    for name in ("README.md", "build.json", "data/train-00000-of-00001.parquet", "data/test-00000-of-00001.parquet",
                 *PLOTS):
        assert name in out
    assert "not uploaded: rejects.jsonl" in out
    assert hub.requests == []


@pytest.mark.parametrize("make, repo_id, expected", [
    (lambda d, tmp: tmp / "missing", REPO, "is not a folder"),
    (lambda d, tmp: (tmp / "empty").mkdir() or tmp / "empty", REPO, "neither a critic-data dataset"),
    (lambda d, tmp: d, "not a repo id", "is not a repo id"),
    (lambda d, tmp: d, "a/b/c", "is not a repo id"),
    (lambda d, tmp: d, f"models/{REPO}", "names a model repo"),
    (lambda d, tmp: (shutil.copytree(d, tmp / "partial"), next((tmp / "partial" / "data").glob("test-*")).unlink())[0],
     REPO, "does not match its build.json"),
])
def test_folder_and_repo_id_mistakes_are_caught_before_any_request(built_dataset, tmp_path, make, repo_id, expected):
    from critic_data import UserError
    from critic_data.hub import plan_push

    with pytest.raises(UserError, match=expected):
        plan_push(make(built_dataset, tmp_path), repo_id)


@pytest.mark.slow
def test_a_checkpoint_folder_goes_to_a_model_repo(tiny_qwen_dir, hub, env, tmp_path):
    folder = shutil.copytree(tiny_qwen_dir, tmp_path / "run")
    (folder / "README.md").write_text("---\nlicense: apache-2.0\nlibrary_name: transformers\n---\n# tiny critic\n")
    (folder / "checkpoint-2").mkdir()
    (folder / "checkpoint-2" / "optimizer.pt").write_bytes(b"\x00" * 64)
    (folder / "trainer_state.json").write_text("{}")
    result = cli(env, folder, "--repo-id", REPO)
    assert result.returncode == 0, result.stderr
    assert hub.repo("dataset", REPO) is None
    expected = {p.name for p in tiny_qwen_dir.iterdir()} | {"README.md"}
    assert files_at(hub, repo_type="model") == expected | {".gitattributes"}

    download = subprocess.run([sys.executable, "-c", f"from huggingface_hub import snapshot_download; "
                               f"print(snapshot_download({REPO!r}))"], env=env, capture_output=True, text=True,
                              timeout=60)
    assert download.returncode == 0, download.stderr
    fetched = Path(download.stdout.strip())
    for name in expected:
        assert (fetched / name).read_bytes() == (folder / name).read_bytes(), name


# --- What a push publishes is what the build wrote (section 5 of issue 10) -------------------

def _manifest(folder: Path) -> dict:
    return json.loads((folder / "build.json").read_text())


def _edit_manifest(folder: Path, edit) -> None:
    manifest = _manifest(folder)
    edit(manifest)
    (folder / "build.json").write_text(json.dumps(manifest))


def _swap_shard(folder: Path, make) -> None:
    shard = folder / "data" / "train-00000-of-00001.parquet"
    shard.unlink()
    make(shard, folder)


def _secret(folder: Path) -> Path:
    secret = folder.parent / "secret.txt"
    secret.write_text("hf_SECRET_do_not_publish\n")
    return secret


def _parquet(table_rows: list[dict]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    def write(shard: Path, _folder: Path) -> None:
        pq.write_table(pa.Table.from_pylist(table_rows), shard)
    return write


def _stripped_of_features(shard: Path, folder: Path) -> None:
    """The build's own rows, written again without the `huggingface` metadata (Image columns lost)."""
    import pyarrow.parquet as pq

    original = folder.parent / "original.parquet"
    pq.write_table(pq.read_table(original).replace_schema_metadata(None), shard)


DAMAGE = {
    # (what is done to a copy of the build, what the one line must name)
    "shard is a symlink to a secret": (
        lambda f: _swap_shard(f, lambda s, f: s.symlink_to(_secret(f))), "data/train-00000-of-00001.parquet"),
    "shard is a symlink to a copy inside": (
        lambda f: (shutil.copy(f / "data" / "train-00000-of-00001.parquet", f / "copy.parquet"),
                   _swap_shard(f, lambda s, f: s.symlink_to(f / "copy.parquet"))), "data/train-00000-of-00001.parquet"),
    "data/ is a symlink out of the folder": (
        lambda f: (shutil.move(f / "data", f.parent / "elsewhere"), (f / "data").symlink_to(f.parent / "elsewhere")),
        "data/train-00000-of-00001.parquet"),
    "build.json is a symlink": (
        lambda f: (shutil.move(f / "build.json", f.parent / "build.json"),
                   (f / "build.json").symlink_to(f.parent / "build.json")),
        "build.json"),
    "a listed path leaves the folder": (
        lambda f: (_secret(f),
                   _edit_manifest(f, lambda m: m["splits"]["train"]["files"].append("data/../../secret.txt"))),
        "data/../../secret.txt"),
    "an absolute listed path": (
        lambda f: _edit_manifest(f, lambda m: m["splits"]["train"]["files"].append(str(_secret(f)))), "secret.txt"),
    "shard is a FIFO": (
        lambda f: _swap_shard(f, lambda s, f: os.mkfifo(s)), "data/train-00000-of-00001.parquet"),
    "shard is text": (
        lambda f: _swap_shard(f, lambda s, f: s.write_text("not parquet")), "data/train-00000-of-00001.parquet"),
    "shard is cut short": (
        lambda f: (f / "data" / "train-00000-of-00001.parquet").write_bytes(
            (f / "data" / "train-00000-of-00001.parquet").read_bytes()[:-100]), "data/train-00000-of-00001.parquet"),
    "shard is an unrelated parquet": (
        lambda f: _swap_shard(f, _parquet([{"id": "x", "text": "hello"}] * 41)), "data/train-00000-of-00001.parquet"),
    "shard lost its Image features": (
        lambda f: (shutil.copy(f / "data" / "train-00000-of-00001.parquet", f.parent / "original.parquet"),
                   _swap_shard(f, _stripped_of_features)), "data/train-00000-of-00001.parquet"),
    "shard swapped for the other split's": (
        lambda f: shutil.copy(f / "data" / "test-00000-of-00001.parquet", f / "data" / "train-00000-of-00001.parquet"),
        "train split"),
    "split rows edited": (
        lambda f: _edit_manifest(f, lambda m: m["splits"]["train"].update(rows=1_000_000)), "train split"),
    "split bytes edited": (
        lambda f: _edit_manifest(f, lambda m: m["splits"]["test"].update(bytes=1)), "test split"),
    "pairs kept edited": (
        lambda f: _edit_manifest(f, lambda m: m["sources"]["vlfeedback"]["counts"].update(pairs_kept=999)),
        "pairs_kept"),
    "pairs kept and formed edited together": (
        lambda f: _edit_manifest(f, lambda m: [m["sources"]["vlfeedback"]["counts"].update({k: v + 5}) for k, v in
                                               list(m["sources"]["vlfeedback"]["counts"].items())
                                               if k in ("pairs_kept", "pairs_formed")]), "splits hold"),
    "rows read edited": (
        lambda f: _edit_manifest(f, lambda m: m["sources"]["vlfeedback"]["counts"].update(rows_read=10**6)),
        "rows_read"),
    "shard listed under the other split": (
        lambda f: _edit_manifest(f,
                                 lambda m: (m["splits"]["test"]["files"].append(m["splits"]["train"]["files"].pop()))),
        "data/train-00000-of-00001.parquet"),
    "shard listed twice": (
        lambda f: _edit_manifest(f, lambda m: m["splits"]["train"]["files"].append(m["splits"]["train"]["files"][0])),
        "data/train-00000-of-00001.parquet"),
    "a shard's content hash missing": (
        lambda f: _edit_manifest(f, lambda m: m["splits"]["train"].update(xxh3_128={})),
        "data/train-00000-of-00001.parquet"),
    "a content hash of a file not listed": (
        lambda f: _edit_manifest(f,
                                 lambda m: m["splits"]["test"]["xxh3_128"].update({"data/test-x.parquet": "0" * 32})),
        "data/test-x.parquet"),
    "label balance edited": (
        lambda f: _edit_manifest(f, lambda m: m["sources"]["vlfeedback"]["label_balance"]["train"].update(
            {"1": m["sources"]["vlfeedback"]["label_balance"]["train"]["1"] + 1,
             "2": m["sources"]["vlfeedback"]["label_balance"]["train"]["2"] - 1})),
        "label balance of vlfeedback train"),
    "stray parquet in data/": (
        lambda f: shutil.copy(f / "data" / "test-00000-of-00001.parquet", f / "data" / "test-00001-of-00001.parquet"),
        "data/test-00001-of-00001.parquet"),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", DAMAGE)
def test_a_folder_that_is_not_what_its_build_json_says_is_refused_before_any_request(built_dataset, hub, env, tmp_path,
                                                                                     damage):
    make, named = DAMAGE[damage]
    folder = shutil.copytree(built_dataset, tmp_path / "work" / "dataset")
    make(folder)
    started = time.monotonic()
    result = run_cli("push", folder, "--repo-id", REPO, environ=env, timeout=30)
    line = " ".join(one_line_error(result).split())
    assert named in line, line
    assert hub.requests == []
    assert "hf_SECRET" not in result.stdout + result.stderr
    assert time.monotonic() - started < 20  # a FIFO is not opened


def test_an_edited_manifest_is_refused_with_what_differs(built_dataset, tmp_path):
    from critic_data import UserError
    from critic_data.hub import plan_push

    folder = shutil.copytree(built_dataset, tmp_path / "dataset")
    rows = _manifest(folder)["splits"]["train"]["rows"]
    _edit_manifest(folder, lambda m: m["splits"]["train"].update(rows=1_000_000))
    with pytest.raises(UserError, match=f"1000000 .*{rows}"):
        plan_push(folder, REPO)


@pytest.mark.slow
def test_rejects_jsonl_is_read_only_when_asked_for_and_only_as_a_file_of_the_folder(built_dataset, tmp_path):
    from critic_data import UserError
    from critic_data.hub import plan_push

    folder = shutil.copytree(built_dataset, tmp_path / "work" / "dataset")
    (folder / "rejects.jsonl").unlink()
    (folder / "rejects.jsonl").symlink_to(_secret(folder))
    assert "rejects.jsonl" in plan_push(folder, REPO).left_out
    with pytest.raises(UserError, match="rejects.jsonl leads to .*secret.txt through a link"):
        plan_push(folder, REPO, include_rejects=True)


@pytest.mark.slow
def test_os_and_editor_leftovers_are_left_out_not_fatal(built_dataset, hub, env, tmp_path):
    folder = shutil.copytree(built_dataset, tmp_path / "dataset")
    junk = [".DS_Store", "Thumbs.db", "data/.DS_Store", "data/._train-00000-of-00001.parquet", "data/Thumbs.db",
            "data/train-00000-of-00001.parquet~", "data/desktop.ini", "build.json.bak", "data/.~lock.x#"]
    for path in junk:
        (folder / path).write_bytes(b"\x00junk")
    result = cli(env, folder, "--repo-id", REPO)
    assert result.returncode == 0, result.stderr
    assert not set(junk) & files_at(hub)
    out = " ".join(result.stderr.split())
    for path in junk:
        assert path in out  # listed under "not uploaded"
    remote, local = describe(env, (REPO, None), (built_dataset, None))
    assert remote == local


@pytest.mark.slow
def test_a_checkpoint_with_a_link_out_of_the_folder_is_refused(tiny_qwen_dir, hub, env, tmp_path):
    folder = shutil.copytree(tiny_qwen_dir, tmp_path / "run")
    (folder / "tokenizer_extra.json").symlink_to(_secret(folder))
    line = one_line_error(cli(env, folder, "--repo-id", REPO))
    assert "tokenizer_extra.json" in line and "link" in line
    assert hub.requests == []

    # A link that stays inside the folder is pushed as the file it points to; an ignored one is left alone.
    (folder / "tokenizer_extra.json").unlink()
    (folder / "tokenizer_extra.json").symlink_to(folder / "config.json")
    (folder / "runs").symlink_to(tmp_path, target_is_directory=True)
    result = cli(env, folder, "--repo-id", REPO)
    assert result.returncode == 0, result.stderr
    repo = hub.repo("model", REPO).resolve("main")
    assert hub.read(repo.files["tokenizer_extra.json"]) == (folder / "config.json").read_bytes()
    assert not any(path.startswith("runs") for path in repo.files)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated header", "not json", "empty"])
def test_a_checkpoint_whose_weights_do_not_read_is_refused(tiny_qwen_dir, hub, env, tmp_path, damage):
    folder = shutil.copytree(tiny_qwen_dir, tmp_path / "run")
    weights = next(folder.glob("*.safetensors"))
    data = weights.read_bytes()
    weights.write_bytes({"truncated header": data[:20], "not json": data[:8] + b"x" * (len(data) - 8),
                         "empty": b""}[damage])
    line = one_line_error(cli(env, folder, "--repo-id", REPO))
    assert weights.name in line
    assert hub.requests == []


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["cut short", "cut inside the last tensor", "bytes after the data"])
def test_a_checkpoint_whose_weights_are_not_as_long_as_their_header_says_is_refused(tiny_qwen_dir, hub, env, tmp_path,
                                                                                    damage):
    """The header of a copy cut short still reads: the size it declares is what tells."""
    folder = shutil.copytree(tiny_qwen_dir, tmp_path / "run")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"cut short": data[: len(data) // 2], "cut inside the last tensor": data[:-1],
                         "bytes after the data": data + b"\x00" * 8}[damage])
    line = " ".join(one_line_error(cli(env, folder, "--repo-id", REPO)).split())
    assert str(weights) in line and "header declares" in line and "nothing was sent" in line
    assert hub.requests == []


def _sharded(tiny_qwen_dir: Path, folder: Path) -> dict:
    """The tiny checkpoint with its weights in two shards and their index; returns the index."""
    from safetensors.numpy import load_file, save_file

    shutil.copytree(tiny_qwen_dir, folder)
    tensors = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, held in shards.items():
        save_file({name: tensors[name] for name in held}, folder / shard)
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())},
             "weight_map": {name: shard for shard, held in shards.items() for name in held}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return index


@pytest.mark.slow
def test_a_sharded_checkpoint_is_pushed_whole(tiny_qwen_dir, hub, env, tmp_path):
    folder = tmp_path / "run"
    _sharded(tiny_qwen_dir, folder)
    result = cli(env, folder, "--repo-id", REPO)
    assert result.returncode == 0, result.stderr
    assert {"model.safetensors.index.json", "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors"} <= files_at(hub, repo_type="model")


def _edit_index(folder: Path, edit) -> None:
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    edit(index)
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


INDEX_DAMAGE = {
    "a shard missing": (lambda f: (f / "model-00002-of-00002.safetensors").unlink(), "names model-00002-of-00002"),
    "a shard left out of the push": (lambda f: (f / "runs").mkdir() or shutil.move(
        f / "model-00002-of-00002.safetensors", f / "runs"), "names model-00002-of-00002"),
    "a shard named outside the folder": (lambda f: _edit_index(f, lambda i: i["weight_map"].update(
        {name: "../model-00002-of-00002.safetensors" for name, shard in i["weight_map"].items()
         if shard.startswith("model-00002")})), "names ../model-00002-of-00002"),
    "a tensor said to be in the other shard": (lambda f: _edit_index(f, lambda i: i["weight_map"].update(
        {"lm_head.weight": "model-00002-of-00002.safetensors" if i["weight_map"]["lm_head.weight"].startswith(
            "model-00001") else "model-00001-of-00002.safetensors"})), "holds lm_head.weight, which it does not"),
    "no weight_map": (lambda f: _edit_index(f, lambda i: i.pop("weight_map")), "is not a weight index"),
    "not JSON": (lambda f: (f / "model.safetensors.index.json").write_text("{"), "is not a weight index"),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", INDEX_DAMAGE)
def test_a_checkpoint_whose_weight_index_does_not_match_its_shards_is_refused(tiny_qwen_dir, hub, env, tmp_path,
                                                                              damage):
    folder = tmp_path / "run"
    _sharded(tiny_qwen_dir, folder)
    make, named = INDEX_DAMAGE[damage]
    make(folder)
    line = " ".join(one_line_error(cli(env, folder, "--repo-id", REPO)).split())
    assert "model.safetensors.index.json" in line and named in line and "nothing was sent" in line, line
    assert hub.requests == []


# --- An endpoint that is not the Hub, and one that never answers (issue 10, sections 3 and 5) -------

LOGIN_PAGE = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body><form>corporate proxy</form></body></html>"


GARBAGE = b"\x00\xff{garbage"


@pytest.mark.parametrize("step, answer", [
    (r"POST /api/repos/create", LOGIN_PAGE), (r"GET /api/datasets/.*/refs", LOGIN_PAGE),
    (r"GET /api/datasets/.*/tree/", LOGIN_PAGE), (r"POST /api/datasets/.*/commit/", LOGIN_PAGE),
    (r"POST /api/repos/create", GARBAGE), (r"POST /api/datasets/.*/preupload/", GARBAGE),
    (r"POST /.*\.git/info/lfs/objects/batch", GARBAGE), (r"POST /api/datasets/.*/commit/", GARBAGE),
])
@pytest.mark.slow
def test_an_endpoint_that_does_not_answer_like_the_hub_is_one_line(built_dataset, hub, env, step, answer):
    hub.answer(step, answer, "text/html; charset=utf-8" if answer is LOGIN_PAGE else "application/json")
    result = cli(env, built_dataset, "--repo-id", REPO)
    line = " ".join(one_line_error(result, alone=False).split())
    assert hub.url in line and "HF_ENDPOINT" in line and "nothing was published" in line
    repo = hub.repo("dataset", REPO)
    assert repo is None or set(repo.resolve("main").files) == {".gitattributes"}


@pytest.mark.slow
def test_a_hub_that_never_answers_ends_the_push_within_the_timeout(built_dataset, tmp_path):
    with socket.socket() as silent:  # the kernel accepts the connection; nobody ever answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        result = run_cli("push", built_dataset, "--repo-id", REPO, "--timeout", "1",
                         environ=client_env(tmp_path, endpoint), timeout=60)
        elapsed = time.monotonic() - started
    line = " ".join(one_line_error(result).split())
    assert endpoint in line and "1 s" in line and "--timeout" in line and "nothing was published" in line
    assert elapsed < 10


def test_push_help_states_the_bounds_push_applies_without_importing_the_hub_client():
    """The numbers live once (critic_data/push_limits.py): the help states those push applies, and
    the CLI, which only names them, stays free of huggingface_hub's import."""
    from critic_data.push_limits import ATTEMPTS, DEFAULT_TIMEOUT, RETRY_WINDOW

    result = run_cli("push", "--help", env={"COLUMNS": "300", "TERM": "dumb"})
    text = " ".join(result.stdout.split())
    assert "--timeout" in text and f"{ATTEMPTS} tries" in text and f"{RETRY_WINDOW} s" in text
    assert f"[default: {DEFAULT_TIMEOUT}]" in text
    imported = subprocess.run([sys.executable, "-c", "import sys, critic_data.cli; print('huggingface_hub' in "
                               "sys.modules)"], capture_output=True, text=True, timeout=60, check=True)
    assert imported.stdout.strip() == "False"


@pytest.mark.slow
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "1e308", "1e10"])
def test_a_timeout_that_is_not_a_positive_number_of_seconds_is_refused(built_dataset, hub, env, value):
    line = one_line_error(cli(env, built_dataset, "--repo-id", REPO, "--timeout", value))
    assert "--timeout" in line
    assert hub.requests == []


# --- A build.json push cannot use, shards the build did not write, option values ---------------

ODD_MANIFESTS = {
    # each keeps the counts adding up: only what the card or the checks read is odd
    "no options": lambda m: m.pop("options"),
    "options null": lambda m: m.update(options=None),
    "no tool": lambda m: m.pop("tool"),
    "no seed": lambda m: m.pop("seed"),
    "no label_balance": lambda m: m["sources"]["vlfeedback"].pop("label_balance"),
    "label_balance a list": lambda m: m["sources"]["vlfeedback"].update(label_balance=[1, 2]),
    "source renamed": lambda m: m["sources"].update(foo=m["sources"].pop("vlfeedback")),
    "command not strings": lambda m: m.update(command=[1, None]),
    "inputs a list": lambda m: m.update(inputs=[]),
    "rows a string": lambda m: m["splits"]["train"].update(rows=str(m["splits"]["train"]["rows"])),
    "rows a bool": lambda m: m["splits"]["test"].update(rows=True),
    "bytes a float": lambda m: m["splits"]["train"].update(bytes=float(m["splits"]["train"]["bytes"])),
    "counts strings": lambda m: m["sources"]["vlfeedback"]["counts"].update(
        {k: str(v) for k, v in m["sources"]["vlfeedback"]["counts"].items() if k != "pairs_filtered"}),
    "a filtered count a string": lambda m: m["sources"]["vlfeedback"]["counts"]["pairs_filtered"].update(
        {k: str(v) for k, v in m["sources"]["vlfeedback"]["counts"]["pairs_filtered"].items()}),
    "splits a list": lambda m: m.update(splits=[]),
    "hashes a list": lambda m: m["splits"]["train"].update(xxh3_128=[]),
    "hash not hex": lambda m: m["splits"]["train"]["xxh3_128"].update(
        {path: "zz" * 16 for path in m["splits"]["train"]["files"]}),
}


@pytest.mark.parametrize("edit", ODD_MANIFESTS)
def test_a_build_json_push_cannot_use_is_refused_with_one_line(built_dataset, tmp_path, edit):
    from critic_data import UserError
    from critic_data.hub import plan_push

    folder = shutil.copytree(built_dataset, tmp_path / "dataset")
    _edit_manifest(folder, ODD_MANIFESTS[edit])
    with pytest.raises(UserError, match="is not a critic-data manifest") as caught:
        plan_push(folder, REPO)
    assert "\n" not in str(caught.value)


@pytest.mark.slow
def test_a_build_json_that_is_not_an_object_is_refused(built_dataset, tmp_path):
    folder = shutil.copytree(built_dataset, tmp_path / "dataset")
    (folder / "build.json").write_text("[1, 2]")
    result = run_cli("push", folder, "--repo-id", REPO, "--dry-run")
    assert "is not a critic-data manifest" in one_line_error(result)
    assert "path in repo" not in result.stderr  # no plan table before the error


def test_build_json_records_the_content_hash_of_each_shard(built_dataset):
    import xxhash

    for split in _manifest(built_dataset)["splits"].values():
        assert split["files"]  # both splits hold rows
        assert split["xxh3_128"] == {path: xxhash.xxh3_128_hexdigest((built_dataset / path).read_bytes())
                                     for path in split["files"]}


@pytest.mark.slow
def test_a_shard_from_another_build_of_the_same_size_is_refused(two_seeds, tmp_path):
    first, other = two_seeds
    shard = "data/train-00000-of-00001.parquet"
    assert (first / shard).stat().st_size == (other / shard).stat().st_size
    assert (first / shard).read_bytes() != (other / shard).read_bytes()
    folder = shutil.copytree(first, tmp_path / "mixed")
    shutil.copy(other / shard, folder / shard)
    line = " ".join(one_line_error(run_cli("push", folder, "--repo-id", REPO, "--dry-run")).split())
    assert line.endswith(f"{shard} is not the file this build wrote (content hash differs); rebuild or restore it")


@pytest.mark.slow
def test_a_shard_with_one_byte_changed_is_refused(built_dataset, tmp_path):
    from critic_data import UserError
    from critic_data.hub import plan_push

    folder = shutil.copytree(built_dataset, tmp_path / "dataset")
    shard = folder / "data" / "train-00000-of-00001.parquet"
    data = bytearray(shard.read_bytes())
    at = data.index(b"\xff\xd8\xff") + 200  # inside an image: the shard still reads, with the same rows
    data[at] ^= 0x01
    shard.write_bytes(bytes(data))
    assert plan_push(built_dataset, REPO)  # the untouched build is fine
    with pytest.raises(UserError, match="data/train-00000-of-00001.parquet is not the file this build wrote"):
        plan_push(folder, REPO)


@pytest.mark.slow
def test_a_build_json_without_hashes_is_pushed_with_a_warning(built_dataset, hub, env, tmp_path):
    folder = shutil.copytree(built_dataset, tmp_path / "dataset")
    _edit_manifest(folder, lambda m: [split.pop("xxh3_128") for split in m["splits"].values()])
    result = cli(env, folder, "--repo-id", REPO)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "content hash" in line]
    assert len(warnings) == 1 and "older" in warnings[0], result.stderr
    assert files_at(hub) >= {"build.json", "data/train-00000-of-00001.parquet"}


@pytest.mark.parametrize("revision", ["../x", "a b", "refs/pr/1", "", "x..y", "v1.lock", "-x", "x/", "/x", "a//b",
                                      "x@{1}", ".hidden", "a:b", "tab\tx"])
def test_a_revision_that_is_not_a_branch_name_is_refused_before_any_request(built_dataset, revision):
    from critic_data import UserError
    from critic_data.hub import plan_push

    with pytest.raises(UserError, match="--revision"):
        plan_push(built_dataset, REPO, revision)


@pytest.mark.slow
@pytest.mark.parametrize("revision", ["v2", "feature/critic-r1", "release_1.0", "a+b"])
def test_a_branch_name_is_accepted_as_revision(built_dataset, revision):
    from critic_data.hub import plan_push

    assert plan_push(built_dataset, REPO, revision).revision == revision


@pytest.mark.parametrize("revision, ok", [
    ("0123456789abcdef0123456789abcdef01234567", True), ("refs/pr/1", True), ("refs/convert/parquet", True),
    ("v1.0", True), ("../x", False), ("a b", False), ("main.lock", False), ("", False),
])
def test_a_revision_to_read_from_may_be_any_ref_name(revision, ok):
    from critic_data import UserError
    from critic_data.hub_client import check_revision

    if ok:
        assert check_revision(revision, branch=False) == revision
    else:
        with pytest.raises(UserError, match="--revision .* is not a revision"):
            check_revision(revision, branch=False)


# --- what a new user sees: a log without progress bars, a no-op in one line, no token before the plan ----------
def _push_logged(env: dict, *args: str) -> tuple[int, bytes]:
    """A push as CI runs it: stderr into a file, huggingface_hub's progress bars left to its default (on)."""
    env = {name: value for name, value in env.items() if name != "HF_HUB_DISABLE_PROGRESS_BARS"}
    with open(Path(env["HF_HOME"]).parent / f"push-{uuid.uuid4().hex}.log", "w+b") as log:
        result = subprocess.run([CLI, "push", *map(str, args)], env=env, stdout=subprocess.DEVNULL, stderr=log,
                                timeout=120)
        log.seek(0)
        return result.returncode, log.read()


@pytest.mark.slow
def test_a_push_logged_to_a_file_writes_plain_lines_and_no_progress_bars(built_dataset, hub, env):
    returncode, log = _push_logged(env, built_dataset, "--repo-id", REPO)
    assert returncode == 0, log
    assert b"\x1b[" not in log and b"\r" not in log, log  # no cursor moves or colours, no redrawn lines
    lines = log.decode().splitlines()
    published = {path: blob for path, blob in hub.repo("dataset", REPO).resolve("main").files.items()
                 if path != ".gitattributes"}
    size = sum(blob.size for blob in published.values())
    assert f"uploading {len(published)} files ({size:,} bytes) in one commit" in lines, log
    assert lines[-1].startswith(f"pushed 53 rows (train 41, test 12) to {hub.url}/datasets/{REPO} @ main: "), log


@pytest.mark.slow
@pytest.mark.parametrize("args", [(), ("--revision", "v2")])
def test_pushing_the_same_build_again_prints_one_line_and_makes_no_commit(built_dataset, hub, env, args):
    assert cli(env, built_dataset, "--repo-id", REPO, *args).returncode == 0
    commits = hits(hub, "POST", "/commit/")
    returncode, log = _push_logged(env, built_dataset, "--repo-id", REPO, *args)
    assert returncode == 0, log
    revision = args[-1] if args else "main"
    line = f"nothing to do: {hub.url}/datasets/{REPO} @ {revision} already holds this dataset; no commit made"
    assert log.decode().splitlines() == [line]
    assert hits(hub, "POST", "/commit/") == commits


@pytest.mark.slow
def test_a_missing_token_is_reported_before_the_plan_and_nothing_is_sent(built_dataset, hub, tmp_path):
    env = client_env(tmp_path, hub.url, token=None)
    Path(env["HF_HOME"]).mkdir()  # a home without a saved login
    result = cli(env, built_dataset, "--repo-id", REPO)
    line = one_line_error(result)
    assert "hf auth login" in line and "HF_TOKEN" in line
    assert result.stderr == line + "\n" and result.stdout == ""  # nothing of the plan
    assert hub.requests == []
    assert cli(env, built_dataset, "--repo-id", REPO, "--dry-run").returncode == 0  # a dry run needs no token

    (Path(env["HF_HOME"]) / "token").write_text(WRITE_TOKEN)  # what `hf auth login` saves
    pushed = cli(env, built_dataset, "--repo-id", REPO)
    assert pushed.returncode == 0, pushed.stderr
    assert "README.md" in files_at(hub)


# --- push ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("repo_id",
                         ["critic/vlf ü", "critic/vl f", "críticó/vlf", "critic/" + "x" * 200, "critic/\u200bvlf",
                          "critic/vlf\n", " critic/vlf", "critic/..", "critic/-vlf"])
def test_a_repo_id_the_hub_refuses_is_one_line_before_any_request(built_dataset, repo_id):
    from critic_data.hub import plan_push

    with pytest.raises(UserError, match="is not a repo id") as caught:
        plan_push(built_dataset, repo_id)
    assert "\n" not in str(caught.value).replace(repr(repo_id), "")


@pytest.mark.slow
@pytest.mark.parametrize("make", ["fifo", "folder", "link to /dev/zero"])
def test_include_rejects_takes_rejects_jsonl_only_as_a_regular_file(built_dataset, tmp_path, make):
    from critic_data.hub import plan_push

    folder = shutil.copytree(built_dataset, tmp_path / "dataset")
    rejects = folder / "rejects.jsonl"
    rejects.unlink()
    {"fifo": os.mkfifo, "folder": Path.mkdir, "link to /dev/zero": lambda p: p.symlink_to("/dev/zero")}[make](rejects)
    with pytest.raises(UserError, match="rejects.jsonl") as caught:
        plan_push(folder, "critic/vlf", include_rejects=True)
    assert "nothing was sent" in one_line_message(caught)


@pytest.mark.slow
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
        result = run_cli("push", built_dataset, "--repo-id", "critic/vlf", environ=client_env(tmp_path, hub.url, token))
    finally:
        hub.stop()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert token not in result.stdout + result.stderr
    assert "bad header Authorization" in result.stderr and "nothing was published" in result.stderr


@pytest.mark.slow
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
    result = run_cli(command.split()[0], folder, *args)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == (0 if command == "push --dry-run" else 2), result.stderr
    assert str(folder) in "".join(result.stderr.split())  # rich may wrap the line
