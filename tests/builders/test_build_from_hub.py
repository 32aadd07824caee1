"""`critic-data build` without `--input`: the source is fetched from the Hub (the local Hub of
tests/hub_server.py, serving miniatures of each source's repository laid out as the real one is
today, files the build does not read included) into the Hugging Face cache, at the commit
`--revision` pins, and can be rebuilt from that cache with no network at all. Only the files the
reader reads are fetched. Run as the user runs it: the CLI in a subprocess, HF_ENDPOINT at the server.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from critic_data.builders.options import BuildOptions
from critic_data.builders.pipeline import build as run_build
from tests.cli import one_line_error, run_cli
from tests.hub_server import LocalHub, client_env
from tests.snapshots import (
    write_llava_critic_repo,
    write_llava_rlhf_repo,
    write_rlhf_v_repo,
    write_vlfeedback_converted,
    write_vlfeedback_parquet,
    write_vlfeedback_repo,
)

CLI = str(Path(sys.executable).parent / "critic-data")
HF = str(Path(sys.executable).parent / "hf")
REPO = "MMInstruction/VLFeedback"  # the repo the vlfeedback source fetches
CONVERTED = "refs/convert/parquet"  # the Hub's parquet conversion of a dataset


def repo_files(folder: Path) -> dict[str, bytes]:
    """Every file of a local copy of a repository, as put_files commits them."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def snapshot_files(folder: Path, seed: int) -> dict[str, bytes]:
    """MMInstruction/VLFeedback's main branch as it is laid out today."""
    write_vlfeedback_repo(folder, n=30, seed=seed)
    return repo_files(folder)


def cached_files(tmp_path: Path, repo_id: str) -> set[str]:
    """The files of `repo_id` in the Hugging Face cache of `client_env(tmp_path, ...)`, every snapshot."""
    snapshots = tmp_path / "hf-home" / "hub" / f"datasets--{repo_id.replace('/', '--')}" / "snapshots"
    return {str(p.relative_to(commit)) for commit in snapshots.iterdir() for p in commit.rglob("*") if p.is_file()}


def downloaded(hub: LocalHub) -> set[str]:
    """The repository paths whose content the Hub sent."""
    return {path.split("/resolve/", 1)[1].split("/", 1)[1] for method, path, _ in hub.requests
            if method == "GET" and "/resolve/" in path}


@pytest.fixture
def hub(tmp_path):
    server = LocalHub(tmp_path / "hub-storage").start()
    yield server
    server.stop()


def build(env: dict, out: Path, *args: str, timeout: float = 120,
          source: str = "vlfeedback") -> subprocess.CompletedProcess:
    return run_cli("build", "--source", source, "--out", out, "--test-size", "0.2", "--num-proc", "1", *args,
                   environ=env, timeout=timeout)


def build_here(folder: Path, out: Path, source: str = "vlfeedback", **options) -> dict:
    """A build from the local copy `folder`, in this process (no CLI start-up), as `build` runs it."""
    return run_build(BuildOptions(out=out, sources=(source,), inputs={source: folder}, test_size=0.2, num_proc=1,
                                  **options))


def data_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "data").glob("*.parquet"))}


@pytest.mark.slow
def test_build_from_the_hub_at_a_pinned_commit_then_again_offline_from_the_cache(hub, tmp_path):
    pinned = hub.put_files("dataset", REPO, snapshot_files(tmp_path / "v1", seed=1), "v1")
    hub.put_files("dataset", REPO, snapshot_files(tmp_path / "v2", seed=2), "v2")  # main moves on
    env = client_env(tmp_path, hub.url)

    first = build(env, tmp_path / "from-hub", "--revision", pinned)
    assert first.returncode == 0, first.stderr
    manifest = json.loads((tmp_path / "from-hub" / "build.json").read_text())
    origin = manifest["inputs"]["vlfeedback"]
    assert (origin["kind"], origin["repo_id"], origin["commit"]) == ("hub", REPO, pinned)
    assert origin["layout"] == "jsonl"
    assert any(path.endswith(f"/resolve/{pinned}/vlfeedback_80k.jsonl") for method, path, _ in hub.requests
               if method == "GET")

    # The pinned commit's content, not main's: the same rows as a build from a local copy of v1.
    local = build(env, tmp_path / "from-local", "--input", str(tmp_path / "v1"))
    assert local.returncode == 0, local.stderr
    assert data_files(tmp_path / "from-hub") == data_files(tmp_path / "from-local")

    # No network at all: the Hub is gone and offline mode is on; the cache alone rebuilds it.
    hub.stop()
    offline = build({**env, "HF_HUB_OFFLINE": "1"}, tmp_path / "offline", "--revision", pinned)
    assert offline.returncode == 0, offline.stderr
    assert data_files(tmp_path / "offline") == data_files(tmp_path / "from-hub")
    again = json.loads((tmp_path / "offline" / "build.json").read_text())["inputs"]["vlfeedback"]
    assert again == origin


