"""A small local Hugging Face Hub for the tests: real HTTP on 127.0.0.1, the part of the Hub
protocol that huggingface_hub (create_repo, create_branch, create_commit with LFS uploads,
list_repo_refs/tree/commits, hf_hub_download, snapshot_download) and `datasets.load_dataset` use.

Repos live in memory as git-like commits (each a full path -> blob map); blob bytes live in a
temp folder keyed by sha256. Files matching the repo's LFS patterns (or binary, or large) are
LFS files, served with the headers the clients expect (`X-Linked-Etag`, `X-Linked-Size`).

Test hooks:
- `tokens`: token -> "write" | "read". Writes need a write token (missing or unknown token: 401;
  read token: 403); private repos need any valid token to be seen.
- `fail(pattern, status, times)`: the next `times` requests whose "METHOD /path" matches the
  regex answer `status` (None: every matching request, until `clear_failures()`).
- `answer(pattern, body, content_type, status, times)`: the same, answering `body` instead: a proxy's
  login page, or garbage, where the Hub would answer JSON.
- `put_files(repo_type, repo_id, files, branch=...)`: commit files straight into a public repo
  (what a download test reads), returning the commit id. A branch that does not exist yet starts
  with no files: `refs/convert/parquet`, the Hub's parquet conversion, is served as the Hub serves
  it (a revision URL-encoded as `refs%2Fconvert%2Fparquet`, listed among the refs' `converts`).
- `requests`: every request seen, as (method, path, status).

Run by hand with `python -m tests.hub_server [PORT]` (token `hf_test_write`).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import os
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_PATTERNS = ("*.parquet", "*.arrow", "*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.png", "*.jpg",
                "*.jpeg", "*.zip", "*.gz", "*.npy")
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS).encode()
LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub stores anything this large through LFS
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}


def client_env(tmp_path: Path, endpoint: str, token: str | None = None, **extra: str) -> dict:
    """The environment of a CLI run against the Hub at `endpoint`: none of this machine's HF_
    settings, caches under `tmp_path/hf-home`, no telemetry, no progress bars, no Xet."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    home = tmp_path / "hf-home"
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(home), HF_HUB_CACHE=str(home / "hub"),
               HF_DATASETS_CACHE=str(home / "datasets"), HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", **extra)
    if token:
        env["HF_TOKEN"] = token
    return env


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class Blob:
    sha256: str
    size: int
    lfs: bool

    @property
    def pointer(self) -> bytes:
        return lfs_pointer(self.sha256, self.size)

    @property
    def oid(self) -> str:
        """The git object id: of the pointer file for LFS files, of the content otherwise."""
        return git_blob_oid(self.pointer) if self.lfs else self.git_oid

    git_oid: str = ""  # content blob id, set for regular files


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    date: str
    files: dict[str, Blob]


@dataclass
class Repo:
    type: str
    id: str
    private: bool
    refs: dict[str, str] = field(default_factory=dict)  # "main", "v2", "refs/pr/1" -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)
    prs: int = 0

    def resolve(self, revision: str) -> Commit | None:
        oid = self.refs.get(revision, revision)
        return self.commits.get(oid)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


