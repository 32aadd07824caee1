"""What `critic-data eval` and `critic-data best-of-n` share: talking to an OpenAI-compatible server.

This module owns
- `ChatClient`: one `openai.AsyncOpenAI` client with a bound on requests in flight, a bound on
  the time of each request, tenacity retries for transient failures (connection errors, 408,
  429, 5xx), and the translation of failures into what a user can act on:
    * server unreachable (after retries), no answer within `--timeout`, key refused (401/403),
      model or path unknown (404), a model list that is not one, a redirect loop -> `UserError`:
      the run stops with one line;
    * any other refusal (400, 422 and every other 4xx, at once: asked again, the server gives
      the same answer; a 408, 429 or 5xx that outlived the retries), or an HTTP 200 whose body
      is not a chat completion (an HTML login page, invalid JSON, no choices, a body its
      Content-Encoding does not decode) -> `RequestFailed`:
      that item is counted as failed and left out of the results, so `--resume` retries it.
- `data_url`: an item's image decoded in full (under Pillow's pixel limit) before it is sent,
  resized on request to Qwen2-VL's `smart_resize` size for given pixel bounds.
- `run_bounded`: feeds jobs lazily to async workers with a bounded window (memory stays flat
  however large the benchmark) and reports each as it completes.
- `ResultLog`: the append-as-you-go JSON-lines file that makes a run resumable, with the run's
  identity beside it (`run.json`) so that a resume cannot mix two runs.
- `derive_seed`: every random choice (answer order, a coin for an unreadable verdict, the
  server-side sampling seed) is a function of (seed, stable key), never of completion order.
- `percent`: a proportion and its 95% interval (`rl/metrics.py` computes both) as a user reads them.
- `smart_resize`: the size Qwen2-VL's processors resize an image to; `train` fits images with it too.

The API key comes from `OPENAI_API_KEY` (any placeholder works for a server started without
one, as `vllm serve` is by default) and is never printed or written.

Time: retries are tenacity's alone (the openai client's own are off), and one deadline covers a
request's attempts and the waits between them: `--timeout` seconds (default 300, room for a
2048-token completion on a busy server), at most `RUN_ATTEMPTS` attempts. A request that gets no
answer by the deadline stops the run: a server that does not answer one request in that time is
stuck or overloaded, and failing item after item would keep the run going for hours. A request
the server kept refusing (5xx, 408, 429) fails that item with the server's answer, also when the
deadline cuts its last retry short.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import math
import os
import re
import time
import warnings
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from critic_data import UserError
from critic_data.files import json_lines, refuse_a_path_that_cannot_be_a_folder
from critic_data.rl.options import DEFAULT_TIMEOUT, RUN_ATTEMPTS

API_KEY_ENV = "OPENAI_API_KEY"
CHECK_ATTEMPTS = 3  # at start-up a server that does not answer is most likely not running: say so quickly
IMAGE_PATCH = 28  # Qwen2-VL and 2.5-VL: one image token per 28 x 28 pixels (14-pixel patches merged 2 x 2)


class RequestFailed(Exception):
    """One item cannot be done (the server refused it for good or answered garbage, or its image
    cannot be decoded); the run continues without it. `status` is the HTTP status of a refusal."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def is_text(value: object) -> bool:
    """A string UTF-8 can carry: JSON text may escape a lone surrogate (\\ud800), which no request can send."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def derive_seed(seed: int, *parts: object) -> int:
    """A non-negative 31-bit integer fixed by the seed and the parts (a stable per-item random number)."""
    digest = hashlib.blake2b(repr((seed, *parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 33


def percent(value: float | None, interval: list[float] | None = None) -> str:
    """A proportion as a percentage, then its interval when given: "62.5 (30.6-86.3)"; "-" for none."""
    if value is None:
        return "-"
    return f"{100 * value:.1f}" + (f" ({100 * interval[0]:.1f}-{100 * interval[1]:.1f})" if interval else "")


def smart_resize(height: int, width: int, min_pixels: int, max_pixels: int,
                 factor: int = IMAGE_PATCH) -> tuple[int, int]:
    """(height, width) as Qwen2-VL's processors resize an image for pixel bounds: each side a
    multiple of `factor` nearest the original, then scaled as a whole into [min_pixels, max_pixels]
    (transformers' `Qwen2VLImageProcessor`, qwen_vl_utils' `fetch_image`). Written here because
    eval and best-of-n run without transformers; tested equal to transformers' own. An aspect
    ratio over 200 is a ValueError, as there."""
    if max(height, width) > 200 * min(height, width):
        raise ValueError(f"an aspect ratio over 200 ({width}x{height} pixels)")
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def data_url(image: bytes, pixels: tuple[int, int] | None = None) -> str:
    """The image as a `data:` URL, its MIME type read from the bytes.

    The image is decoded in full first: one the server could not decode fails here, at once,
    instead of after the retries of a 5xx. Pillow's pixel limit stops a decompression bomb before
    its pixels are allocated (its warning between one and two times the limit counts as a refusal).
    With `pixels` (min, max), an image whose `smart_resize` size differs from its own is sent at
    that size, as RGB PNG (lossless, bicubic as Qwen's processors resample); others as they are.
    The PNG is compressed at zlib level 1: 27 ms for a 476x644 photo against 95 ms at the default
    level 6, for 19% more bytes (benchmarks/difficulty.py: the client's CPU per row is mostly this).
    PIL releases the GIL while it resizes and compresses: callers may run this in threads.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(image)) as opened:
                opened.load()
                kind = opened.format
                try:
                    size = smart_resize(opened.height, opened.width, *pixels) if pixels else None
                except ValueError:
                    raise RequestFailed(f"the image is {opened.width}x{opened.height} pixels, an aspect ratio over "
                                        "200, which Qwen2-VL's processors refuse") from None
                if size and size != (opened.height, opened.width):
                    buffer = io.BytesIO()
                    opened.convert("RGB").resize(size[::-1], Image.Resampling.BICUBIC).save(buffer, format="PNG",
                                                                                          compress_level=1)
                    image, kind = buffer.getvalue(), "PNG"
    except RequestFailed:
        raise
    except Exception as error:  # decoders raise many types: OSError, SyntaxError, RuntimeError (AVIF), ...
        raise RequestFailed(f"the image cannot be decoded ({type(error).__name__}: {_shorten(str(error))})") from None
    mime = Image.MIME.get(kind or "", "image/jpeg")
    return f"data:{mime};base64,{base64.b64encode(image).decode('ascii')}"


def _shorten(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    return _shorten(text)


def _json_body(response) -> object:
    """The JSON body of a successful answer; anything else is a `RequestFailed` naming what came."""
    try:
        return json.loads(response.content.decode("utf-8"))
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RequestFailed(f"the server answered HTTP {response.status_code} with "
                            f"{_describe(response)}, not JSON") from None


def _describe(response) -> str:
    """What a body looks like, for a message: its type and first characters (a proxy's login page, ...)."""
    start = response.content[:80].decode("utf-8", "replace")
    return f"{response.headers.get('content-type') or 'no content type'} {_shorten(start, 60)!r}"


def _completion_texts(response) -> list[str]:
    """The text of each choice of a chat completion (a missing or null content reads as "")."""
    body = _json_body(response)
    choices = body.get("choices") if isinstance(body, dict) else None
    texts = []
    for choice in choices if isinstance(choices, list) else []:
        message = choice.get("message") if isinstance(choice, dict) else None
        text = message.get("content", "") if isinstance(message, dict) else None
        texts.append("" if text is None and message is not None else text)
    if not texts or not all(isinstance(text, str) for text in texts):
        raise RequestFailed(f"the server answered HTTP {response.status_code} with "
                            f"{_describe(response)}, not a chat completion with a message per choice")
    # A lone surrogate (JSON can escape one) would break the judge request a candidate goes into.
    return [re.sub("[\ud800-\udfff]", "\ufffd", text) for text in texts]


class ChatClient:
    """Chat completions against one model on one OpenAI-compatible server, `concurrency` at a time."""

    def __init__(self, base_url: str, model: str, concurrency: int, max_tokens: int, timeout: float = DEFAULT_TIMEOUT):
        from openai import AsyncOpenAI

        self.base_url, self.model, self.max_tokens, self.timeout = base_url, model, max_tokens, timeout
        # Retries are ours (tenacity), so the openai client's own are switched off. Its timeout
        # resets with every byte read (a trickling server never trips it): `_call` sets the bound.
        self._client = AsyncOpenAI(base_url=base_url, api_key=os.environ.get(API_KEY_ENV) or "EMPTY",
                                   max_retries=0, timeout=timeout)
        self._slots = asyncio.Semaphore(concurrency)

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *_) -> None:
        await self._client.close()

    async def check(self) -> None:
        """Fail early, with one line, when the server is down, refuses the key, or does not serve the model."""
        try:
            response = await self._call(self._client.models.with_raw_response.list, CHECK_ATTEMPTS)
            body = _json_body(response)
            listed = body.get("data") if isinstance(body, dict) else None
            if not isinstance(listed, list) or not all(isinstance(m, dict) and isinstance(m.get("id"), str)
                                                       for m in listed):
                raise RequestFailed(f"the server answered HTTP {response.status_code} with {_describe(response)}, "
                                    "not a model list")
        except RequestFailed as error:
            reason = str(error).removeprefix("the server answered ")
            raise UserError(f"the server at {self.base_url} answered GET /models: {reason}; "
                            "check --base-url (an OpenAI-compatible endpoint, ending in /v1)") from None
        served = [model["id"] for model in listed]
        # Some servers (transformers serve) list nothing; only a non-empty list can rule a name out.
        if served and self.model not in served:
            raise UserError(f"the server at {self.base_url} does not serve model {self.model!r}; "
                            f"it serves {', '.join(served)}: pass one of them as --model")

    async def chat(self, image_urls: list[str], text: str, *, temperature: float, seed: int | None,
                   n: int = 1, top_p: float | None = None, system: str | None = None) -> list[str]:
        """The assistant texts for one user message (images, as `data_url`s, first, then the text),
        after a system turn when `system` is given.

        Asks for `n` choices in one request; a server that ignores `n` returns fewer, and the
        caller decides whether to ask again.
        """
        content = [{"type": "image_url", "image_url": {"url": url}} for url in image_urls]
        content.append({"type": "text", "text": text})
        messages = [{"role": "system", "content": system}] if system is not None else []
        messages.append({"role": "user", "content": content})
        request = {"model": self.model, "messages": messages, "max_tokens": self.max_tokens, "temperature": temperature}
        if seed is not None:
            request["seed"] = seed
        if top_p is not None:
            request["top_p"] = top_p
        if n > 1:  # only when needed: strict servers reject fields they do not know
            request["n"] = n
        async with self._slots:
            response = await self._call(lambda: self._client.chat.completions.with_raw_response.create(**request),
                                        RUN_ATTEMPTS)
        return _completion_texts(response)

    async def _call(self, make: Callable[[], Awaitable], attempts: int):
        """`make()`'s raw response, retried on transient failures, all within `self.timeout` seconds."""
        from openai import APIConnectionError, APIError, APIStatusError, APITimeoutError
        from tenacity import (
            AsyncRetrying,
            retry_if_exception,
            stop_after_attempt,
            stop_before_delay,
            wait_exponential_jitter,
        )

        def transient(error: BaseException) -> bool:
            # 408 and 429 say "not now"; any other 4xx refuses the request itself, and asked again
            # the server gives the same answer: that item fails at once
            return isinstance(error, APIConnectionError) or (
                isinstance(error, APIStatusError) and (error.status_code in (408, 429) or error.status_code >= 500))

        deadline = asyncio.get_running_loop().time() + self.timeout
        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts) | stop_before_delay(self.timeout),  # no wait runs past the deadline
            wait=wait_exponential_jitter(multiplier=0.5, max=10, jitter=0.5),
            retry=retry_if_exception(transient),
            reraise=True,
        )
        failed = None  # the last failure retried, if the deadline then cuts an attempt short
        try:
            async for attempt in retrying:
                with attempt:
                    try:
                        async with asyncio.timeout_at(deadline):
                            return await make()
                    except APIError as error:
                        failed = error
                        raise
        except TimeoutError:
            if failed is None or isinstance(failed, APITimeoutError):
                raise UserError(f"the server at {self.base_url} did not answer within {self.timeout:g} s; check that "
                                "it is not stuck or overloaded, or raise --timeout (finished items are kept for "
                                "--resume)") from None
            # else it answered (5xx, 408, 429) or refused the connection, then ran out of time while retried
        except APIError:
            pass  # `failed` holds it
        raise self._failure(failed) from None

    def _failure(self, error: Exception) -> Exception:
        """What a request's last failure means to the user: a UserError (the run cannot go on), or a
        RequestFailed (this item failed)."""
        from openai import APIConnectionError, APIStatusError, AuthenticationError, NotFoundError, PermissionDeniedError

        if isinstance(error, APIConnectionError):
            reason = " ".join(str(error.__cause__ or error).split()) or type(error).__name__
            # httpx's errors for a server that did answer: a body its Content-Encoding does not decode
            # (this item's answer is unreadable, the run goes on), a redirect loop (every request loops)
            if type(error.__cause__).__name__ == "DecodingError":
                return RequestFailed(f"the server answered with a body that cannot be decoded ({_shorten(reason)})")
            if type(error.__cause__).__name__ == "TooManyRedirects":
                return UserError(f"the server at {self.base_url} redirects for ever ({reason}); check --base-url "
                                 "(an OpenAI-compatible endpoint, ending in /v1)")
            # httpx's (or, in newer openai, httpx2's) errors for a connection that answered, then dropped
            if type(error.__cause__).__name__ in ("RemoteProtocolError", "ReadError"):
                return UserError(f"the server at {self.base_url} closed the connection before its answer was complete "
                                 f"({reason}); check that it is still running (a crash, a restart, a proxy's limit), "
                                 "then rerun with --resume: finished items are kept")
            return UserError(f"cannot reach the OpenAI-compatible server at {self.base_url} ({reason}); "
                             "start it (e.g. `vllm serve MODEL`) or fix --base-url")
        if isinstance(error, (AuthenticationError, PermissionDeniedError)):
            return UserError(f"the server at {self.base_url} refused the API key ({error.status_code}); "
                             f"set {API_KEY_ENV} to a key it accepts")
        if isinstance(error, NotFoundError):
            return UserError(f"the server at {self.base_url} answered 404 ({_server_message(error)}); "
                             "check --model and that --base-url ends in /v1")
        if isinstance(error, APIStatusError):
            return RequestFailed(f"HTTP {error.status_code}: {_server_message(error)}", error.status_code)
        return error


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


