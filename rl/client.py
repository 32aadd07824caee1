"""What `critic-data eval` and `critic-data best-of-n` share: talking to an OpenAI-compatible server.

This module owns
- `ChatClient`: one `openai.AsyncOpenAI` client with a bound on requests in flight, tenacity
  retries for transient failures (connection errors, 429, 5xx), images sent as data URLs, and
  the translation of failures into what a user can act on:
    * server unreachable (after retries), key refused (401/403), model or path unknown (404)
      -> `UserError`: the run stops with one line;
    * any other refusal (400, 422, a 5xx that outlived the retries) -> `RequestFailed`: that
      item is counted as failed and left out of the results, so `--resume` retries it.
- `run_bounded`: feeds jobs lazily to async workers with a bounded window (memory stays flat
  however large the benchmark) and reports each as it completes.
- `ResultLog`: the append-as-you-go JSON-lines file that makes a run resumable.
- `derive_seed`: every random choice (answer order, a coin for an unreadable verdict, the
  server-side sampling seed) is a function of (seed, stable key), never of completion order.

The API key comes from `OPENAI_API_KEY` (any placeholder works for a server started without
one, as `vllm serve` is by default) and is never printed or written.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from critic_data import UserError

API_KEY_ENV = "OPENAI_API_KEY"
RUN_ATTEMPTS = 6  # ~16 s of back-off in total: rides out a server restart or a burst of 429s
CHECK_ATTEMPTS = 3  # at start-up a server that does not answer is most likely not running: say so quickly


class RequestFailed(Exception):
    """The server refused one request for good; the run continues without that item."""


def derive_seed(seed: int, *parts: object) -> int:
    """A non-negative 31-bit integer fixed by the seed and the parts (a stable per-item random number)."""
    digest = hashlib.blake2b(repr((seed, *parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 33


def data_url(image: bytes) -> str:
    """The image as a `data:` URL, its MIME type read from the bytes."""
    from PIL import Image, UnidentifiedImageError

    try:
        kind = Image.open(io.BytesIO(image)).format
    except (UnidentifiedImageError, OSError):
        raise RequestFailed("the image is not in a format Pillow can read") from None
    mime = Image.MIME.get(kind or "", "image/jpeg")
    return f"data:{mime};base64,{base64.b64encode(image).decode('ascii')}"


def _server_message(error) -> str:
    """The server's own explanation of an HTTP error, on one short line."""
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("message") or body.get("error") or body
        if isinstance(detail, dict):
            detail = detail.get("message", detail)
        text = str(detail)
    else:
        text = str(getattr(error, "message", error))
    text = " ".join(text.split())
    return text if len(text) <= 240 else text[:237] + "..."