class LocalHub:
    """The server's state and its HTTP front; `start()` serves on 127.0.0.1 in a thread."""

    def __init__(self, root: Path, tokens: dict[str, str] | None = None, port: int = 0):
        self.blobs = root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.tokens = dict(tokens or {})
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str, int]] = []
        self._failures: list[list] = []  # [compiled pattern, status, remaining or None]
        self._lock = threading.RLock()
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None

    # -- lifecycle and hooks -------------------------------------------------------------
    def start(self) -> LocalHub:
        # polled every 50 ms, not 0.5 s: stop() waits for the next poll, and the push tests stop a hub each
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail(self, pattern: str, status: int, times: int | None = 1) -> None:
        body = json.dumps({"error": f"injected failure {status}"}).encode()
        self.answer(pattern, body, "application/json", status, times)

    def answer(self, pattern: str, body: bytes, content_type: str = "text/html", status: int = 200,
               times: int | None = None) -> None:
        with self._lock:
            self._failures.append([re.compile(pattern), times, status, body, content_type])

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def injected_failure(self, method: str, path: str) -> tuple[int, bytes, str] | None:
        """(status, body, content type) of the injected answer to this request, if any."""
        with self._lock:
            for rule in self._failures:
                pattern, remaining, *answer = rule
                if pattern.search(f"{method} {path}") and (remaining is None or remaining > 0):
                    if remaining is not None:
                        rule[1] -= 1
                    return tuple(answer)
        return None

    def repo(self, repo_type: str, repo_id: str) -> Repo | None:
        return self.repos.get((repo_type, repo_id))

    # -- auth ----------------------------------------------------------------------------
    def check_write(self, token: str | None, repo_id: str | None = None) -> None:
        role = self.tokens.get(token or "")
        if role is None:
            raise HubError(401, "Invalid credentials in Authorization header" if token else "Unauthorized")
        if role != "write":
            raise HubError(403, f"You don't have the rights to write to {repo_id or 'this namespace'}")

    def visible_repo(self, repo_type: str, repo_id: str, token: str | None) -> Repo:
        repo = self.repo(repo_type, repo_id)
        if repo is None or (repo.private and token not in self.tokens):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def commit_at(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(unquote(revision))
        if commit is None:
            raise HubError(404, f"Invalid rev id: {unquote(revision)}", "RevisionNotFound")
        return commit

    # -- blobs ---------------------------------------------------------------------------
    def store(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.blobs / sha256
        if not path.exists():
            path.write_bytes(data)
        return sha256

    def read(self, blob: Blob) -> bytes:
        return (self.blobs / blob.sha256).read_bytes()

    # -- operations ----------------------------------------------------------------------
    def new_commit(self, repo: Repo, branch: str, parent: Commit | None, files: dict[str, Blob], title: str,
                   message: str = "") -> Commit:
        oid = hashlib.sha1(uuid.uuid4().bytes).hexdigest()
        commit = Commit(oid, parent.oid if parent else None, title, message,
                        time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), files)
        repo.commits[oid] = commit
        repo.refs[branch] = oid
        return commit

    def create_repo(self, body: dict, token: str | None) -> dict:
        repo_type = body.get("type") or "model"
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        self.check_write(token, repo_id)
        url = f"{self.url}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"
        with self._lock:
            if self.repo(repo_type, repo_id):
                raise HubError(409, "You already created this repo", url=url)
            repo = Repo(repo_type, repo_id, private=body.get("visibility") == "private" or bool(body.get("private")))
            attributes = Blob(self.store(GITATTRIBUTES), len(GITATTRIBUTES), False, git_blob_oid(GITATTRIBUTES))
            self.new_commit(repo, "main", None, {".gitattributes": attributes}, "initial commit")
            self.repos[(repo_type, repo_id)] = repo
        return {"url": url, "name": repo_id, "id": repo_id}

    def put_files(self, repo_type: str, repo_id: str, files: dict[str, bytes], title: str = "upload",
                  branch: str = "main") -> str:
        """Commit `files` to `branch` of the public repo `repo_id` (created if missing); return the commit id."""
        with self._lock:
            repo = self.repos.setdefault((repo_type, repo_id), Repo(repo_type, repo_id, private=False))
            head = repo.resolve(branch) if branch in repo.refs else None
            blobs = dict(head.files) if head else {}
            for path, data in files.items():
                lfs = self.is_lfs(path, len(data), data[:1024])
                blobs[path] = Blob(self.store(data), len(data), lfs, "" if lfs else git_blob_oid(data))
            return self.new_commit(repo, branch, head, blobs, title).oid

    def is_lfs(self, path: str, size: int, sample: bytes) -> bool:
        return any(fnmatch.fnmatch(path.rsplit("/", 1)[-1], p) for p in LFS_PATTERNS) or size >= LFS_THRESHOLD \
            or b"\x00" in sample

    def commit(self, repo: Repo, revision: str, lines: list[dict], create_pr: bool, token: str | None) -> dict:
        self.check_write(token, repo.id)
        header = next(line["value"] for line in lines if line["key"] == "header")
        with self._lock:
            base = self.commit_at(repo, revision)
            parent_oid = header.get("parentCommit")
            if parent_oid and not create_pr and not base.oid.startswith(parent_oid):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            if parent_oid and create_pr:
                base = self.commit_at(repo, parent_oid)
            files = dict(base.files)
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "file":
                    data = base64.b64decode(value["content"])
                    files[value["path"]] = Blob(self.store(data), len(data), False, git_blob_oid(data))
                elif key == "lfsFile":
                    if not (self.blobs / value["oid"]).exists():
                        raise HubError(400, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                    size = (self.blobs / value["oid"]).stat().st_size
                    files[value["path"]] = Blob(value["oid"], size, True)
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    for path in [p for p in files if p.startswith(prefix)]:
                        del files[path]
            if create_pr:
                repo.prs += 1
                branch = f"refs/pr/{repo.prs}"
            else:
                branch = unquote(revision)
                if branch not in repo.refs:
                    raise HubError(400, f"Cannot commit to {branch}: not a branch")
            commit = self.new_commit(repo, branch, base, files, header["summary"], header.get("description", ""))
        prefix = "" if repo.type == "model" else f"{repo.type}s/"
        answer = {"commitUrl": f"{self.url}/{prefix}{repo.id}/commit/{commit.oid}", "commitOid": commit.oid,
                  "success": True}
        if create_pr:
            answer["pullRequestUrl"] = f"{self.url}/{prefix}{repo.id}/discussions/{repo.prs}"
        return answer


def tree_entry(path: str, blob: Blob) -> dict:
    entry = {"type": "file", "oid": blob.oid, "size": blob.size, "path": path}
    if blob.lfs:
        entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": len(blob.pointer)}
    return entry


def folder_entries(files: dict[str, Blob], folder: str, recursive: bool) -> list[dict]:
    """Tree listing of `folder` ("" for the root): files, and the folders on the way."""
    prefix = folder.strip("/") + "/" if folder.strip("/") else ""
    entries: dict[str, dict] = {}
    for path in sorted(files):
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix):].split("/")
        for depth in range(1, len(rest)):
            sub = prefix + "/".join(rest[:depth])
            if depth == 1 or recursive:
                entries.setdefault(sub,
                                   {"type": "directory", "oid": git_blob_oid(sub.encode()), "size": 0, "path": sub})
            if not recursive:
                break
        if len(rest) == 1 or recursive:
            entries[path] = tree_entry(path, files[path])
    return list(entries.values())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: LocalHub

    def log_message(self, format, *args):  # the tests read `hub.requests` instead
        pass

    # -- plumbing ------------------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[7:] if auth.startswith("Bearer ") else None

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.hub.requests.append((self.command, self.path, status))

    def _json(self, status: int, value, headers: dict | None = None):
        self._send(status, json.dumps(value).encode(), headers)

    def _dispatch(self):
        path = urlsplit(self.path).path
        body = self._body() if self.command in ("POST", "PUT") else b""
        injected = self.hub.injected_failure(self.command, path)
        if injected is not None:
            status, data, content_type = injected
            return self._send(status, data, {"Retry-After": "0"} if status == 429 else None, content_type=content_type)
        for method, pattern, handler in ROUTES:
            match = re.fullmatch(pattern, path)
            if method == self.command and match:
                try:
                    return handler(self, body, *match.groups())
                except HubError as error:
                    headers = {"X-Error-Message": error.message}
                    if error.code:
                        headers["X-Error-Code"] = error.code
                    return self._json(error.status, {"error": error.message, **error.extra}, headers)
        self._json(404, {"error": f"no route for {self.command} {path}"})

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def _query(self) -> dict[str, str]:
        return {key: values[-1] for key, values in parse_qs(urlsplit(self.path).query).items()}

    # -- endpoints -----------------------------------------------------------------------
    def create_repo(self, body):
        self._json(200, self.hub.create_repo(json.loads(body), self._token()))

    def validate_yaml(self, body):
        content = json.loads(body).get("content", "")
        match = re.match(r"^---\n(.*?)\n---", content, re.S)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as error:
            raise HubError(400, f"Invalid YAML in README.md metadata: {error}") from None
        if not isinstance(metadata, dict):
            raise HubError(400, "README.md metadata must be a mapping")
        self._json(200, {"errors": [], "warnings": []})

    def repo_info(self, _body, kind, repo_id, revision=None):
        repo = self.hub.visible_repo(REPO_TYPES[kind], repo_id, self._token())
        commit = self.hub.commit_at(repo, revision or "main")
        card = {}
        if "README.md" in commit.files:
            match = re.match(r"^---\n(.*?)\n---", self.hub.read(commit.files["README.md"]).decode(), re.S)
            card = yaml.safe_load(match.group(1)) if match else {}
        self._json(200, {
            "_id": repo_id, "id": repo_id, "author": repo_id.split("/")[0], "sha": commit.oid,
            "lastModified": commit.date, "private": repo.private, "gated": False, "disabled": False,
            "downloads": 0, "likes": 0, "tags": [], "cardData": card,
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        })

    def tree(self, _body, kind, repo_id, revision, folder=""):
        repo = self.hub.visible_repo(REPO_TYPES[kind], repo_id, self._token())
        commit = self.hub.commit_at(repo, revision)
        folder = unquote(folder or "").strip("/")
        if folder and folder in commit.files:
            raise HubError(400, f"{folder} is a file, not a folder")
        if folder and not any(p.startswith(folder + "/") for p in commit.files):
            raise HubError(404, f"{folder} does not exist on {revision}", "EntryNotFound")
        self._json(200, folder_entries(commit.files, folder, self._query().get("recursive") in ("1", "true", "True")))

    def paths_info(self, body, kind, repo_id, revision):
        repo = self.hub.visible_repo(REPO_TYPES[kind], repo_id, self._token())
        commit = self.hub.commit_at(repo, revision)
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("application/json"):
            paths = json.loads(body).get("paths", [])
        else:
            paths = parse_qs(body.decode()).get("paths", [])
        answer = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                answer.append(tree_entry(path, commit.files[path]))
            elif any(p.startswith(path + "/") for p in commit.files):
                answer.append({"type": "directory", "oid": git_blob_oid(path.encode()), "size": 0, "path": path})
        self._json(200, answer)

    def preupload(self, body, kind, repo_id, revision):
        repo = self.hub.visible_repo(REPO_TYPES[kind], repo_id, self._token())
        self.hub.check_write(self._token(), repo_id)
        commit = self.hub.commit_at(repo, revision)
        files = []
        for item in json.loads(body)["files"]:
            sample = base64.b64decode(item["sample"])
            lfs = self.hub.is_lfs(item["path"], item["size"], sample)
            remote = commit.files.get(item["path"])
            oid = None if remote is None else (remote.sha256 if remote.lfs else remote.git_oid)
            files.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": oid})
        self._json(200, {"files": files, "commitOid": commit.oid})

    def lfs_batch(self, body, kind, repo_id):
        repo = self.hub.visible_repo(REPO_TYPES[kind or "models"], repo_id, self._token())
        self.hub.check_write(self._token(), repo.id)
        objects = []
        for item in json.loads(body)["objects"]:
            entry = {"oid": item["oid"], "size": item["size"]}
            if not (self.hub.blobs / item["oid"]).exists():
                entry["actions"] = {"upload": {"href": f"{self.hub.url}/lfs-upload/{item['oid']}"}}
            objects.append(entry)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   content_type="application/vnd.git-lfs+json")

    def lfs_upload(self, body, oid):
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, "uploaded content does not match its sha256")
        self.hub.store(body)
        self._send(200)

    def commit(self, body, kind, repo_id, revision):
        repo = self.hub.visible_repo(REPO_TYPES[kind], repo_id, self._token())
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        create_pr = self._query().get("create_pr") == "1"
        self._json(200, self.hub.commit(repo, revision, lines, create_pr, self._token()))

    def commits(self, _body, kind, repo_id, revision):
        repo = self.hub.visible_repo(REPO_TYPES[kind], repo_id, self._token())
        commit, history = self.hub.commit_at(repo, revision), []
        while commit is not None:
            history.append({"id": commit.oid, "title": commit.title, "message": commit.message,
                            "authors": [{"user": "critic-data-tests"}], "date": commit.date})
            commit = repo.commits.get(commit.parent) if commit.parent else None
        self._json(200, history)

    def refs(self, _body, kind, repo_id):
        repo = self.hub.visible_repo(REPO_TYPES[kind], repo_id, self._token())

        def ref(name, oid):
            return {"name": name, "ref": name if name.startswith("refs/") else f"refs/heads/{name}",
                    "targetCommit": oid}

        answer = {"branches": [ref(n, o) for n, o in repo.refs.items()
                               if not n.startswith(("refs/pr/", "refs/convert/"))],
                  "tags": [], "converts": [ref(n, o) for n, o in repo.refs.items() if n.startswith("refs/convert/")]}
        if self._query().get("include_prs"):
            answer["pullRequests"] = [ref(n, o) for n, o in repo.refs.items() if n.startswith("refs/pr/")]
        self._json(200, answer)

    def branch(self, body, kind, repo_id, name):
        repo = self.hub.visible_repo(REPO_TYPES[kind], repo_id, self._token())
        self.hub.check_write(self._token(), repo_id)
        name = unquote(name)
        with self.hub._lock:
            if name in repo.refs:
                raise HubError(409, f"Branch {name} already exists")
            start = self.hub.commit_at(repo, (json.loads(body or b"{}") or {}).get("startingPoint") or "main")
            repo.refs[name] = start.oid
        self._json(200, {})

    def resolve(self, _body, kind, repo_id, revision, path):
        repo = self.hub.visible_repo(REPO_TYPES[kind or "models"], repo_id, self._token())
        commit = self.hub.commit_at(repo, revision)
        path = unquote(path)
        blob = commit.files.get(path)
        if blob is None:
            raise HubError(404, f"{path} does not exist on {unquote(revision)}", "EntryNotFound")
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{blob.oid}"', "Accept-Ranges": "bytes"}
        if blob.lfs:
            headers.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": blob.size})
        data = self.hub.read(blob) if self.command == "GET" else b""
        status, ranges = 200, re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if ranges:
            start = int(ranges.group(1)) if ranges.group(1) else max(0, blob.size - int(ranges.group(2)))
            end = min(int(ranges.group(2)), blob.size - 1) if ranges.group(1) and ranges.group(2) else blob.size - 1
            status, data = 206, data[start:end + 1] if data else b""
            headers["Content-Range"] = f"bytes {start}-{end}/{blob.size}"
        if self.command == "HEAD":  # a HEAD answer announces the length of what GET would send
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            for key, value in headers.items():
                self.send_header(key, str(value))
            self.send_header("Content-Length", str(blob.size if status == 200 else end - start + 1))
            self.end_headers()
            self.hub.requests.append((self.command, self.path, status))
            return
        self._send(status, data, headers, content_type="application/octet-stream")