def cannot_write(path: Path, error: OSError) -> UserError:
    return UserError(f"cannot write {path} ({error.strerror or error}); what finished is kept: make room, then "
                     "rerun with --resume")


class ResultLog:
    """A JSON-lines file written one record at a time, so an interrupted run loses nothing it finished.

    Beside it, `run.json` holds the run's identity: the options that decide what a record says
    (written with the first record). Opening an existing file, or a folder that holds a `run.json`,
    needs `resume=True` and the same identity, so that two runs never mix in one file, and a new run
    never overwrites another's `run.json` and `summary.json`. The folder is locked (`flock`) while a
    run writes in it: a second run into it at once is refused. On resume every line that is a record
    (`valid`) is kept as it is; any other line (cut short by an interruption, garbled) is moved,
    verbatim, to `<name>.bad-lines`, and its item is asked again: `set_aside` says how many.
    """

    def __init__(self, path: Path, resume: bool, identity: dict, valid: Callable[[dict], bool]):
        self.path, self.identity = path, identity
        self.records: list[dict] = []
        self.set_aside: dict | None = None  # {"lines", "file", "first"} when lines were moved aside
        self._handle = None  # opened at the first record: a run that produced nothing leaves nothing behind
        self._lock_fd: int | None = None
        if path.exists() and not resume:
            raise UserError(f"{path} already exists; pass --resume to continue that run, or choose another --out")
        stored = path.with_name("run.json")
        if stored.exists() and not resume:  # another kind of run (eval beside best-of-n), or its log deleted
            raise UserError(f"{path.parent} holds another run ({stored.name}); pass --resume to continue it, "
                            "or choose another --out")
        try:
            if path.parent.is_dir():
                self._lock()  # before reading: another run may be appending
            if stored.exists():
                self._check_identity()
            if path.exists():
                self._read(valid)
        except BaseException:
            self.close()
            raise

    def _lock(self) -> None:
        """Hold the folder for this run alone (released when the process ends, however it ends)."""
        import fcntl

        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"another run is writing to {self.path.parent}; wait for it to end, or choose "
                            "another --out") from None
        self._lock_fd = fd

    def _check_identity(self) -> None:
        stored_path = self.path.with_name("run.json")
        try:
            stored = json.loads(stored_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return  # written by a version that kept no identity: nothing to compare with
        except (OSError, ValueError):
            stored = None
        if not isinstance(stored, dict):
            raise UserError(f"{stored_path} is unreadable, so the options of the run in {self.path.parent} are "
                            "unknown; delete it to resume without that check, or choose another --out")
        # Only what both versions record is compared: an option added later does not block a resume.
        differences = [f"--{name.replace('_', '-')} was {json.dumps(stored[name])}, now {json.dumps(value)}"
                       for name, value in self.identity.items() if name in stored and stored[name] != value]
        if differences:
            raise UserError(f"{self.path.parent} holds a run with other options ({'; '.join(differences)}); "
                            "resume with the same options, or choose another --out")

    def _read(self, valid: Callable[[dict], bool]) -> None:
        data = self.path.read_bytes()
        last = data.count(b"\n") + 1  # the number of a last line without its newline (cut short, usually)
        kept, bad, first = [], [], None
        for number, line, record in json_lines(self.path):
            if isinstance(record, Exception):
                reason = "not JSON"
            elif not (isinstance(record, dict) and valid(record)):
                reason = "not a record of this run"
            else:
                self.records.append(record)
                kept.append(line + b"\n")  # a last line complete but for its newline is kept too
                continue
            bad.append(line if number == last else line + b"\n")  # set aside as it was
            first = first or f"line {number}, {reason}"
        if bad:
            aside = self.path.with_name(self.path.name + ".bad-lines")
            with aside.open("ab") as handle:  # appended: lines set aside by an earlier resume stay
                handle.writelines(bad)
            self.set_aside = {"lines": len(bad), "file": str(aside), "first": first}
        if b"".join(kept) != data:  # the bad lines are safe in the aside file before they leave the log
            temporary = self.path.with_name(self.path.name + ".tmp")
            temporary.write_bytes(b"".join(kept))
            os.replace(temporary, self.path)

    def note(self) -> str | None:
        """One line saying what was set aside on opening, or None."""
        if self.set_aside is None:
            return None
        count = self.set_aside["lines"]
        return (f"{self.path.name}: {count} unreadable line{'s' if count > 1 else ''} (first: "
                f"{self.set_aside['first']}) moved to {self.set_aside['file']}; "
                f"{'their items are' if count > 1 else 'its item is'} asked again")

    def append(self, record: dict) -> None:
        try:
            if self._handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if self._lock_fd is None:
                    self._lock()
                self.path.with_name("run.json").write_text(json.dumps(self.identity, indent=2) + "\n", encoding="utf-8")
                # A lone surrogate (from JSON text) can only sit inside a JSON string, where backslashreplace
                # writes `\udXXX`: its JSON escape, so the line reads back as it was.
                self._handle = self.path.open("a", encoding="utf-8", errors="backslashreplace")
            self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._handle.flush()
        except OSError as error:  # a full disk, a quota, a file size limit
            raise cannot_write(self.path, error) from None
        self.records.append(record)

    def close(self) -> None:
        if self._handle is not None:
            try:
                self._handle.close()
            except OSError:  # the line a full disk cut short: --resume sets it aside
                pass
            self._handle = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


@dataclass
class RunSpec:
    """What one kind of run (eval, best-of-n) brings to `run_jobs`; the loop itself is shared."""

    name: str  # shown on the progress line
    unit: str  # what a job is, for messages: "request", "question"
    log_name: str  # the JSON-lines file in --out: results.jsonl, picks.jsonl
    read: Callable[[dict], object | None]  # the record a line of that file holds (rl/records.py), None if none
    key: Callable[[dict], object]  # the job a finished record stands for
    jobs: Callable[[set], Iterable]  # the jobs still to do, given the keys already done
    total: int  # jobs in all; the progress bar counts requests: total x requests_per_job
    work: Callable[[ChatClient, object], Awaitable]  # one job -> its result
    record: Callable[[object, object], object]  # (job, result) -> the record, written as its `to_json()`
    job_id: Callable[[object], str]  # a job's id, to name it in a failure
    accuracy: Callable[[list], float | None]  # of the records so far, shown on the progress line
    window: int  # jobs in flight at once
    announce: Callable[[set], str] | None = None  # a line said before the first request
    requests_per_job: int = 1  # the requests a job is planned to make (the bar's total is corrected as jobs end)


class _CountedRequests:
    """The run's ChatClient as one job sees it: each request the job makes moves the progress bar.

    The bar's total holds the job's planned requests; it grows by each request beyond the plan (a
    server that ignores `n` is asked again for the rest), and `settle` takes out those never made
    (a match too long to send, a job that failed first), so a finished run's bar counts every
    request it made, and only those."""

    def __init__(self, client: ChatClient, progress, task, planned: int):
        self._client, self._progress, self._task, self._left = client, progress, task, planned

    async def chat(self, *args, **kwargs) -> list[str]:
        try:
            texts = await self._client.chat(*args, **kwargs)
        except RequestFailed:  # refused: made all the same
            self._made()
            raise
        self._made()
        return texts

    def _made(self) -> None:
        self._left -= 1
        self._progress.update(self._task, advance=1, total=self._total() + (1 if self._left < 0 else 0))

    def settle(self) -> None:
        if self._left > 0:
            self._progress.update(self._task, total=self._total() - self._left)
        self._left = 0

    def _total(self) -> float:
        return next(task.total for task in self._progress.tasks if task.id == self._task)


@dataclass
class Finished:
    records: list  # the records of the log, resumed ones first
    failures: list[str]
    set_aside: dict | None
    seconds: float


async def _work(spec: RunSpec, client: ChatClient, job, progress, task):
    """`spec.work` on one job; under a progress bar, each request it makes moves the bar."""
    if progress is None:
        return await spec.work(client, job)
    counted = _CountedRequests(client, progress, task, spec.requests_per_job)
    try:
        return await spec.work(counted, job)
    finally:
        counted.settle()


def _open_log(options, spec: RunSpec) -> ResultLog:
    """The run's log in --out, read back on --resume. An --out that cannot hold the run's files is
    refused now, before any request is paid for."""
    out = options.out
    refuse_a_path_that_cannot_be_a_folder("--out", out)
    for name in (spec.log_name, "run.json", "summary.json"):
        if os.path.lexists(out / name) and not (out / name).is_file():
            raise UserError(f"--out {out}: its {name} is not a file; move that away, or choose another --out")
    return ResultLog(out / spec.log_name, resume=options.resume, identity=options.identity(),
                     valid=lambda line: spec.read(line) is not None)


async def run_jobs(options, spec: RunSpec, progress=None) -> Finished:
    """Run every job not yet in `--out` against the server, appending each record as it completes.

    `options` holds out, resume, base_url, model, concurrency, max_tokens, timeout and `identity()`.
    A job the server refuses is counted and named (the run goes on; `--resume` asks again); if every
    job failed the run ends in one line. The log is closed however the run ends, so what finished stays.
    """
    started = time.monotonic()
    log = _open_log(options, spec)
    if log.set_aside and progress is not None:
        progress.console.print(f"note: {log.note()}", highlight=False, soft_wrap=True)
    records = [spec.read(line) for line in log.records]
    done = {spec.key(record) for record in records}
    failures: list[str] = []
    task = progress.add_task(spec.name, total=spec.total * spec.requests_per_job,
                             completed=len(done) * spec.requests_per_job) if progress else None

    def describe() -> None:
        if progress is not None:
            accuracy = spec.accuracy(records)
            shown = "-" if accuracy is None else f"{accuracy:.3f}"
            progress.update(task, description=f"{spec.name}  acc {shown}  failed {len(failures)}")

    def on_done(job, result, failure: RequestFailed | None) -> None:
        if failure is not None:
            failures.append(f"{spec.job_id(job)}: {failure}")
        else:
            record = spec.record(job, result)
            log.append(record.to_json())
            records.append(record)
        describe()

    try:
        async with ChatClient(options.base_url, options.model, options.concurrency, options.max_tokens,
                              options.timeout) as client:
            await client.check()
            if spec.announce is not None and progress is not None:  # said before the first request that costs
                progress.console.print(spec.announce(done), highlight=False, soft_wrap=True)
            describe()
            await run_bounded(spec.jobs(done), lambda job: _work(spec, client, job, progress, task), window=spec.window,
                              on_done=on_done)
    finally:
        log.close()  # and the folder's lock: a caller in the same process may run again
    if failures and not records:
        raise UserError(f"every {spec.unit} failed ({len(failures)}); first: {failures[0]}")
    return Finished(records, failures, log.set_aside, round(time.monotonic() - started, 1))


def write_summary(options, finished: Finished, fields: dict) -> dict:
    """OUT/summary.json: the run's figures, then what every run reports (failures, time, options)."""
    summary = {
        **fields,
        "failed": len(finished.failures),
        "first_failure": finished.failures[0] if finished.failures else None,
        "set_aside": finished.set_aside,
        "seconds": finished.seconds,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
    }
    try:
        options.out.mkdir(parents=True, exist_ok=True)
        (options.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    except OSError as error:
        raise cannot_write(options.out / "summary.json", error) from None
    return summary
