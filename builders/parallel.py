"""Running the prepare step on a source's parts, in worker processes, in input order.

Parts (parquet row groups, JSON Lines parts) are read and prepared by `--num-proc` worker
processes, a few parts ahead of the ordered step, so memory stays bounded by the parts in
flight; their tables come back as Arrow files in a scratch folder (see `Chunk.spill`). A
source that is one sequential part is prepared in this process.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from critic_data import UserError
from critic_data.builders.options import BuildOptions
from critic_data.builders.prepare import Chunk, prepare
from critic_data.builders.readers import SourceReader


def prepared_chunks(reader: SourceReader, options: BuildOptions, scratch: Path) -> Iterator[Chunk]:
    """Every row of a source as prepared chunks, in input order."""
    parts = list(reader.parts)
    # no more workers than parts: the others would never get work, and Python forks every worker
    # it is asked for at once (--num-proc 10000 would start 10000 processes; past 2**31, crash)
    num_proc = min(options.num_proc, len(parts))
    if num_proc <= 1 or len(parts) <= 1:
        for part in parts:
            for batch in reader.read_part(part):
                yield prepare(batch, options)
        return
    with ProcessPoolExecutor(num_proc, initializer=worker_started, initargs=(os.getpid(),)) as pool:
        in_flight: deque = deque()
        try:
            for number, part in enumerate(parts):
                in_flight.append(pool.submit(_prepare_part, reader, part, options, scratch / f"part-{number:07d}"))
                if len(in_flight) > 2 * num_proc:
                    yield from in_flight.popleft().result()
            while in_flight:
                yield from in_flight.popleft().result()
        except BrokenProcessPool:
            raise UserError(ended_unexpectedly("a worker process")) from None
        except BaseException:  # Ctrl-C, or an error: the parts not started yet are not run
            pool.shutdown(cancel_futures=True)
            raise


def worker_started(build_pid: int) -> None:
    """Set-up of a build's worker process. Ctrl-C ends it at once and quietly (Python's handler
    would print a traceback from each worker): the build's process is the one that says so. And
    it ends with the build's process, however that ends: killed, it would wait for work forever."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    # forked by the build's process itself (not by a forkserver, Python 3.14's default), on Linux
    if sys.platform == "linux" and multiprocessing.get_start_method() == "fork":
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: SIGTERM when the parent ends
        if os.getppid() != build_pid:  # it ended before that was set
            os._exit(1)


def ended_unexpectedly(what: str) -> str:
    return (f"{what} of the build ended unexpectedly (killed, or out of memory?); --out is as it was: run the "
            "build again, with a lower --num-proc if memory is short")


def _prepare_part(reader: SourceReader, part, options: BuildOptions, stem: Path) -> list[Chunk]:
    """The unit of work of a worker process: one part, its tables handed over as files."""
    chunks = [prepare(batch, options) for batch in reader.read_part(part)]
    for number, chunk in enumerate(chunks):
        chunk.spill(stem.with_name(f"{stem.name}-{number:04d}.arrow"))
    return chunks