_REPO = r"([^/]+/[^/]+)"
_KIND = r"(models|datasets|spaces)"
ROUTES = [
    ("POST", r"/api/repos/create", _Handler.create_repo),
    ("POST", r"/api/validate-yaml", _Handler.validate_yaml),
    ("GET", rf"/api/{_KIND}/{_REPO}", _Handler.repo_info),
    ("GET", rf"/api/{_KIND}/{_REPO}/revision/([^/]+)", _Handler.repo_info),
    ("GET", rf"/api/{_KIND}/{_REPO}/tree/([^/]+)(?:/(.*))?", _Handler.tree),
    ("POST", rf"/api/{_KIND}/{_REPO}/paths-info/([^/]+)", _Handler.paths_info),
    ("POST", rf"/api/{_KIND}/{_REPO}/preupload/([^/]+)", _Handler.preupload),
    ("POST", rf"/api/{_KIND}/{_REPO}/commit/([^/]+)", _Handler.commit),
    ("GET", rf"/api/{_KIND}/{_REPO}/commits/([^/]+)", _Handler.commits),
    ("GET", rf"/api/{_KIND}/{_REPO}/refs", _Handler.refs),
    ("POST", rf"/api/{_KIND}/{_REPO}/branch/([^/]+)", _Handler.branch),
    ("POST", r"/(?:(datasets|spaces)/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch", _Handler.lfs_batch),
    ("PUT", r"/lfs-upload/([0-9a-f]{64})", _Handler.lfs_upload),
    ("HEAD", r"/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", _Handler.resolve),
    ("GET", r"/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", _Handler.resolve),
]


if __name__ == "__main__":
    import tempfile

    hub = LocalHub(Path(tempfile.mkdtemp()), {"hf_test_write": "write"}, port=int(sys.argv[1]) if len(sys.argv) > 1
                   else 0)
    print(f"HF_ENDPOINT={hub.url}  HF_TOKEN=hf_test_write", flush=True)
    hub.start()._thread.join()
