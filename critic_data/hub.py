"""Publishing to the Hugging Face Hub: `critic-data push`.

This module owns what a push sends and the rules that keep it safe:
- What: a folder is told apart by its content. A critic-data build (build.json +
  data/*.parquet) goes to a dataset repo as its data shards, build.json, and a README.md card
  with its charts (plots/*.png) rendered again for the push: from build.json, with the real
  repo id, and from the figures of the shards just checked (rejects.jsonl only when asked). A
  trained checkpoint (config.json + weights) goes to a model repo as it is, model card
  included, minus trainer leftovers.
- How: one commit (`HfApi.create_commit`), so a failure at any point publishes nothing. Files
  of the same kind that the new content does not contain (old shards, old weights) are deleted
  in that same commit, so the revision holds exactly the pushed content. A revision that already
  holds it gets no commit.
- Safety: a revision whose payload (data shards, or weights) differs from the folder's is not
  replaced unless `--force`; `--revision NEW` publishes beside it on a new branch and
  `--create-pr` only proposes the change. The commit names the revision's head it was checked
  against (`parent_commit`), so a push that lands in between makes this one fail instead of
  being overwritten.
- Verified before anything is sent: every file a push reads is a regular file inside the
  folder (no link out of it, no FIFO); build.json keeps every rule of its shape
  (`critic_data.manifest.read_manifest`) and the card renders from it; a dataset's shards are
  the parquet files build.json lists, with the build's schema, build.json's counts are theirs,
  and each holds the bytes the build wrote (the xxh3_128 build.json records; older builds have
  none: a warning; `check_shard_bytes`, the rule `inspect` checks too); a checkpoint's
  .safetensors headers read and each file is as long as its header says, and a weight index
  names only shards that are pushed, each holding the tensors it is said to; no text file
  pushed (card, build.json, configs) names the home folder or the folder being pushed;
  --revision is a branch name. OS and editor leftovers (`.DS_Store`, `Thumbs.db`, `*~`) are
  left out, and listed as such.
- Failures: every request waits at most `--timeout` seconds for the Hub. A timeout is final;
  connection errors, 408, 429 and 5xx are retried with exponential backoff (tenacity), at most
  ATTEMPTS tries per call and none after RETRY_WINDOW seconds (`critic_data.push_limits`). This
  is the only retry layer: huggingface_hub's own loops (`http_backoff`) are made to give up at
  once (`hub_client._Client`). Anything else stops at once. Either way the user gets one line
  saying what to do (`UserError`). The token comes from `HF_TOKEN` or the saved login and is handed to
  huggingface_hub only; it is never printed, logged or written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path, PurePath
from typing import NoReturn

import httpx2
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    constants,
    get_token,
    parse_local_safetensors_file_metadata,
)
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RevisionNotFoundError, SafetensorsParsingError
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import filter_repo_objects
from huggingface_hub.utils.sha import git_hash
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential

from critic_data import UserError, __version__
from critic_data.hub_client import NotTheHub, check_revision, is_repo_id, retried_status, use_timeout
from critic_data.manifest import Manifest, not_a_manifest, read_manifest
from critic_data.push_limits import ATTEMPTS, DEFAULT_TIMEOUT, RETRY_WINDOW

log = logging.getLogger(__name__)

# Hidden files and OS or editor leftovers: never pushed, never a reason to refuse a folder.
JUNK = (".*", "Thumbs.db", "desktop.ini", "*~", "*.bak", "*.orig", "#*#")


@dataclass(frozen=True)
class Kind:
    """What a folder is, and which of its files a push publishes, compares and replaces."""

    name: str
    repo_type: str
    payload: tuple[str, ...]  # the files that make the content: compared before replacing a revision
    replaces: tuple[str, ...]  # remote files a push owns: deleted when the folder no longer has them


DATASET = Kind("dataset", "dataset", payload=("data/*",), replaces=("data/*", "plots/*", "rejects.jsonl"))
MODEL = Kind("checkpoint", "model",
             payload=("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin",
                      "pytorch_model*.bin.index.json"),
             replaces=("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin",
                       "pytorch_model*.bin.index.json"))

# Trainer leftovers in an output folder: intermediate checkpoints, optimizer state, logs, caches.
CHECKPOINT_IGNORE = ["*__pycache__*", "checkpoint-*", "runs/*", "optimizer.pt", "scheduler.pt",
                     "rng_state*.pth", "scaler.pt", "trainer_state.json"]


@dataclass
class Plan:
    """A push worked out from the local folder alone (what `--dry-run` shows)."""

    folder: Path
    kind: Kind
    repo_id: str
    revision: str
    files: dict[str, Path | bytes]  # path in the repo -> local file, or content made for the push
    left_out: list[str] = field(default_factory=list)  # files of the folder deliberately not pushed
    summary: str = ""

    @property
    def url(self) -> str:
        prefix = "" if self.kind.repo_type == "model" else f"{self.kind.repo_type}s/"
        return f"{constants.ENDPOINT}/{prefix}{self.repo_id}"

    def size(self, path: str) -> int:
        source = self.files[path]
        return len(source) if isinstance(source, bytes) else source.stat().st_size


@dataclass
class Outcome:
    commit_url: str
    pr_url: str | None
    created_branch: bool
    deleted: list[str]
    unchanged: bool  # the revision already held exactly this content: no commit was made


def plan_push(folder: Path, repo_id: str, revision: str | None = None, include_rejects: bool = False) -> Plan:
    """Decide from the folder's content what to push where; no network. Raises UserError."""
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; pass a dataset folder made by `critic-data build` or a trained "
                        "checkpoint")
    kind = _detect(folder)
    repo_id = _check_repo_id(repo_id, kind, folder)
    revision = constants.DEFAULT_REVISION if revision is None else check_revision(revision, branch=True)
    plan = Plan(folder, kind, repo_id, revision, files={})
    if kind is DATASET:
        _plan_dataset(plan, include_rejects)
    else:
        _plan_checkpoint(plan)
    _refuse_local_paths(plan)
    return plan