@pytest.mark.slow
def test_build_from_the_hub_follows_main_when_not_pinned(hub, tmp_path):
    hub.put_files("dataset", REPO, snapshot_files(tmp_path / "v1", seed=1), "v1")
    head = hub.put_files("dataset", REPO, snapshot_files(tmp_path / "v2", seed=2), "v2")
    result = build(client_env(tmp_path, hub.url), tmp_path / "out")
    assert result.returncode == 0, result.stderr
    origin = json.loads((tmp_path / "out" / "build.json").read_text())["inputs"]["vlfeedback"]
    assert (origin["repo_id"], origin["revision"], origin["commit"]) == (REPO, "main", head)


def test_offline_without_a_cached_snapshot_is_one_line_suggesting_input(tmp_path):
    line = one_line_error(build(client_env(tmp_path, "http://127.0.0.1:9", HF_HUB_OFFLINE="1"), tmp_path / "out"))
    assert REPO in line and "--input" in line
    assert not (tmp_path / "out").exists()


def test_an_unknown_revision_is_one_line(hub, tmp_path):
    hub.put_files("dataset", REPO, snapshot_files(tmp_path / "v1", seed=1), "v1")
    line = one_line_error(build(client_env(tmp_path, hub.url), tmp_path / "out", "--revision", "no-such-branch"))
    assert "no-such-branch" in line


@pytest.mark.slow
def test_a_hub_that_never_answers_ends_the_build_in_one_line(tmp_path):
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        result = build(client_env(tmp_path, endpoint, HF_HUB_DOWNLOAD_TIMEOUT="1", HF_HUB_ETAG_TIMEOUT="1"),
                       tmp_path / "out", timeout=60)
        elapsed = time.monotonic() - started
    line = one_line_error(result)
    assert REPO in line and "--input" in line
    assert elapsed < 15


@pytest.mark.parametrize("body, content_type", [
    (b"<!doctype html><html><body>Please log in</body></html>", "text/html"), (b"\x00\xff{garbage", "application/json"),
], ids=["login page", "garbage"])
@pytest.mark.slow
def test_an_endpoint_that_does_not_answer_like_the_hub_is_one_line(hub, tmp_path, body, content_type):
    hub.put_files("dataset", REPO, snapshot_files(tmp_path / "v1", seed=1), "v1")
    hub.answer(r"^GET /api/datasets/", body, content_type)
    line = one_line_error(build(client_env(tmp_path, hub.url), tmp_path / "out"))
    assert hub.url in line and "HF_ENDPOINT" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("revision", ["../x", "a b"])
def test_a_revision_that_is_no_ref_name_is_refused_before_any_request(hub, tmp_path, revision):
    hub.put_files("dataset", REPO, snapshot_files(tmp_path / "v1", seed=1), "v1")
    line = one_line_error(build(client_env(tmp_path, hub.url), tmp_path / "out", "--revision", revision))
    assert "--revision" in line
    assert hub.requests == []
    assert not (tmp_path / "out").exists()


# --- each source's repository as it is laid out today ------------------------------------------

@pytest.mark.slow
def test_vlfeedback_main_fetches_only_the_files_the_build_reads(hub, tmp_path):
    """main holds no data/ folder: the JSON Lines copy and its images are fetched, not
    instruction_source.jsonl, the loading script or the card, and read as a local copy is."""
    head = hub.put_files("dataset", REPO, snapshot_files(tmp_path / "repo", seed=1))
    env = client_env(tmp_path, hub.url)
    result = build(env, tmp_path / "from-hub")
    assert result.returncode == 0, result.stderr
    assert cached_files(tmp_path, REPO) == downloaded(hub) == {"vlfeedback_80k.jsonl", "merged_images.zip"}
    origin = json.loads((tmp_path / "from-hub" / "build.json").read_text())["inputs"]["vlfeedback"]
    assert (origin["commit"], origin["revision"], origin["layout"]) == (head, "main", "jsonl")
    build_here(tmp_path / "repo", tmp_path / "from-local")
    assert data_files(tmp_path / "from-hub") == data_files(tmp_path / "from-local")


