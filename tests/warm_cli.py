"""A warm start for `critic-data` in the tests: a process that has imported the libraries every
command imports (numpy, pyarrow, polars, pillow, matplotlib, typer, rich, openai: 0.3-1 s a start;
and MathRuler's grader, with sympy, that eval, best-of-n and difficulty read verdicts with: 0.5 s)
forks a child per command, and the child runs `python -m critic_data.cli ARGS` in the caller's
folder and environment, its stdout and stderr in files. The command's code path is the one a user's
process takes from its first line; only those imports are already done.

Not preloaded, because they read the environment when imported (HF_ENDPOINT, HF_HOME, offline
switches) and the tests set it per command: huggingface_hub, datasets, transformers, torch, trl;
nor any critic_data module. `tests.cli.run_cli` starts one per pytest process and uses it unless the
command's start-up is what a test is about (a PYTHON* variable, `fresh=True`).

Run as `python -m tests.warm_cli PYCACHE_FOLDER` (where the children's bytecode goes under
PYTHONDONTWRITEBYTECODE). Protocol, JSON lines: the warm process says {"ready"} once it has imported;
then the caller sends {args, env, cwd, stdout, stderr, charts} (charts: the folder of the run's drawn
charts, tests/charts_once.py, or null) and the warm process answers {"pid"} once the child runs and
{"status"} (as subprocess's returncode) when it has ended.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import runpy
import signal
import sys
import threading
from pathlib import Path

from tests.charts_once import remember_charts

PRELOADED = ("numpy", "pyarrow", "pyarrow.parquet", "pyarrow.compute", "polars", "PIL.Image", "matplotlib",
             "matplotlib.figure", "matplotlib.backends.backend_agg", "pandas", "typer", "rich.console",
             "rich.progress", "rich.table", "openai", "httpx2", "tenacity", "jinja2", "xxhash", "simplejpeg", "yaml",
             "mathruler.grader")


def _serve() -> dict:
    """Fork a child per request; return the request in the child, exit in the warm process when the
    caller closes its end. This process only imports: one that has run polars (its thread pool) or
    started threads cannot fork safely."""
    for name in PRELOADED:
        __import__(name)
    _draw_once()
    gc.freeze()  # the children need not scan, nor copy, what this process holds
    if sys.dont_write_bytecode:
        # PYTHONDONTWRITEBYTECODE is set (`make test` unsets it): what the children import is compiled
        # once into the caller's folder, not once a command. Otherwise they use and write __pycache__,
        # where the test processes have already compiled most of it.
        sys.pycache_prefix, sys.dont_write_bytecode = sys.argv[1], False
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    answers.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            answers.close()
            return request
        answers.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        answers.write(json.dumps({"status": os.waitstatus_to_exitcode(status)}) + "\n")
    sys.exit(0)


def _draw_once() -> None:
    """Draw and save one chart as the cards do (constrained layout, text, a legend, a PNG): what
    matplotlib loads and caches on its first chart (fonts, the PNG writer) is then shared by every
    child, 0.1 s of each command that draws. Its state after it is the default style's, as before."""
    import io

    from matplotlib import style
    from matplotlib.figure import Figure

    with style.context("default"):
        drawing = Figure(figsize=(4, 3), layout="constrained")
        ax = drawing.subplots()
        ax.bar(["a", "b"], [1, 2], label="bars")
        ax.set_yscale("log", base=2)
        ax.set_title("warm-up")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
        drawing.savefig(io.BytesIO(), format="png", dpi=50)


def _become(request: dict) -> None:
    """In the child: the caller's folder, environment and arguments; stdin empty, stdout and stderr
    the caller's files."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY),
                            (2, request["stderr"], os.O_WRONLY)):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own stdin, for its life
    sys.argv = ["critic-data", *request["args"]]
    if request.get("charts"):
        remember_charts(Path(request["charts"]))


def _run_cli() -> int:
    """`python -m critic_data.cli` in this process: its exit status as the interpreter would give it."""
    try:
        runpy.run_module("critic_data.cli", run_name="__main__", alter_sys=True)
        return 0
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    except BaseException as error:  # noqa: BLE001 - what the interpreter does with an uncaught exception
        sys.excepthook(*sys.exc_info())
        return -signal.SIGINT if isinstance(error, KeyboardInterrupt) else 1


def _exit(status: int) -> None:
    """End as the interpreter ends a process (its threads joined, atexit handlers run, output flushed),
    less the teardown of the modules imported before the fork: a tenth of a second a command, which a
    fresh process spends only on the modules the command imports."""
    threading._shutdown()  # what Py_FinalizeEx calls first: wait for the non-daemon threads
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    if status == -signal.SIGINT:  # an uncaught Ctrl-C ends the process by the signal itself
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(status)


if __name__ == "__main__":
    _become(_serve())
    _exit(_run_cli())