# Files read as text by whoever opens the repo: the card, build.json, configs, tokenizer files.
TEXT_SUFFIXES = (".md", ".json", ".jsonl", ".txt", ".yaml", ".yml", ".jinja")


def _refuse_local_paths(plan: Plan) -> None:
    """The last line of defence of "nothing published holds a local path": a text file the push
    would publish that names the user's home folder or the folder being pushed stops the push
    (build.json and the card name local paths only relatively, `critic_data.files.published_path`;
    a hand-edited file or another tool's can still hold them). A path is matched as a whole
    name: /home/al does not match /home/alice."""
    home = os.path.abspath(os.path.expanduser("~"))
    places = dict.fromkeys([os.path.abspath(plan.folder), str(plan.folder.resolve())], "the folder being pushed")
    if home != "/":  # a home of "/" would match every path
        places.setdefault(home, "your home folder")
    alternatives = b"|".join(re.escape(os.fsencode(place)) for place in sorted(places, key=len, reverse=True))
    pattern = re.compile(b"(?:" + alternatives + rb")(?![\w.-])")
    # the folder's own files first: a card rendered for the push names a path only if build.json does
    for path, source in sorted(plan.files.items(), key=lambda item: (isinstance(item[1], bytes), item[0])):
        if path.endswith(TEXT_SUFFIXES):
            found = pattern.search(source if isinstance(source, bytes) else source.read_bytes())
            if found:
                place = os.fsdecode(found.group())
                raise UserError(f"{path} holds the local path {place} ({places[place]}); nothing was sent. A published "
                                "file must not name this machine's folders: rebuild with this critic-data, or remove "
                                "the path from the file")


def _detect(folder: Path) -> Kind:
    if (folder / "build.json").is_file() and any((folder / "data").glob("*.parquet")):
        return DATASET
    weights = [*folder.glob("*.safetensors"), *folder.glob("pytorch_model*.bin")]
    if (folder / "config.json").is_file() and weights:
        return MODEL
    raise UserError(f"{folder} is neither a critic-data dataset (build.json + data/*.parquet) nor a checkpoint "
                    "(config.json + *.safetensors); pass the --out folder of a build or the output folder of a "
                    "training run")


