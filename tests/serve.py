"""A real OpenAI-compatible server for the tests: `transformers serve` on 127.0.0.1 with a tiny model.

`served_model(model_dir, workdir)` starts it on a free port (CPU, an empty HF_HUB_CACHE so that
/v1/models answers, offline), waits for GET /health, yields (base_url, model name) and stops the
process it started. Requests must name the model folder as `model`; the server ignores `n`,
rejects unknown fields with 422 and generates one request at a time (TESTING.md).
`fake_server(chat)` is a scripted stand-in for the failure paths a real server rarely shows on
demand: answers that are not chat completions, a server that never answers or trickles bytes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

START_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def served_model(model_dir: Path, workdir: Path) -> Iterator[tuple[str, str]]:
    cache = workdir / "hf-hub-cache"
    cache.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = (workdir / "serve.log").open("wb")
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    command = [str(Path(sys.executable).parent / "transformers"), "serve", str(model_dir),
               "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"transformers serve exited ({process.returncode}): "
                                   f"{(workdir / 'serve.log').read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"transformers serve did not answer /health within {START_TIMEOUT:.0f}s")
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/v1", str(model_dir)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@dataclass
class Reply:
    """One scripted answer of `fake_server`: `body` with `status`, or `behaviour` "hang" (the request is
    accepted and never answered), "trickle" (headers, then one byte every 0.2 s, never complete) or "cut"
    (headers and half of `body`, then the connection is closed); `headers` are sent beside Content-Type."""

    body: bytes = b""
    status: int = 200
    content_type: str = "application/json"
    behaviour: str = "answer"
    headers: dict = field(default_factory=dict)  # more headers: Content-Encoding, Location, Retry-After


def completion(*texts: str) -> Reply:
    """A well-formed chat completion with one choice per text."""
    choices = [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
               for i, text in enumerate(texts)]
    return Reply(json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": "fake-model",
                             "choices": choices}).encode())


def prompt_of(request: dict) -> str:
    """The text part of the last message of a chat request."""
    return next(part["text"] for part in request["messages"][-1]["content"] if part["type"] == "text")


@dataclass
class FakeServer:
    url: str
    requests: list[tuple[str, dict | None]] = field(default_factory=list)  # (path, JSON body) as received


@contextmanager
def fake_server(chat: Callable[[dict], Reply],
                models: tuple[str, ...] | Reply = ("fake-model",)) -> Iterator[FakeServer]:
    """An OpenAI-compatible stand-in on 127.0.0.1: GET /v1/models lists `models` (or answers the given
    Reply), POST /v1/chat/completions answers `chat(request)`. Hanging answers end when the block exits."""
    stopped = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def do_GET(self):
            server.requests.append((self.path, None))
            if isinstance(models, Reply):
                self._send(models)
            else:
                listed = {"object": "list",
                          "data": [{"id": name, "object": "model", "owned_by": "test"} for name in models]}
                self._send(Reply(json.dumps(listed).encode()))

        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            server.requests.append((self.path, request))
            self._send(chat(request))

        def _send(self, reply: Reply) -> None:
            try:
                if reply.behaviour == "hang":
                    stopped.wait()
                    return
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.behaviour == "trickle":
                    self.send_header("Content-Length", str(10**6))
                    self.end_headers()
                    while not stopped.wait(0.2):
                        self.wfile.write(b" ")
                        self.wfile.flush()
                    return
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if reply.behaviour == "cut":
                    self.wfile.write(reply.body[:len(reply.body) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(reply.body)
            except OSError:
                pass  # the client gave up on this request: that is what the test is about

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server = FakeServer(f"http://127.0.0.1:{httpd.server_port}/v1")
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)  # shutdown() waits a poll
    thread.start()
    try:
        yield server
    finally:
        stopped.set()
        httpd.shutdown()
        httpd.server_close()