@pytest.mark.slow
def test_the_parquet_conversion_is_fetched_at_its_branch_and_read_like_a_reupload(hub, tmp_path):
    hub.put_files("dataset", REPO, snapshot_files(tmp_path / "main", seed=1))
    write_vlfeedback_converted(tmp_path / "converted", n=30, seed=1)
    converted = hub.put_files("dataset", REPO, repo_files(tmp_path / "converted"), branch=CONVERTED)
    env = client_env(tmp_path, hub.url)

    result = build(env, tmp_path / "from-hub", "--revision", CONVERTED)
    assert result.returncode == 0, result.stderr
    assert ("GET", f"/api/datasets/{REPO}/revision/refs%2Fconvert%2Fparquet", 200) in hub.requests
    assert cached_files(tmp_path, REPO) == downloaded(hub) == {"default/train/0000.parquet",
                                                               "default/train/0001.parquet"}
    origin = json.loads((tmp_path / "from-hub" / "build.json").read_text())["inputs"]["vlfeedback"]
    assert (origin["revision"], origin["commit"], origin["layout"]) == (CONVERTED, converted, "converted-parquet")

    # img_path is read as the image: the same rows as the same data re-uploaded with an `image` column
    write_vlfeedback_parquet(tmp_path / "reupload", n=30, seed=1)
    build_here(tmp_path / "reupload", tmp_path / "from-reupload")
    assert data_files(tmp_path / "from-hub") == data_files(tmp_path / "from-reupload")
    # a local copy of the branch (hf download --revision refs/convert/parquet --local-dir DIR) reads alike
    local = build_here(tmp_path / "converted", tmp_path / "from-local")
    assert data_files(tmp_path / "from-local") == data_files(tmp_path / "from-hub")
    assert local["inputs"]["vlfeedback"]["layout"] == "converted-parquet"

    # no network: the branch, and the commit the manifest pinned, rebuild from the cache
    hub.stop()
    for revision in (CONVERTED, converted):
        offline = build({**env, "HF_HUB_OFFLINE": "1"}, tmp_path / f"offline-{len(revision)}", "--revision", revision)
        assert offline.returncode == 0, offline.stderr
        assert data_files(tmp_path / f"offline-{len(revision)}") == data_files(tmp_path / "from-hub")


@pytest.mark.parametrize("image", [
    lambda index, value: value["path"], lambda index, value: value["bytes"],
    lambda index, value: {"path": value["path"]},
], ids=["path string", "raw bytes", "struct without bytes"])
def test_an_img_path_that_is_no_image_struct_rejects_its_rows_with_a_reason(tmp_path, image):
    """The converted column's type is not known for certain: a shard whose img_path is of
    another type has its rows rejected as image_missing; the other shard's rows are used."""
    rows = write_vlfeedback_converted(tmp_path / "converted", n=24, seed=3, shards=2,
                                      image=lambda index, value: image(index, value) if index >= 12 and value
                                      else value)
    manifest = build_here(tmp_path / "converted", tmp_path / "out")
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    missing = {reject["source_id"] for reject in rejects if reject["reason"] == "image_missing"}
    assert {row["id"] for row in rows[12:]} <= missing
    assert manifest["sources"]["vlfeedback"]["counts"]["rows_used"] > 0


def _llava_rlhf_repo(folder: Path) -> None:
    write_llava_rlhf_repo(folder, folder.parent / "coco" / "train2017")


OTHER_SOURCES = [  # source, its repository, the writer of its layout, what is fetched, build options
    ("rlhf_v", "openbmb/RLHF-V-Dataset", write_rlhf_v_repo, {"RLHF-V-Dataset.parquet"}, ()),
    ("llava_critic", "lmms-lab/llava-critic-113k", write_llava_critic_repo,
     {f"pairwise/train-{k:05d}-of-00005.parquet" for k in range(5)}, ()),
    ("llava_rlhf", "zhiqings/LLaVA-Human-Preference-10K", _llava_rlhf_repo, {"llava_7b_v1_preference.json"},
     ("--image-root", "coco/train2017")),
]