def _check_repo_id(repo_id: str, kind: Kind, folder: Path) -> str:
    # "datasets/OWNER/NAME" and "models/OWNER/NAME" are how Hub URLs name a repo's type: accept the
    # right one, and stop on the wrong one rather than publishing into a repo of another type.
    given = repo_id
    prefix, _, rest = repo_id.partition("/")
    if prefix in ("datasets", "models", "spaces") and rest.count("/") == 1:
        if prefix != f"{kind.repo_type}s":
            raise UserError(f"{folder} is a {kind.name}, which goes to a {kind.repo_type} repo, but --repo-id "
                            f"{repo_id} names a {prefix[:-1]} repo; pass --repo-id {rest}")
        repo_id = rest
    if not is_repo_id(repo_id):
        raise UserError(f"--repo-id {given!r} is not a repo id; write OWNER/NAME (letters, digits, '-', '_', '.')")
    return repo_id


def _manifest_for_the_card(folder: Path, repo_id: str) -> Manifest:
    """build.json, as `read_manifest` reads it, once the card renders from it for `repo_id`: the
    template also renders what the type leaves as it is (options, inputs). Tried here, without
    the data's figures, so that a build.json the card cannot use stops before the shards are read."""
    from critic_data.cards.dataset_card import render_dataset_card

    _file_inside(folder, "build.json", "build.json")
    manifest = read_manifest(folder)
    try:
        render_dataset_card(manifest.raw, source_specs(manifest.raw), repo_id=repo_id)
    except Exception as error:  # noqa: BLE001 - what the type leaves as it is can break the template anywhere
        raise not_a_manifest(folder / "build.json", str(error) or type(error).__name__) from None
    return manifest


def source_specs(manifest: dict) -> list:
    """The specs of a manifest's sources, which its card cites and licenses."""
    from critic_data.builders import SOURCES

    return [SOURCES[name] for name in manifest["sources"]]


def _plan_dataset(plan: Plan, include_rejects: bool) -> None:
    from critic_data import cli_flags
    from critic_data.builders.options import BuildOptions
    from critic_data.cards.dataset_card import PLOTS, card_figures, render_dataset_card

    folder = plan.folder
    manifest = _manifest_for_the_card(folder, plan.repo_id)
    rows = _check_shards(folder, manifest)

    # The card and its charts are rendered again from the shards just checked (as README.md is
    # for the repo id), not taken from plots/: what the Hub shows is always the figures of the
    # data it serves, and a chart of the folder that was changed or lost cannot be published.
    with tempfile.TemporaryDirectory(prefix="critic-data-plots-") as scratch:
        statistics, plots = card_figures(folder, manifest.raw, Path(scratch))
        charts = {f"{PLOTS}/{name}": (Path(scratch) / name).read_bytes() for name in plots}
    _check_label_balance(folder, manifest, statistics)
    plan.files = {path: folder / path for split in manifest.splits.values() for path in split.files}
    plan.files["build.json"] = folder / "build.json"
    plan.files["README.md"] = render_dataset_card(manifest.raw, source_specs(manifest.raw), plan.repo_id,
                                                  statistics, plots, option_flags=cli_flags(BuildOptions)
                                                  ).encode("utf-8")
    plan.files.update(charts)
    if include_rejects and ((folder / "rejects.jsonl").exists() or (folder / "rejects.jsonl").is_symlink()):
        plan.files["rejects.jsonl"] = _file_inside(folder, "rejects.jsonl", "--include-rejects")
    # Listed as left out: what the folder holds beside the build (data/ can only hold junk by
    # now). README.md and the charts are not: those rendered for the repo replace them.
    entries = [p.name + "/" * p.is_dir() for p in folder.iterdir()
               if p.name != "data" and not (p.name == PLOTS and p.is_dir())]
    entries += _files(folder / "data", folder) + _files(folder / PLOTS, folder)
    plan.left_out = sorted(path for path in entries if path not in plan.files and path != "README.md")
    plan.summary = f"{sum(rows.values())} rows (" + ", ".join(f"{n} {r}" for n, r in rows.items()) + ")"