class ChatClient:
    """Chat completions against one model on one OpenAI-compatible server, `concurrency` at a time."""

    def __init__(self, base_url: str, model: str, concurrency: int, max_tokens: int):
        from openai import AsyncOpenAI

        self.base_url, self.model, self.max_tokens = base_url, model, max_tokens
        # Retries are ours (tenacity), so the openai client's own are switched off.
        self._client = AsyncOpenAI(base_url=base_url, api_key=os.environ.get(API_KEY_ENV) or "EMPTY", max_retries=0)
        self._slots = asyncio.Semaphore(concurrency)

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *_) -> None:
        await self._client.close()

    async def check(self) -> None:
        """Fail early, with one line, when the server is down, refuses the key, or does not serve the model."""
        page = await self._call(self._client.models.list, CHECK_ATTEMPTS)
        served = [model.id for model in page.data]
        # Some servers (transformers serve) list nothing; only a non-empty list can rule a name out.
        if served and self.model not in served:
            raise UserError(f"the server at {self.base_url} does not serve model {self.model!r}; "
                            f"it serves {', '.join(served)}: pass one of them as --model")

    async def chat(self, images: list[bytes], text: str, *, temperature: float, seed: int | None,
                   n: int = 1) -> list[str]:
        """The assistant texts for one user message (images first, then the text).

        Asks for `n` choices in one request; a server that ignores `n` returns fewer, and the
        caller decides whether to ask again.
        """
        content = [{"type": "image_url", "image_url": {"url": data_url(image)}} for image in images]
        content.append({"type": "text", "text": text})
        request = {"model": self.model, "messages": [{"role": "user", "content": content}],
                   "max_tokens": self.max_tokens, "temperature": temperature}
        if seed is not None:
            request["seed"] = seed
        if n > 1:  # only when needed: strict servers reject fields they do not know
            request["n"] = n
        async with self._slots:
            response = await self._call(lambda: self._client.chat.completions.create(**request), RUN_ATTEMPTS)
        return [choice.message.content or "" for choice in response.choices]

    async def _call(self, make: Callable[[], Awaitable], attempts: int):
        from openai import (APIConnectionError, APIStatusError, AuthenticationError, InternalServerError,
                            NotFoundError, PermissionDeniedError, RateLimitError)
        from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential_jitter(multiplier=0.5, max=10, jitter=0.5),
            retry=retry_if_exception_type((APIConnectionError, RateLimitError, InternalServerError)),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await make()
        except APIConnectionError as error:
            reason = " ".join(str(error.__cause__ or error).split()) or type(error).__name__
            raise UserError(f"cannot reach the OpenAI-compatible server at {self.base_url} ({reason}); "
                            "start it (e.g. `vllm serve MODEL`) or fix --base-url") from None
        except (AuthenticationError, PermissionDeniedError) as error:
            raise UserError(f"the server at {self.base_url} refused the API key ({error.status_code}); "
                            f"set {API_KEY_ENV} to a key it accepts") from None
        except NotFoundError as error:
            raise UserError(f"the server at {self.base_url} answered 404 ({_server_message(error)}); "
                            "check --model and that --base-url ends in /v1") from None
        except APIStatusError as error:
            raise RequestFailed(f"HTTP {error.status_code}: {_server_message(error)}") from None


async def run_bounded(jobs: Iterable, work: Callable[[object], Awaitable], window: int,
                      on_done: Callable[[object, object, RequestFailed | None], None]) -> None:
    """Run `work(job)` for every job, at most `window` at a time, reading `jobs` lazily.

    `on_done(job, result, failure)` is called as each finishes (`failure` set and `result` None
    when the server refused it). Any other exception stops the run: the jobs still in flight are
    cancelled and the exception propagates.
    """
    pending: dict[asyncio.Task, object] = {}

    async def settle_one() -> None:
        done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            job = pending.pop(task)
            error = task.exception()
            if error is not None and not isinstance(error, RequestFailed):
                raise error
            on_done(job, None if error else task.result(), error)

    try:
        for job in jobs:
            if len(pending) >= window:
                await settle_one()
            pending[asyncio.create_task(work(job))] = job
        while pending:
            await settle_one()
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


class ResultLog:
    """A JSON-lines file written one record at a time, so an interrupted run loses nothing it finished.

    Opening an existing file needs `resume=True`; its complete records are kept (a line cut
    short by the interruption is dropped) and new ones are appended after them.
    """

    def __init__(self, path: Path, resume: bool):
        self.path = path
        self.records: list[dict] = []
        self._handle = None  # opened at the first record: a run that produced nothing leaves nothing behind
        if path.exists() and not resume:
            raise UserError(f"{path} already exists; pass --resume to continue that run, or choose another --out")
        if path.exists():
            kept = []
            for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break  # the line being written when the run stopped
                if not line.endswith("\n") or not isinstance(record, dict):
                    break
                self.records.append(record)
                kept.append(line)
            path.write_text("".join(kept), encoding="utf-8")

    def append(self, record: dict) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("a", encoding="utf-8")
        self.records.append(record)
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