@pytest.mark.slow
@pytest.mark.parametrize("source, repo_id, write, fetched, options", OTHER_SOURCES, ids=[s[0] for s in OTHER_SOURCES])
def test_each_source_fetches_only_what_its_reader_reads(hub, tmp_path, source, repo_id, write, fetched, options):
    write(tmp_path / "repo")
    head = hub.put_files("dataset", repo_id, repo_files(tmp_path / "repo"))
    options = [str(tmp_path / o) if o.startswith("coco") else o for o in options]
    env = client_env(tmp_path, hub.url)
    result = build(env, tmp_path / "from-hub", *options, source=source)
    assert result.returncode == 0, result.stderr
    assert cached_files(tmp_path, repo_id) == downloaded(hub) == fetched  # not the card, not llava-critic's pointwise/
    origin = json.loads((tmp_path / "from-hub" / "build.json").read_text())["inputs"][source]
    assert (origin["repo_id"], origin["commit"]) == (repo_id, head)
    build_here(tmp_path / "repo", tmp_path / "from-local", source,
               image_root=Path(options[1]) if options else None)
    assert data_files(tmp_path / "from-hub") == data_files(tmp_path / "from-local")


SUGGESTIONS = [  # source, its repository, the writer of its layout, the branch, what is fetched, build options
    ("vlfeedback", REPO, write_vlfeedback_repo, "main", {"vlfeedback_80k.jsonl", "merged_images.zip"}, ()),
    ("vlfeedback", REPO, write_vlfeedback_converted, CONVERTED,
     {"default/train/0000.parquet", "default/train/0001.parquet"},
     ("--revision", CONVERTED)),
    *((source, repo_id, write, "main", fetched, options) for source, repo_id, write, fetched, options in OTHER_SOURCES),
]


@pytest.mark.slow
@pytest.mark.parametrize("source, repo_id, write, branch, fetched, options", SUGGESTIONS,
                         ids=["vlfeedback", "vlfeedback-converted", *(s[0] for s in OTHER_SOURCES)])
def test_offline_the_suggested_download_fetches_what_the_build_reads(hub, tmp_path, source, repo_id, write, branch,
                                                                     fetched, options):
    """Offline with nothing cached, the one line names a `hf download` of the right repository,
    revision and files: run where there is network, it fetches what a build from the Hub would
    (the layouts that test_each_source_fetches_only_what_its_reader_reads and the conversion's test
    build from a local copy), and nothing else."""
    write(tmp_path / "repo")
    hub.put_files("dataset", repo_id, repo_files(tmp_path / "repo"), branch=branch)
    options = [str(tmp_path / o) if o.startswith("coco") else o for o in options]
    env = client_env(tmp_path, hub.url)
    line = one_line_error(build({**env, "HF_HUB_OFFLINE": "1"}, tmp_path / "out", *options, source=source))
    suggested = line.split("(hf download ", 1)[1].split(") and pass --input DIR", 1)[0]
    words = shlex.split(suggested)
    assert words[0] == repo_id and words[words.index("--local-dir") + 1] == "DIR"
    words[words.index("--local-dir") + 1] = str(tmp_path / "download")
    download = subprocess.run([HF, "download", *words], env=env, capture_output=True, text=True, timeout=120)
    assert download.returncode == 0, download.stderr
    assert {path for path in repo_files(tmp_path / "download") if not path.startswith(".cache/")} == fetched


@pytest.mark.parametrize("source, repo_id, branch, files, looked_for", [
    ("vlfeedback", REPO, "cards-only", {"README.md": b"---\nlicense: other\n---\n"}, "vlfeedback_80k.jsonl"),
    # RLHF-V is read from its own file, not from a parquet conversion
    ("rlhf_v", "openbmb/RLHF-V-Dataset", CONVERTED, {"default/train/0000.parquet": b"PAR1"}, "RLHF-V-Dataset.parquet"),
], ids=["a branch of cards", "rlhf_v at its parquet conversion"])
def test_a_revision_without_the_files_a_source_reads_is_one_line(hub, tmp_path, source, repo_id, branch, files,
                                                                 looked_for):
    """The revision is named with the files looked for; huggingface_hub's own warning is not a second line."""
    hub.put_files("dataset", repo_id, {"README.md": b"# main\n"})
    hub.put_files("dataset", repo_id, files, branch=branch)
    result = build(client_env(tmp_path, hub.url), tmp_path / "out", "--revision", branch, source=source)
    line = one_line_error(result)
    assert result.stderr.strip() == line
    assert f"{repo_id} at revision {branch} holds none" in line and looked_for in line
    assert downloaded(hub) == set()
    assert not (tmp_path / "out").exists()
