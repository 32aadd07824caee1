"""Where a source's files come from: a local snapshot folder, or the Hub.

Local snapshots are laid out as `hf download REPO --repo-type dataset --local-dir DIR`
leaves them. The manifest records each input: a Hub repo id at its resolved commit, or a
local folder with a content fingerprint of every file read.

build.json and the card are published with the dataset, so they never name a local path as
it is on this machine (it holds the user's name and folders): a local path is recorded as
`published_path` writes it, and so is each path in the recorded command line.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass
from pathlib import Path

from critic_data import UserError
from critic_data.files import fingerprint, published_path


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
    return Snapshot(path, {"kind": "local", "folder": published_path(path), "files": records,
                           "fingerprint_method": "blake2b(size, first MiB, last MiB)"})


def published_command(argv: list[str], path_values: list[Path]) -> list[str]:
    """`argv` with each of `path_values` (the paths the options were given: --out DIR, --input DIR
    or SOURCE=DIR, --image-root DIR, in any spelling Path reads the same) as `published_path`
    writes it; every other word as typed."""
    paths = set(path_values)
    command = []
    for word in argv:
        flag, equals, value = word.partition("=")  # --out=DIR, SOURCE=DIR
        if Path(word) in paths:
            command.append(published_path(word))
        elif equals and value and Path(value) in paths:
            command.append(f"{flag}={published_path(value)}")
        else:
            command.append(word)
    return command


def fetch_from_hub(repo_id: str, revision: str | None, allow_patterns: list[str]) -> Path:
    """Download (or reuse from the cache) the files of a dataset repo that match `allow_patterns`;
    return the folder. A revision that holds none of them is an error, not an empty folder.

    Every request has a timeout (HF_HUB_DOWNLOAD_TIMEOUT, 10 s unless set, where huggingface_hub
    sets none), and huggingface_hub's own retries are the only ones: a Hub that does not answer
    ends the build in one line, or falls back to a snapshot already in the cache.
    """
    import json

    import httpx2
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import filter_repo_objects

    from critic_data.hub_client import NotTheHub, use_timeout

    use_timeout(constants.HF_HUB_DOWNLOAD_TIMEOUT, owned=False)
    logging.getLogger("huggingface_hub._snapshot_download").addFilter(_unless_no_files_matched)  # added once
    try:
        folder = Path(snapshot_download(repo_id, repo_type="dataset", revision=revision, allow_patterns=allow_patterns))
    except RevisionNotFoundError:
        raise UserError(f"revision {revision} of {repo_id} does not exist on the Hub; pass a branch, tag or commit "
                        "of that repo to --revision") from None
    except HfHubHTTPError as error:
        raise UserError(f"the Hub refused {repo_id}: {str(error).splitlines()[0]}") from None
    except json.JSONDecodeError as error:
        raise NotTheHub(f"an answer that is not JSON: {error}") from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, OSError, httpx2.TransportError) as error:
        reason = type(error.__cause__ or error).__name__  # the network error behind "not in the cache"
        # what the build fetches, as a command to run where there is network
        download = shlex.join(["hf", "download", repo_id, "--repo-type", "dataset",
                               *(["--revision", revision] if revision else []),
                               *(word for pattern in allow_patterns for word in ("--include", pattern)),
                               "--local-dir", "DIR"])
        raise UserError(f"cannot fetch {repo_id} from the Hugging Face Hub ({reason}) and no complete copy is in the "
                        f"cache; download it where there is network ({download}) and pass --input DIR") from None
    fetched = [str(path.relative_to(folder)) for path in folder.rglob("*")] if folder.is_dir() else []
    if not any(filter_repo_objects(fetched, allow_patterns=allow_patterns)):
        raise UserError(f"{repo_id} at revision {revision or 'main'} holds none of the files this source reads "
                        f"({', '.join(allow_patterns)}); pass a --revision that holds them"
                        + (", or leave --revision out" if revision else ""))
    return folder


def _unless_no_files_matched(record: logging.LogRecord) -> bool:
    """huggingface_hub warns of a revision that holds none of the files asked for, before the build
    says so in its own one line: its warning would be a second."""
    return not record.getMessage().startswith("No files matched")


def hub_origin(repo_id: str, folder: Path, revision: str | None) -> dict:
    """The cache folder of a snapshot is named after the commit it holds."""
    return {"kind": "hub", "repo_id": repo_id, "revision": revision or "main", "commit": folder.name}
