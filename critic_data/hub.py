"""Publishing to the Hugging Face Hub: `critic-data push`.

This module owns what a push sends and the rules that keep it safe:
- What: a folder is told apart by its content. A critic-data build (build.json +
  data/*.parquet) goes to a dataset repo as its data shards, build.json and a README.md card
  re-rendered from build.json with the real repo id (rejects.jsonl only when asked). A
  trained checkpoint (config.json + weights) goes to a model repo as it is, model card
  included, minus trainer leftovers.
- How: one commit (`HfApi.create_commit`), so a failure at any point publishes nothing. Files
  of the same kind that the new content does not contain (old shards, old weights) are deleted
  in that same commit, so the revision holds exactly the pushed content.
- Safety: a revision whose payload (data shards, or weights) differs from the folder's is not
  replaced unless `--force`; `--revision NEW` publishes beside it on a new branch and
  `--create-pr` only proposes the change. The commit names the revision's head it was checked
  against (`parent_commit`), so a push that lands in between makes this one fail instead of
  being overwritten.
- Failures: connection errors, 429 and 5xx are retried with exponential backoff (tenacity),
  a bounded number of times; anything else stops at once. Either way the user gets one line
  saying what to do (`UserError`). The token comes from `HF_TOKEN` or the saved login and is
  handed to huggingface_hub only; it is never printed, logged or written.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants, get_token
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled, RevisionNotFoundError
from huggingface_hub.utils import filter_repo_objects, validate_repo_id
from huggingface_hub.utils.sha import git_hash
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from critic_data import UserError, __version__

log = logging.getLogger(__name__)

ATTEMPTS = 4  # per Hub call; waits of 0.5, 1, 2 s in between (each capped at 8 s)


@dataclass(frozen=True)
class Kind:
    """What a folder is, and which of its files a push publishes, compares and replaces."""

    name: str
    repo_type: str
    payload: tuple[str, ...]  # the files that make the content: compared before replacing a revision
    replaces: tuple[str, ...]  # remote files a push owns: deleted when the folder no longer has them


DATASET = Kind("dataset", "dataset", payload=("data/*",), replaces=("data/*", "rejects.jsonl"))
MODEL = Kind("checkpoint", "model",
             payload=("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model*.bin.index.json"),
             replaces=("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model*.bin.index.json"))

# Trainer leftovers in an output folder: intermediate checkpoints, optimizer state, logs, caches.
CHECKPOINT_IGNORE = [".*", "*/.*", "*__pycache__*", "checkpoint-*", "runs/*", "optimizer.pt", "scheduler.pt",
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
        raise UserError(f"{folder} is not a folder; pass a dataset folder made by `critic-data build` or a trained checkpoint")
    kind = _detect(folder)
    repo_id = _check_repo_id(repo_id, kind, folder)
    plan = Plan(folder, kind, repo_id, revision or constants.DEFAULT_REVISION, files={})
    if kind is DATASET:
        _plan_dataset(plan, include_rejects)
    else:
        _plan_checkpoint(plan)
    return plan


def _detect(folder: Path) -> Kind:
    if (folder / "build.json").is_file() and any((folder / "data").glob("*.parquet")):
        return DATASET
    weights = [*folder.glob("*.safetensors"), *folder.glob("pytorch_model*.bin")]
    if (folder / "config.json").is_file() and weights:
        return MODEL
    raise UserError(f"{folder} is neither a critic-data dataset (build.json + data/*.parquet) nor a checkpoint "
                    "(config.json + *.safetensors); pass the --out folder of a build or the output folder of a training run")


def _check_repo_id(repo_id: str, kind: Kind, folder: Path) -> str:
    # "datasets/OWNER/NAME" and "models/OWNER/NAME" are how Hub URLs name a repo's type: accept the
    # right one, and stop on the wrong one rather than publishing into a repo of another type.
    given = repo_id
    prefix, _, rest = repo_id.partition("/")
    if prefix in ("datasets", "models", "spaces") and rest.count("/") == 1:
        if prefix != f"{kind.repo_type}s":
            raise UserError(f"{folder} is a {kind.name}, which goes to a {kind.repo_type} repo, but --repo-id {repo_id} "
                            f"names a {prefix[:-1]} repo; pass --repo-id {rest}")
        repo_id = rest
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        repo_id = ""
    if repo_id.count("/") != 1:
        raise UserError(f"--repo-id {given!r} is not a repo id; write OWNER/NAME (letters, digits, '-', '_', '.')")
    return repo_id


def _plan_dataset(plan: Plan, include_rejects: bool) -> None:
    from critic_data.cards import render_dataset_card

    folder = plan.folder
    try:
        manifest = json.loads((folder / "build.json").read_text(encoding="utf-8"))
        listed = [path for split in manifest["splits"].values() for path in split["files"]]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise UserError(f"{folder / 'build.json'} is not a critic-data manifest ({error}); rebuild the dataset") from None
    # Publish exactly the build: a shard missing from the folder, or a stray one the card's
    # `data/{split}-*` patterns would load, means the folder is not what build.json describes.
    found = sorted(str(p.relative_to(folder)) for p in (folder / "data").rglob("*") if p.is_file())
    if sorted(listed) != found:
        missing, extra = sorted(set(listed) - set(found)), sorted(set(found) - set(listed))
        raise UserError(f"{folder} does not match its build.json (missing: {', '.join(missing) or 'none'}; "
                        f"not listed: {', '.join(extra) or 'none'}); rebuild it with critic-data build --overwrite")
    plan.files = {path: folder / path for path in listed}
    plan.files["build.json"] = folder / "build.json"
    plan.files["README.md"] = render_dataset_card(manifest, repo_id=plan.repo_id).encode("utf-8")
    if (folder / "rejects.jsonl").is_file():
        if include_rejects:
            plan.files["rejects.jsonl"] = folder / "rejects.jsonl"
        else:
            plan.left_out.append("rejects.jsonl")
    rows = {name: split["rows"] for name, split in manifest["splits"].items()}
    plan.summary = f"{sum(rows.values())} rows (" + ", ".join(f"{n} {r}" for n, r in rows.items()) + ")"


def _plan_checkpoint(plan: Plan) -> None:
    every = sorted(str(p.relative_to(plan.folder)) for p in plan.folder.rglob("*") if p.is_file())
    kept = list(filter_repo_objects(every, ignore_patterns=CHECKPOINT_IGNORE))
    plan.files = {path: plan.folder / path for path in kept}
    plan.left_out = sorted(set(every) - set(kept))
    if "README.md" not in plan.files:
        log.warning("%s has no README.md: the model repo will have no model card", plan.folder)
    plan.summary = f"{len(kept)} files"


def push(plan: Plan, *, private: bool = False, create_pr: bool = False, commit_message: str | None = None,
         force: bool = False) -> Outcome:
    """Publish `plan` in one commit. Raises UserError with one line for anything the user can fix."""
    token = get_token()
    if not token:
        raise UserError("no Hugging Face token: set HF_TOKEN to a token with write access, or run `hf auth login`")
    api = HfApi(token=token)
    try:
        return _push(api, plan, private, create_pr, commit_message, force)
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - only errors the user can act on become one line
        raise _explain(error, plan) from None


def _push(api: HfApi, plan: Plan, private: bool, create_pr: bool, commit_message: str | None, force: bool) -> Outcome:
    repo_type, revision = plan.kind.repo_type, plan.revision
    # private=None leaves the visibility to the namespace's default when --private is not given.
    _call(api.create_repo, plan.repo_id, repo_type=repo_type, private=True if private else None, exist_ok=True)
    branches = {ref.name: ref.target_commit for ref in _call(api.list_repo_refs, plan.repo_id, repo_type=repo_type).branches}
    created_branch = revision not in branches
    if created_branch:
        # A new branch starts from main; what it inherits is replaced below, nothing is published over.
        _call(api.create_branch, plan.repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
        head = _call(api.repo_info, plan.repo_id, repo_type=repo_type, revision=revision).sha
    else:
        head = branches[revision]
    remote = {entry.path: entry for entry in _call(lambda: list(api.list_repo_tree(
        plan.repo_id, repo_type=repo_type, revision=head, recursive=True))) if isinstance(entry, RepoFile)}

    additions = {path: CommitOperationAdd(path_in_repo=path, path_or_fileobj=source) for path, source in plan.files.items()}
    if not (created_branch or create_pr or force):
        _refuse_if_different(plan, remote, additions)
    stale = [path for path in filter_repo_objects(sorted(remote), allow_patterns=list(plan.kind.replaces))
             if path not in plan.files]
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
    for path in set(published) & set(local):
        entry, addition = remote[path], additions[path]
        if entry.lfs is not None:
            same = entry.lfs.sha256 == addition.upload_info.sha256.hex()  # hashed once, reused by the upload
        else:
            with addition.as_file() as handle:
                same = entry.blob_id == git_hash(handle.read())
        if not same:
            differs.append(path)
    if differs:
        raise UserError(
            f"{plan.repo_id} ({plan.kind.repo_type}) at revision {plan.revision} already holds a different {plan.kind.name} "
            f"({len(differs)} file(s) differ, e.g. {sorted(differs)[0]}); pass --revision NEW_BRANCH to publish beside it, "
            "--create-pr to propose it, or --force to replace it")


def _is_transient(error: BaseException) -> bool:
    """Connection trouble, 429 and 5xx are worth another try; the Hub's other answers are not."""
    while error is not None:  # upload errors arrive wrapped (RuntimeError from the LFS transfer)
        if isinstance(error, httpx2.TransportError):
            return True
        if isinstance(error, HfHubHTTPError) and error.response is not None:
            return error.response.status_code == 429 or error.response.status_code >= 500
        error = error.__cause__
    return False