def _check_shards(folder: Path, manifest: Manifest) -> dict[str, int]:
    """The rows of each split, once the folder's shards are checked to be exactly the build
    build.json describes: its listed files, schema, row counts, accounting and bytes."""
    from critic_data.schemas import FORMATS

    features = FORMATS[manifest.format]  # as datasets serialises Features
    listed = [path for split in manifest.splits.values() for path in split.files]
    # Publish exactly the build: a shard missing from the folder, or a stray one the card's
    # `data/{split}-*` patterns would load, means the folder is not what build.json describes.
    held = dict.fromkeys(manifest.splits, 0)  # rows
    for name, split in manifest.splits.items():
        for path in split.files:
            if not fnmatch(path, f"data/{name}-*"):
                _mismatch(folder,
                          f"{path} is listed as a {name} shard, but the card loads that split from data/{name}-*")
            shard = _file_inside(folder, path, "build.json")
            held[name] += _shard_rows(shard, path, folder, features, manifest.format)
    for name, split in manifest.splits.items():
        if split.rows != held[name]:
            _mismatch(folder, f"build.json says the {name} split has {split.rows} rows, its shards hold {held[name]} "
                              "rows")
    stray = sorted(path for path in _files(folder / "data", folder) if path not in listed and not _is_junk(path))
    if stray:
        _mismatch(folder, f"{', '.join(stray)} is not listed in it")
    # (its counts add up, `read_manifest` checked: what its sources kept must be what the shards hold)
    kept = sum(source.counts.pairs_kept for source in manifest.sources.values())
    if kept != sum(held.values()):
        _mismatch(folder, f"its sources kept {kept} pairs (pairs_kept), its splits hold {sum(held.values())} rows")
    check_shard_bytes(folder, manifest)  # last, as it reads every byte
    return held


def _check_label_balance(folder: Path, manifest: Manifest, statistics: dict) -> None:
    """build.json's label balance per source and split must be the shards' count (the card
    shows the shards' count; build.json is published beside it)."""
    held = {(row["source"], row["split"]): {label: n for label, n in (("1", row["answer_1"]), ("2", row["answer_2"]),
                                                                    ("tie", row["ties"])) if n}
            for row in statistics["rows"]}
    said = {(name, split): {label: n for label, n in labels.items() if n}
            for name, source in manifest.sources.items() for split, labels in source.label_balance.items()}
    for key in dict.fromkeys([*said, *held]):
        if said.get(key, {}) != held.get(key, {}):
            _mismatch(folder, f"its label balance of {key[0]} {key[1]} is {said.get(key, {})}, its shards hold "
                              f"{held.get(key, {})}")


def check_shard_bytes(folder: Path, manifest: Manifest) -> None:
    """The shards build.json lists hold the bytes the build wrote: each split's size, and each
    shard's xxh3_128, so that neither a same-sized shard of another build (other labels) nor a
    damaged copy passes for this build's (a build of an older critic-data records no hashes: a
    warning). What `push` publishes and what `inspect` reports are checked by this one rule; it
    reads every byte. Raises UserError naming the first split or shard that differs."""
    from critic_data.builders.writer import file_xxh3_128

    for name, split in manifest.splits.items():
        size = 0
        for path in split.files:
            try:
                info = (folder / path).stat()
            except OSError:
                _differs(folder, f"{path}, listed in it, is missing or unreadable")
            if not stat.S_ISREG(info.st_mode):  # a FIFO would block the read forever
                _differs(folder, f"{path} is not a regular file")
            size += info.st_size
        if split.bytes != size:
            _differs(folder, f"it says the {name} split has {split.bytes} bytes, its shards hold {size} bytes")
    if any(split.xxh3_128 is None for split in manifest.splits.values()):
        log.warning("%s records no content hash of its shards (a build of an older critic-data): they cannot be "
                    "checked to be the files the build wrote; rebuild to have them checked", folder / "build.json")
    for path, digest in (item for split in manifest.splits.values() if split.xxh3_128 for item in
                         split.xxh3_128.items()):
        if file_xxh3_128(folder / path) != digest:
            raise UserError(f"{path} is not the file this build wrote (content hash differs); rebuild or restore it")


