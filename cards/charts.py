"""The charts of a built dataset's figures (`statistics.py`) and of eval and best-of-n runs,
as small PNGs drawn with matplotlib, for the dataset card and `critic-data inspect --plots`.

This module reads no data file and imports neither polars nor matplotlib when imported: the
process that draws a build's card (pipeline.py) imports only what drawing needs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from critic_data import UserError


def figure(panels: int = 1, width: float = 4.8, height: float = 3.2):
    """A matplotlib Figure of `panels` side-by-side axes sharing y (no pyplot: no global state)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("drawing charts (the dataset card's, --plots) needs matplotlib; "
                        "install it with `pip install matplotlib`") from None
    drawing = Figure(figsize=(width * panels, height), layout="constrained")
    return drawing, drawing.subplots(1, panels, sharey=True, squeeze=False)[0]


def save_figure(drawing, path: Path) -> Path:
    """A small PNG whose bytes depend on the figures only (no Software/time metadata)."""
    drawing.savefig(path, format="png", dpi=80, metadata={"Software": None})
    return path


def bin_labels(edges: list[float]) -> list[str]:
    return [f"{lo:g}-{hi:g}" for lo, hi in zip(edges, edges[1:])] + [f"≥{edges[-1]:g}"]


def write_dataset_plots(named: list[tuple[str, dict]], folder: Path, child_setup=None) -> list[Path]:
    """PNG charts of one or two datasets' statistics (side by side): label balance, margin
    histogram, better/worse length ratio by source, and the prompt-token histogram against the
    budget when the statistics hold token counts. Returns the files written.

    With `child_setup` (called in each child with its parent's pid), each chart but the first is
    drawn in a forked child, beside the others: a build's card process, whose cores are idle by
    then. Only where forking is safe: a process without threads (polars' pool)."""
    folder.mkdir(parents=True, exist_ok=True)
    charts = [(folder / name, draw) for name, draw, shown in _CHARTS if shown(named)]
    drawn = [lambda path=path, draw=draw: save_figure(draw(named), path) for path, draw in charts]
    if child_setup is not None and len(drawn) > 1 and sys.platform == "linux":
        _in_children(drawn[1:], then=drawn[0], child_setup=child_setup)
    else:
        for job in drawn:
            job()
    return [path for path, _ in charts]


def _in_children(jobs: list, then, child_setup) -> None:
    """Run each of `jobs` in a forked child while this process runs `then`; a job whose child
    failed runs again here, so that its error is raised as it would be without children."""
    import os

    children = []
    for job in jobs:
        pid = os.fork()
        if pid == 0:  # the child: ends with this process, quietly on Ctrl-C, and never returns
            code = 1
            try:
                child_setup(os.getppid())
                job()
                code = 0
            finally:
                os._exit(code)
        children.append((pid, job))
    then()
    failed = [job for pid, job in children if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0]
    for job in failed:
        job()


def _label_balance(named: list[tuple[str, dict]]):
    # Shares, not counts: two datasets of different sizes compare on one axis.
    drawing, axes = figure(len(named))
    for ax, (name, stats) in zip(axes, named):
        labels = [f"{row['source']}\n{row['split']}\n{row['rows']} rows" for row in stats["rows"]]
        bottom = [0.0] * len(labels)
        for key, label in (("answer_1", 'answer "1"'), ("answer_2", 'answer "2"'), ("ties", "tie")):
            values = [row[key] / row["rows"] for row in stats["rows"]]
            ax.bar(labels, values, bottom=bottom, label=label)
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(f"labels: {name}", fontsize=9)
    axes[0].set_ylabel("share of rows")
    axes[0].legend(fontsize=7)
    return drawing


def _margins(named: list[tuple[str, dict]]):
    drawing, axes = figure(len(named))
    for ax, (name, stats) in zip(axes, named):
        margins = stats["margins"] or {"edges": _margin_edges(), "counts": {}}
        labels = bin_labels(margins["edges"])
        width = 0.8 / max(1, len(margins["counts"]))
        for k, (source, counts) in enumerate(margins["counts"].items()):
            ax.bar([i + (k - (len(margins["counts"]) - 1) / 2) * width for i in range(len(labels))],
                   [c / sum(counts) for c in counts], width=width,
                   label=f"{source} ({sum(counts)} pairs)")
        ax.set_xticks(range(len(labels)), labels, rotation=45, fontsize=7)
        ax.set_title(f"score margin: {name}", fontsize=9)
        if margins["counts"]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no scored source" if stats["margins"] else "no margin in this layout",
                    transform=ax.transAxes, ha="center")
    axes[0].set_ylabel("share of pairs")
    return drawing


def _length_ratio(named: list[tuple[str, dict]]):
    from matplotlib.ticker import FuncFormatter, NullFormatter

    drawing, axes = figure(len(named))
    for ax, (name, stats) in zip(axes, named):
        boxes = []
        for unit, rows in (("chars", stats["length_bias"] or []), ("tokens", stats.get("length_bias_tokens") or [])):
            for row in rows:
                p10, p25, p50, p75, p90 = row["quantiles"]
                boxes.append({"label": f"{row['source']} ({unit})\n{row['better_longer_share']:.0%} longer",
                              "whislo": p10, "q1": p25, "med": p50, "q3": p75, "whishi": p90})
        if boxes:
            ax.bxp(boxes, showfliers=False)
            ax.set_yscale("log", base=2)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(f"better/worse length (box p25-p75, whiskers p10-p90): {name}", fontsize=8)
    axes[0].set_ylabel("length ratio")
    return drawing


def _prompt_tokens(named: list[tuple[str, dict]]):
    drawing, axes = figure(len(named))
    for ax, (name, stats) in zip(axes, named):
        tokens = stats.get("prompt_tokens")
        if not tokens:
            continue
        labels = bin_labels(tokens["edges"])
        histogram_ = tokens["histogram"]
        width = 0.8 / max(1, len(histogram_))
        for k, (split, counts) in enumerate(histogram_.items()):
            ax.bar([i + (k - (len(histogram_) - 1) / 2) * width for i in range(len(labels))], counts, width=width,
                   label=split)
        ax.axvline(len(labels) - 1.5, color="red", linewidth=1)  # the budget: the last bin holds the rows dropped
        ax.set_xticks(range(len(labels)), labels, rotation=60, fontsize=6)
        ax.set_title(f"prompt tokens, budget {tokens['budget']}: {name}", fontsize=9)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("rows")
    return drawing


# (file, how it is drawn, whether the statistics have its figures), in the order they are listed
_CHARTS = (
    ("label_balance.png", _label_balance, lambda named: True),
    ("margins.png", _margins, lambda named: any(stats["margins"] and stats["margins"]["counts"] for _, stats in named)),
    ("length_ratio.png", _length_ratio, lambda named: any(stats["length_bias"] for _, stats in named)),
    ("prompt_tokens.png", _prompt_tokens, lambda named: any(stats.get("prompt_tokens") for _, stats in named)),
)


def _margin_edges() -> list[float]:
    """The margin bins, for a dataset without margins drawn beside one with them (`inspect`
    comparing two folders, where the statistics module is loaded already)."""
    from critic_data.cards.statistics import MARGIN_EDGES

    return MARGIN_EDGES