def _log_retry(state) -> None:
    error = state.outcome.exception()
    status = getattr(getattr(error, "response", None), "status_code", None)
    log.warning("the Hub did not answer (%s); retrying in %.1fs (attempt %d of %d)",
                status or type(error).__name__, state.next_action.sleep, state.attempt_number + 1, ATTEMPTS)


def _call(fn, *args, **kwargs):
    retrying = Retrying(retry=retry_if_exception(_is_transient), stop=stop_after_attempt(ATTEMPTS),
                        wait=wait_exponential(multiplier=0.5, max=8), before_sleep=_log_retry, reraise=True)
    return retrying(fn, *args, **kwargs)


def _explain(error: Exception, plan: Plan) -> Exception:
    """One line for a failure the user can act on; anything else is a bug and keeps its traceback."""
    where = f"{plan.repo_id} ({plan.kind.repo_type})"
    nothing = "nothing was published"
    cause = error
    while cause is not None and not isinstance(cause, (httpx2.TransportError, HfHubHTTPError)):
        cause = cause.__cause__
    if isinstance(error, OfflineModeIsEnabled):
        return UserError("HF_HUB_OFFLINE is set; unset it to push to the Hub")
    if isinstance(cause, httpx2.TransportError):
        return UserError(f"cannot reach the Hub at {constants.ENDPOINT} ({type(cause).__name__}, {ATTEMPTS} attempts); "
                         f"{nothing}; check the network or HF_ENDPOINT and run the command again")
    if not isinstance(cause, HfHubHTTPError) or cause.response is None:
        return error
    status = cause.response.status_code
    if isinstance(cause, RevisionNotFoundError):
        return UserError(f"revision {plan.revision} of {where} was not found; {nothing}")
    if status == 401:
        return UserError(f"the Hub rejected the token (401 Unauthorized) for {where}; {nothing}; set HF_TOKEN to a valid "
                         "token with write access or run `hf auth login`")
    if status == 403:
        return UserError(f"the token may not write to {where} (403 Forbidden); {nothing}; use a token with write access "
                         f"to the '{plan.repo_id.split('/')[0]}' namespace")
    if status == 404:
        return UserError(f"{where} was not found or is not visible to this token (404); {nothing}; check --repo-id and "
                         "the token's permissions")
    if status == 412:
        return UserError(f"{where} at {plan.revision} changed while pushing (someone else pushed); {nothing}; run the "
                         "command again to check the new content")
    if status == 429 or status >= 500:
        return UserError(f"the Hub kept failing ({status}) after {ATTEMPTS} attempts; {nothing}; try again later")
    message = cause.server_message or str(cause).strip().splitlines()[0]
    return UserError(f"the Hub refused the push to {where} ({status}): {message}; {nothing}")