def _differs(folder: Path, problem: str) -> NoReturn:
    raise UserError(f"{folder} does not match its build.json: {problem}; rebuild it, or restore the files the build "
                    "wrote")


def _mismatch(folder: Path, problem: str) -> NoReturn:
    raise UserError(f"{folder} does not match its build.json: {problem}; nothing was sent. Push the folder "
                    "`critic-data build` wrote, or rebuild it with --overwrite")


def _file_inside(folder: Path, path: str, listed_in: str) -> Path:
    """`folder / path`, if it is a regular file of the folder reached through no link (a link
    would publish whatever it points to: a file outside, or one the build did not write)."""
    target = folder / path
    root = folder.resolve()
    try:
        mode = target.lstat().st_mode
        resolved = target.resolve(strict=True)
    except OSError:
        _mismatch(folder, f"{path}, named by {listed_in}, is missing or unreadable")
    if resolved != root / path or not resolved.is_relative_to(root):
        _mismatch(folder, f"{path} leads to {resolved} through a link; only files of the folder itself are pushed")
    if not stat.S_ISREG(mode):
        _mismatch(folder, f"{path} is not a regular file")
    return target


def _shard_rows(shard: Path, path: str, folder: Path, features, output_format: str) -> int:
    """The rows a shard's footer declares, once its schema is checked to be the build's."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Features

    from critic_data.schemas import arrow_schema

    try:
        metadata = pq.read_metadata(shard)
        schema = metadata.schema.to_arrow_schema()
    except (pa.ArrowException, OSError) as error:
        _mismatch(folder, f"{path} is not a readable parquet file ({error})")
    # Columns and types must be the build's. The `huggingface` schema metadata is compared as the
    # features `datasets` restores from it (Image columns), not byte for byte: its serialization
    # differs between `datasets` versions.
    expected = arrow_schema(features)
    if schema.names != expected.names:
        _mismatch(folder, f"{path} does not hold {output_format} rows (its columns: {', '.join(schema.names)[:200]})")
    for found, wanted in zip(schema, expected):
        if not found.equals(wanted):
            _mismatch(folder, f"{path}: column {found.name} is {found.type}, not {wanted.type}")
    try:
        restored = Features.from_arrow_schema(schema)
    except (ValueError, KeyError, TypeError):
        restored = None
    if restored != Features.from_dict(features):
        _mismatch(folder, f"{path}: its schema metadata does not declare the build's features (Image columns)")
    return metadata.num_rows


def _files(folder: Path, root: Path) -> list[str]:
    """Every entry under `folder` but its subfolders (links to folders included), relative to `root`."""
    return [str(p.relative_to(root)) for p in folder.rglob("*") if not p.is_dir() or p.is_symlink()]


def _is_junk(path: str) -> bool:
    return any(fnmatch(part, pattern) for part in PurePath(path).parts for pattern in JUNK)


def _plan_checkpoint(plan: Plan) -> None:
    folder, root = plan.folder, plan.folder.resolve()
    # Linked folders are listed as "name/" (rglob does not descend into them), so that the
    # ignore patterns of what they hold ("runs/*") apply to them too.
    every = sorted(path + "/" * (folder / path).is_dir() for path in _files(folder, folder))
    kept = [path for path in filter_repo_objects(every, ignore_patterns=CHECKPOINT_IGNORE) if not _is_junk(path)]
    plan.left_out = sorted(set(every) - set(kept))
    for path in kept:
        source = folder / path
        if not source.resolve().is_relative_to(root):
            raise UserError(f"{source} is a link to {source.resolve()}, outside the folder; nothing was sent. Copy "
                            "the file into the folder (or remove the link) and push again")
        if path.endswith("/"):
            plan.left_out.append(path)  # a link to a folder inside: its files are pushed from where they are
        elif not source.is_file():
            raise UserError(f"{source} is not a regular file; nothing was sent. Remove it and push again")
        else:
            plan.files[path] = source
    tensors = {path: _safetensors_tensors(source) for path, source in plan.files.items()
               if path.endswith(".safetensors")}
    _check_weight_indexes(plan, tensors)
    if "README.md" not in plan.files:
        log.warning("%s has no README.md: the model repo will have no model card", plan.folder)
    plan.summary = f"{len(plan.files)} files"


def _safetensors_tensors(path: Path) -> set[str]:
    """The tensor names of a safetensors file, once its header reads and the file is as long as
    the header says: 8 bytes of header length, the header, then the data up to the last tensor's
    end. A copy cut short (an interrupted save or download) has a header that still reads."""
    try:
        metadata = parse_local_safetensors_file_metadata(path)
        with path.open("rb") as handle:
            header = int.from_bytes(handle.read(8), "little")
        declared = 8 + header + max((int(info.data_offsets[1]) for info in metadata.tensors.values()), default=0)
    except (SafetensorsParsingError, OSError, ValueError, TypeError, AttributeError, IndexError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"{path} is not a readable safetensors file ({first}); nothing was sent. Save the "
                        "checkpoint again") from None
    size = path.stat().st_size
    if size != declared:
        raise UserError(f"{path} holds {size} bytes where its header declares {declared} "
                        f"({'cut short' if size < declared else 'bytes after its data'}); nothing was sent. Save or "
                        "copy the checkpoint again")
    return set(metadata.tensors)


def _check_weight_indexes(plan: Plan, tensors: dict[str, set[str]]) -> None:
    """Each weight index the push publishes (`*.safetensors.index.json`, `*.bin.index.json`)
    names shards it publishes too, and a safetensors shard holds the tensors it is said to hold:
    a model published with a shard missing does not load."""
    for path in sorted(p for p in plan.files if p.endswith((".safetensors.index.json", ".bin.index.json"))):
        source = plan.folder / path
        try:
            weight_map = json.loads(source.read_bytes())["weight_map"]
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
                raise TypeError
        except (OSError, ValueError, RecursionError, KeyError, TypeError, AttributeError):
            raise UserError(f"{source} is not a weight index (a weight_map of tensor names to files); nothing was "
                            "sent. Save the checkpoint again") from None
        for tensor, shard in weight_map.items():
            shard_path = os.path.normpath(os.path.join(os.path.dirname(path), shard))  # shards lie beside their index
            if shard_path not in plan.files:
                raise UserError(f"{source} names {shard}, which is not in {plan.folder} (or is left out of the push); "
                                "nothing was sent. Copy every shard into the folder, or save the checkpoint again")
            if shard_path in tensors and tensor not in tensors[shard_path]:
                raise UserError(f"{source} says {shard} holds {tensor}, which it does not; nothing was sent. Save the "
                                "checkpoint again")


def require_token() -> str:
    """The token a push sends: HF_TOKEN, or the login `hf auth login` saved."""
    token = get_token()
    if not token:
        raise UserError("no Hugging Face token: run `hf auth login`, or set HF_TOKEN to a token with write access; "
                        "nothing was sent")
    return token


Announce = Callable[[list[str]], None]  # told the paths to upload (new or changed), before the upload starts


def push(plan: Plan, *, private: bool = False, create_pr: bool = False, commit_message: str | None = None,
         force: bool = False, timeout: float = DEFAULT_TIMEOUT, announce: Announce | None = None) -> Outcome:
    """Publish `plan` in one commit, or none when the revision already holds exactly this content.
    `announce` is told what will be uploaded once the revision is checked, before the upload.
    Raises UserError with one line for anything the user can fix."""
    token = require_token()
    use_timeout(timeout, owned=True)
    api = HfApi(token=token)
    try:
        return _push(api, plan, private, create_pr, commit_message, force, announce)
    except Exception as error:  # noqa: BLE001 - only errors the user can act on become one line
        explained = _explain(error, plan, timeout)
        if isinstance(explained, UserError) and token in str(explained):  # a server's message echoing the request
            explained = UserError(str(explained).replace(token, "hf_***"))
        raise explained from None


def _push(api: HfApi, plan: Plan, private: bool, create_pr: bool, commit_message: str | None, force: bool,
          announce: Announce | None) -> Outcome:
    repo_type, revision = plan.kind.repo_type, plan.revision
    # private=None leaves the visibility to the namespace's default when --private is not given.
    _call(api.create_repo, plan.repo_id, repo_type=repo_type, private=True if private else None, exist_ok=True)
    branches = {ref.name: ref.target_commit
                for ref in _call(api.list_repo_refs, plan.repo_id, repo_type=repo_type).branches}
    created_branch = revision not in branches
    if created_branch:
        # A new branch starts from main; what it inherits is replaced below, nothing is published over.
        _call(api.create_branch, plan.repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
        head = _call(api.repo_info, plan.repo_id, repo_type=repo_type, revision=revision).sha
    else:
        head = branches[revision]
    remote = {entry.path: entry for entry in _call(lambda: list(api.list_repo_tree(
        plan.repo_id, repo_type=repo_type, revision=head, recursive=True))) if isinstance(entry, RepoFile)}

    additions = {path: CommitOperationAdd(path_in_repo=path, path_or_fileobj=source)
                 for path, source in plan.files.items()}
    if not (created_branch or create_pr or force):
        _refuse_if_different(plan, remote, additions)
    stale = [path for path in filter_repo_objects(sorted(remote), allow_patterns=list(plan.kind.replaces))
             if path not in plan.files]
    changed = [path for path, addition in additions.items() if path not in remote or not _same(remote[path], addition)]
    if not (changed or stale):  # no commit, and none of huggingface_hub's progress bars or warnings
        return Outcome(commit_url=f"{plan.url}/commit/{head}", pr_url=None, created_branch=created_branch, deleted=[],
                       unchanged=True)
    if announce is not None:
        announce(changed)
    operations = [*additions.values(), *(CommitOperationDelete(path_in_repo=path) for path in stale)]
    info = _call(api.create_commit, plan.repo_id, operations, repo_type=repo_type, revision=revision,
                 commit_message=commit_message or f"critic-data {__version__}: {plan.kind.name}, {plan.summary}",
                 create_pr=create_pr, parent_commit=head)
    return Outcome(commit_url=info.commit_url, pr_url=info.pr_url, created_branch=created_branch, deleted=stale,
                   unchanged=info.oid == head)


def _refuse_if_different(plan: Plan, remote: dict, additions: dict[str, CommitOperationAdd]) -> None:
    """Stop when the revision already holds other content of this kind (old shards, old weights)."""
    published = list(filter_repo_objects(sorted(remote), allow_patterns=list(plan.kind.payload)))
    if not published:
        return
    local = list(filter_repo_objects(sorted(plan.files), allow_patterns=list(plan.kind.payload)))
    differs = sorted(set(published) ^ set(local))
    differs += [path for path in set(published) & set(local) if not _same(remote[path], additions[path])]
    if differs:
        raise UserError(
            f"{plan.repo_id} ({plan.kind.repo_type}) at revision {plan.revision} already holds a different "
            f"{plan.kind.name} ({len(differs)} file(s) differ, e.g. {sorted(differs)[0]}); pass --revision NEW_BRANCH "
            "to publish beside it, --create-pr to propose it, or --force to replace it")


def _same(entry: RepoFile, addition: CommitOperationAdd) -> bool:
    """Whether the remote file holds the bytes the push would upload."""
    if entry.lfs is not None:
        return entry.lfs.sha256 == addition.upload_info.sha256.hex()  # hashed once, reused by the upload
    with addition.as_file() as handle:
        return entry.blob_id == git_hash(handle.read())


def _causes(error: BaseException | None):
    while error is not None:  # upload errors arrive wrapped (RuntimeError from the LFS transfer)
        yield error
        error = error.__cause__


def _is_transient(error: BaseException) -> bool:
    """Connection trouble, 408, 429 and 5xx are worth another try; the Hub's other answers are
    not, nor is a timeout: the request already waited --timeout seconds (and a commit that timed
    out may have landed)."""
    for cause in _causes(error):
        if isinstance(cause, httpx2.TimeoutException):
            return False
        if isinstance(cause, HfHubHTTPError) and cause.response is not None:
            return retried_status(cause.response.status_code)
    return any(isinstance(cause, httpx2.TransportError) for cause in _causes(error))


def _log_retry(state) -> None:
    error = state.outcome.exception()
    status = getattr(getattr(error, "response", None), "status_code", None)
    log.warning("the Hub did not answer (%s); retrying in %.1fs (attempt %d of at most %d)",
                status or type(error).__name__, state.next_action.sleep, state.attempt_number + 1, ATTEMPTS)


def _call(fn, *args, **kwargs):
    retrying = Retrying(retry=retry_if_exception(_is_transient),
                        stop=stop_after_attempt(ATTEMPTS) | stop_after_delay(RETRY_WINDOW),
                        wait=wait_exponential(multiplier=0.5, max=8), before_sleep=_log_retry, reraise=True)
    return retrying(fn, *args, **kwargs)


def _explain(error: Exception, plan: Plan, timeout: float) -> Exception:
    """One line for a failure the user can act on; anything else is a bug and keeps its traceback."""
    where = f"{plan.repo_id} ({plan.kind.repo_type})"
    nothing = "nothing was published"
    causes = list(_causes(error))
    cause = next((c for c in causes if isinstance(c, (UserError, httpx2.TransportError, HfHubHTTPError,
                                                      json.JSONDecodeError, OfflineModeIsEnabled))), error)
    if isinstance(cause, NotTheHub):
        return UserError(f"{cause}; {nothing}")
    if isinstance(cause, UserError):
        return cause
    if isinstance(cause, json.JSONDecodeError):
        return UserError(f"{NotTheHub(f'an answer that is not JSON: {cause}')}; {nothing}")
    if isinstance(cause, OfflineModeIsEnabled):
        return UserError("HF_HUB_OFFLINE is set; unset it to push to the Hub")
    timed_out = next((c for c in causes if isinstance(c, httpx2.TimeoutException)), None)
    if timed_out is not None:
        return UserError(f"the Hub at {constants.ENDPOINT} did not answer within {timeout:g} s "
                         f"({type(timed_out).__name__}); {nothing}; check the network or HF_ENDPOINT, or allow more "
                         "time with --timeout")
    if isinstance(cause, httpx2.TransportError):
        reason = next(c for c in reversed(causes) if isinstance(c, httpx2.TransportError))
        return UserError(f"cannot reach the Hub at {constants.ENDPOINT} ({type(reason).__name__}; tried up to "
                         f"{ATTEMPTS} times); {nothing}; check the network or HF_ENDPOINT and run the command again")
    if not isinstance(cause, HfHubHTTPError) or cause.response is None:
        return error
    status = cause.response.status_code
    if isinstance(cause, RevisionNotFoundError):
        return UserError(f"revision {plan.revision} of {where} was not found; {nothing}")
    if status == 401:
        return UserError(f"the Hub rejected the token (401 Unauthorized) for {where}; {nothing}; set HF_TOKEN to a "
                         "valid token with write access or run `hf auth login`")
    if status == 403:
        return UserError(f"the token may not write to {where} (403 Forbidden); {nothing}; use a token with write "
                         f"access to the '{plan.repo_id.split('/')[0]}' namespace")
    if status == 404:
        return UserError(f"{where} was not found or is not visible to this token (404); {nothing}; check --repo-id and "
                         "the token's permissions")
    if status == 412:
        return UserError(f"{where} at {plan.revision} changed while pushing (someone else pushed); {nothing}; run the "
                         "command again to check the new content")
    if retried_status(status):
        return UserError(f"the Hub kept failing ({status}; tried up to {ATTEMPTS} times); {nothing}; try again later")
    message = cause.server_message or str(cause).strip().splitlines()[0]
    return UserError(f"the Hub refused the push to {where} ({status}): {message}; {nothing}")
