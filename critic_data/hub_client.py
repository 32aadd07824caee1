"""What every command that talks to the Hub shares: the names it takes (repo ids and revisions,
checked the same way by build, train, eval, inspect and push before any request is sent; a
dataset or model argument that is no local path, asked of the Hub once by train, eval and inspect) and the
HTTP client huggingface_hub sends through (timeouts, one line for an answer that is not the Hub's).
A leaf: it imports nothing of critic-data's but UserError.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import httpx2
from huggingface_hub import constants, set_client_factory
from huggingface_hub.utils import hf_raise_for_status
from huggingface_hub.utils._http import hf_request_event_hook  # the Hub client's own request hook (private)

from critic_data import UserError


def is_repo_id(name: str) -> bool:
    """Whether `name` is OWNER/NAME as the Hub accepts it (huggingface_hub's own rules)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if name.count("/") != 1:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def check_hub_repo(name: str, given: str, repo_type: str = "dataset") -> None:
    """Refuse, in one line, a dataset (or model) argument that is no local path and only reads as a
    Hub id: a mistyped path looks like OWNER/NAME too (`ou/run1` for `out/run1`), and sent to the
    Hub as it is it would end in retries and a message about the Hub, not about the folder. `given`
    is how the command line wrote it (`--input ou/run1`).

    One request (`repo_info`, no retry, bounded by HF_HUB_ETAG_TIMEOUT): a repo the Hub has passes;
    one it says it has not is refused. A Hub that cannot be asked (no network) refuses the name,
    saying how to get the repo, unless the Hub cache holds a copy of it, which the caller's loader
    may use: huggingface_hub's own loaders would retry every file for minutes first. With
    HF_HUB_OFFLINE nothing is asked: the caller's loader looks in its own caches, without network."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError
    from huggingface_hub.file_download import repo_folder_name

    if constants.HF_HUB_OFFLINE:
        return
    missing = f"{given}: no such folder, and"
    try:
        HfApi().repo_info(name, repo_type=repo_type, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except RepositoryNotFoundError:
        raise UserError(f"{missing} the Hub ({constants.ENDPOINT}) has no {repo_type} {name} (or it is private and "
                        "your token cannot read it); check the path") from None
    except (httpx2.HTTPError, OSError, ValueError) as error:  # unreachable, timed out, refused, not JSON
        if (Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=name, repo_type=repo_type)).is_dir():
            return
        download = shlex.join(["hf", "download", name, *(["--repo-type", repo_type] if repo_type != "model" else [])])
        raise UserError(f"{missing} the Hub ({constants.ENDPOINT}) could not be asked for a {repo_type} {name} "
                        f"({type(error).__name__}) and none is in the Hub cache, so it cannot be fetched; where there "
                        f"is network, run `{download} --local-dir DIR` and pass DIR (or download it into the Hub cache "
                        "and run with HF_HUB_OFFLINE=1), or check the path and HF_ENDPOINT") from None


# A git branch name, in a subset every Hub accepts: parts of letters, digits and . _ - +, none
# starting with "." or "-" (checked with the "..", ".lock" and trailing "." rules of git).
_REF_NAME = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9._+-]*(/[A-Za-z0-9_+][A-Za-z0-9._+-]*)*")


def check_revision(revision: str, *, branch: bool) -> str:
    """`revision`, if it is a name git and the Hub take: a branch to push to (`branch`), or a
    branch, tag, commit or refs/... name to read from. Raises UserError."""
    what = "branch name" if branch else "revision (branch, tag, commit or refs/pr/N)"
    if (not _REF_NAME.fullmatch(revision) or ".." in revision or revision.endswith(".")
            or any(part.endswith(".lock") for part in revision.split("/"))):
        raise UserError(f"--revision {revision!r} is not a {what}; write letters, digits and . _ - + (parts separated "
                        "by /, none starting with . or -, no ..)")
    if branch and revision.startswith("refs/"):
        raise UserError(f"--revision {revision} names a Hub reference, not a branch; pass a branch name, or "
                        "--create-pr to propose the change in a pull request")
    return revision


def retried_status(status: int) -> bool:
    return status in (408, 429) or status >= 500


class NotTheHub(UserError):
    """HF_ENDPOINT answered, but not as the Hub does: a proxy's login page, garbage."""

    def __init__(self, what: str):
        super().__init__(f"{constants.ENDPOINT} did not answer like the Hugging Face Hub ({what}); check HF_ENDPOINT, "
                         "or the proxy between this machine and the Hub")


class _GaveUp(httpx2.TransportError):
    """A failed request, raised as a type huggingface_hub's `http_backoff` does not catch (it
    retries TimeoutException, NetworkError and RemoteProtocolError); the original is its cause."""


class _Client(httpx2.Client):
    """huggingface_hub's HTTP client in this process (see `use_timeout`).

    - Requests get `timeout` seconds to connect and for each read or write. huggingface_hub's
      own client has no timeout, and most of its calls set none: a server that accepts the
      connection and never answers would hold them forever.
    - An HTML page where the Hub's API answers JSON (a proxy's login page) ends in one line.
    - With `owned`, the caller owns waiting and retrying: no request waits longer than `timeout`,
      and a failed one (transport error, or a status huggingface_hub retries) leaves
      huggingface_hub's own retry loops at once. `http_backoff` would try up to 5 more times,
      waiting up to 8 s (or as long as a Retry-After header asks) in between. Without it, the
      timeouts huggingface_hub sets (HF_HUB_ETAG_TIMEOUT, HF_HUB_DOWNLOAD_TIMEOUT) and its
      retries stay, and `timeout` fills in where it sets none.
    """

    def __init__(self, timeout: float, owned: bool):
        super().__init__(event_hooks={"request": [hf_request_event_hook]}, follow_redirects=True, timeout=None)
        self._request_timeout, self._owned = httpx2.Timeout(timeout).as_dict(), owned  # (httpx2 uses `_timeout`)

    def send(self, request: httpx2.Request, **kwargs) -> httpx2.Response:
        theirs = request.extensions.get("timeout", {})
        if self._owned:  # never longer than `timeout`, shorter where huggingface_hub asks for less
            request.extensions["timeout"] = {key: min(ours, theirs.get(key) or ours)
                                             for key, ours in self._request_timeout.items()}
        elif not any(theirs.values()):
            request.extensions["timeout"] = self._request_timeout
        try:
            response = super().send(request, **kwargs)
        except httpx2.TransportError as error:
            if self._owned:
                raise _GaveUp(f"{type(error).__name__}: {error}", request=request) from error
            raise
        if (response.is_success and str(request.url).startswith(constants.ENDPOINT + "/api/")
                and response.headers.get("content-type", "").startswith("text/html")):
            response.close()
            raise NotTheHub(f"an HTML page for {request.method} {request.url.path}")
        if self._owned and retried_status(response.status_code):
            response.read()
            hf_raise_for_status(response)
        return response


def use_timeout(seconds: float, *, owned: bool) -> None:
    """Send huggingface_hub's requests in this process through `_Client`."""
    set_client_factory(lambda: _Client(seconds, owned))
