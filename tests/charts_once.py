"""Each distinct chart drawn once a test run: the suite's builds and pushes draw the card's charts of
the same few datasets hundreds of times (a sixth of the suite's CPU), and a chart is a function of
its figures alone (the byte-identity tests hold it to that).

`remember_charts(folder)` wraps `charts.write_dataset_plots` in this process and the processes it
forks (a build's card process): the first call with given figures draws them with the real
function and keeps the PNGs in `folder`, keyed by the figures' repr; a later call with the same
figures, in any process of the run, copies those bytes. Figures never drawn before are always
drawn, so every card the suite builds is still drawn by the real code once. The tests about
drawing itself use `charts_drawn` (tests/conftest.py), which draws every time.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path


def drawing_function():
    """`charts.write_dataset_plots` itself, whether or not `remember_charts` has wrapped it."""
    from critic_data.cards import charts

    return getattr(charts.write_dataset_plots, "__wrapped__", charts.write_dataset_plots)


def remember_charts(folder: Path) -> None:
    from critic_data.cards import charts

    draw = drawing_function()  # never a wrapper's wrapper

    def write_dataset_plots(named: list[tuple[str, dict]], out: Path) -> list[Path]:
        kept = folder / hashlib.sha256(repr(named).encode()).hexdigest()
        if not kept.is_dir():
            drawn = draw(named, out)
            _keep(drawn, kept)
            return drawn
        out.mkdir(parents=True, exist_ok=True)
        names = (kept / "charts").read_text().split()
        return [Path(shutil.copyfile(kept / name, out / name)) for name in names]

    write_dataset_plots.__wrapped__ = draw
    charts.write_dataset_plots = write_dataset_plots


def _keep(drawn: list[Path], kept: Path) -> None:
    """The charts just drawn, under `kept`, whole or not at all (another process may keep them first)."""
    kept.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=kept.parent, prefix=".drawing-"))
    for path in drawn:
        shutil.copyfile(path, scratch / path.name)
    (scratch / "charts").write_text("\n".join(path.name for path in drawn))
    try:
        scratch.rename(kept)
    except OSError:  # kept by another process meanwhile: the same bytes
        shutil.rmtree(scratch, ignore_errors=True)
