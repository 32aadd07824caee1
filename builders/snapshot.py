"""Where a source's files come from: a local snapshot folder, or the Hub.

Local snapshots are laid out as `hf download REPO --repo-type dataset --local-dir DIR`
leaves them. The manifest records each input: a Hub repo id at its resolved commit, or a
local path with a content fingerprint of every file read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from critic_data import UserError
from critic_data.files import fingerprint

@dataclass
class Snapshot:
    path: Path
    origin: dict  # what the manifest records about this input


def local_snapshot(path: Path, files: list[Path]) -> Snapshot:
    """A local snapshot whose origin lists the given files with size and fingerprint."""
    records = [
        {"path": str(f.relative_to(path)), "size": f.stat().st_size, "fingerprint": fingerprint(f)}
        for f in sorted(files)
    ]
    return Snapshot(path, {"kind": "local", "path": str(path.resolve()), "files": records,
                           "fingerprint_method": "blake2b(size, first MiB, last MiB)"})


def fetch_from_hub(repo_id: str, revision: str | None, allow_patterns: list[str]) -> Path:
    """Download (or reuse from the cache) the files of a dataset repo; return the folder.

    Every request has a timeout (HF_HUB_DOWNLOAD_TIMEOUT, 10 s unless set, where huggingface_hub
    sets none), and huggingface_hub's own retries are the only ones: a Hub that does not answer
    ends the build in one line, or falls back to a snapshot already in the cache.
    """
    import json

    import httpx2
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled, RevisionNotFoundError

    from critic_data.hub_client import NotTheHub, use_timeout

    use_timeout(constants.HF_HUB_DOWNLOAD_TIMEOUT, owned=False)
    try:
        return Path(
            snapshot_download(repo_id, repo_type="dataset", revision=revision, allow_patterns=allow_patterns)
        )
    except RevisionNotFoundError:
        raise UserError(f"revision {revision} of {repo_id} does not exist on the Hub; pass a branch, tag or commit "
                        "of that repo to --revision") from None
    except HfHubHTTPError as error:
        raise UserError(f"the Hub refused {repo_id}: {str(error).splitlines()[0]}") from None
    except json.JSONDecodeError as error:
        raise NotTheHub(f"an answer that is not JSON: {error}") from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, OSError, httpx2.TransportError) as error:
        reason = type(error.__cause__ or error).__name__  # the network error behind "not in the cache"
        raise UserError(
            f"cannot fetch {repo_id} from the Hugging Face Hub ({reason}) and no copy is in the cache; download it "
            f"where there is network (hf download {repo_id} --repo-type dataset --local-dir DIR) and pass --input DIR"
        ) from None


def hub_origin(repo_id: str, folder: Path, revision: str | None) -> dict:
    """The cache folder of a snapshot is named after the commit it holds."""
    return {"kind": "hub", "repo_id": repo_id, "revision": revision or "main", "commit": folder.name}
