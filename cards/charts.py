"""The charts of a built dataset's figures (`statistics.py`) and of eval and best-of-n runs,
as PNGs drawn with matplotlib, for the dataset card and `critic-data inspect --plots`.

Charts are published (the card, a README), so each is at least 800 px wide, has labelled axes,
and keeps its legend outside the bars; text is drawn as written (`plain_text`).

This module reads no data file and imports neither polars nor matplotlib when imported: the
process that draws a build's card (pipeline.py) imports only what drawing needs.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

from critic_data import UserError

FONT = "DejaVu Sans"  # shipped with matplotlib: the same glyphs wherever it is installed


@contextmanager
def plain_text(shown: str):
    """Draw charts inside this: text is drawn as written (a folder named `a$b$c` is no mathtext,
    whatever a matplotlibrc says), the characters of `shown` that FONT lacks come from an installed
    font that has them, and one that no font has is drawn as matplotlib's placeholder box without
    a warning: the chart is still right, and a warning per glyph would bury the report."""
    import warnings

    try:
        from matplotlib import style
    except ImportError:
        raise UserError("drawing charts (the dataset card's, --plots) needs matplotlib; "
                        "install it with `pip install matplotlib`") from None
    settings = {"text.parse_math": False, "text.usetex": False, "font.family": fonts_for(shown)}
    with style.context(["default", settings]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")
        yield


def fonts_for(shown: str) -> list[str]:
    """FONT, then (by name) installed fonts that have the characters of `shown` FONT lacks."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    first = FT2Font(font_manager.findfont(FONT))
    missing = {ord(c) for c in shown if not first.get_char_index(ord(c))}
    families = [FONT]
    regular = (f for f in font_manager.fontManager.ttflist if f.style == "normal" and f.weight == 400)
    for font in sorted(regular, key=lambda f: (f.name, f.fname)):
        if not missing:
            break
        if Path(font.fname).name.startswith("LastResort") or font.name in families:
            continue  # matplotlib's placeholder font: the fallback after every family named here
        try:
            candidate = FT2Font(font.fname)
        except (OSError, RuntimeError):  # a font file FreeType cannot read
            continue
        covered = {c for c in missing if candidate.get_char_index(c)}
        if covered:
            families.append(font.name)
            missing -= covered
    return families


def figure(panels: int = 1, title: str = ""):
    """A matplotlib Figure titled `title` of `panels` side-by-side axes sharing y (no pyplot: no
    global state), at least 800 px wide as saved."""
    from matplotlib.figure import Figure

    drawing = Figure(figsize=(8.5 + 5.5 * (panels - 1), 4.8), layout="constrained")
    if title:
        drawing.suptitle(title)
    return drawing, drawing.subplots(1, panels, sharey=True, squeeze=False)[0]


def save_figure(drawing, path: Path) -> Path:
    """A PNG whose bytes depend on the figures only (no Software/time metadata)."""
    drawing.savefig(path, format="png", dpi=100, metadata={"Software": None})
    return path


def legend_outside(ax) -> None:
    """The legend of what `ax` drew, right of it: it covers no bar. None when nothing is labelled."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=9)


def bin_labels(edges: list[float]) -> list[str]:
    return [f"{lo:g}-{hi:g}" for lo, hi in zip(edges, edges[1:])] + [f"≥{edges[-1]:g}"]


def write_dataset_plots(named: list[tuple[str, dict]], folder: Path) -> list[Path]:
    """PNG charts of one or two datasets' statistics (side by side, each panel titled by its
    name): label balance, margin histogram, better/worse length ratio by source, and the
    prompt-token histogram against the budget when the statistics hold token counts. Returns the
    files written."""
    folder.mkdir(parents=True, exist_ok=True)
    charts = [(folder / name, draw) for name, draw, shown in _CHARTS if shown(named)]
    words = [name for name, _ in named] + [f"{row['source']} {row['split']}" for _, stats in named
                                           for row in stats["rows"]]
    with plain_text(" ".join(words)):
        for path, draw in charts:
            save_figure(draw(named), path)
    return [path for path, _ in charts]


def _label_balance(named: list[tuple[str, dict]]):
    # Shares, not counts: two datasets of different sizes compare on one axis.
    drawing, axes = figure(len(named), 'Label balance: share of rows answering "1", "2" or tie')
    for ax, (name, stats) in zip(axes, named):
        labels = [f"{row['source']}\n{row['split']}\n{row['rows']} rows" for row in stats["rows"]]
        bottom = [0.0] * len(labels)
        for key, label in (("answer_1", 'answer "1"'), ("answer_2", 'answer "2"'), ("ties", "tie")):
            values = [row[key] / row["rows"] for row in stats["rows"]]
            if any(values):  # the legend lists only what is drawn
                ax.bar(labels, values, bottom=bottom, label=label)
                bottom = [b + v for b, v in zip(bottom, values)]
        ax.axhline(0.5, color="grey", linewidth=0.8, linestyle="--", label="half")
        ax.set_ylim(0, 1)
        ax.set_xlabel("source, split, rows")
        ax.set_title(name)
        legend_outside(ax)
    axes[0].set_ylabel("share of rows")
    return drawing


def _margins(named: list[tuple[str, dict]]):
    drawing, axes = figure(len(named), "Score margin of the kept pairs (better minus worse rating)")
    for ax, (name, stats) in zip(axes, named):
        margins = stats["margins"] or {"edges": _margin_edges(), "counts": {}}
        labels = bin_labels(margins["edges"])
        width = 0.8 / max(1, len(margins["counts"]))
        for k, (source, counts) in enumerate(margins["counts"].items()):
            ax.bar([i + (k - (len(margins["counts"]) - 1) / 2) * width for i in range(len(labels))],
                   [c / sum(counts) for c in counts], width=width,
                   label=f"{source} ({sum(counts)} pairs)")
        ax.set_xticks(range(len(labels)), labels, rotation=45)
        ax.set_xlabel("score margin")
        ax.set_title(name)
        if not margins["counts"]:
            ax.text(0.5, 0.5, "no scored source" if stats["margins"] else "no margin in this layout",
                    transform=ax.transAxes, ha="center")
        legend_outside(ax)
    axes[0].set_ylabel("share of pairs")
    return drawing


def _length_ratio(named: list[tuple[str, dict]]):
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    drawing, axes = figure(len(named), "Length of the better response over the worse one "
                                       "(box p25-p75, whiskers p10-p90)")
    boxes_of = [[{"label": f"{row['source']} ({unit})\n{row['better_longer_share']:.0%} longer",
                  **dict(zip(("whislo", "q1", "med", "q3", "whishi"), row["quantiles"]))}
                 for unit, rows in (("chars", stats["length_bias"] or []),
                                    ("tokens", stats.get("length_bias_tokens") or []))
                 for row in rows] for _, stats in named]
    # One log axis for all panels, spanning at least 1/2 to 2 (an empty response's ratio, 0 or
    # infinite, is left out of the span), ticked at powers of two and 1.5 times them: 0.5, 0.75,
    # 1, 1.5, 2, ... several readable ratios on either side of 1.
    ends = [v for boxes in boxes_of for box in boxes for v in (box["whislo"], box["whishi"]) if 0 < v < math.inf]
    axes[0].set_yscale("log", base=2)
    axes[0].set_ylim(min([*ends, 0.5]) / 1.1, max([*ends, 2.0]) * 1.1)
    axes[0].yaxis.set_major_locator(LogLocator(base=2, subs=(1.0, 1.5)))
    axes[0].yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes[0].yaxis.set_minor_locator(NullLocator())
    for ax, (name, _), boxes in zip(axes, named, boxes_of):
        if boxes:
            ax.bxp(boxes, showfliers=False)
        else:
            ax.text(0.5, 0.5, "no length bias in this layout", transform=ax.transAxes, ha="center")
            ax.set_xticks([])
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--", label="equal length")
        ax.set_xlabel("source (unit), share of pairs whose better response is longer")
        ax.set_title(name)
        legend_outside(ax)
    axes[0].set_ylabel("length ratio better / worse (log scale)")
    return drawing


def _prompt_tokens(named: list[tuple[str, dict]]):
    drawing, axes = figure(len(named), "Prompt tokens as the trainer counts them")
    for ax, (name, stats) in zip(axes, named):
        ax.set_title(name)
        ax.set_xlabel("prompt tokens")
        tokens = stats.get("prompt_tokens")
        if not tokens:
            ax.text(0.5, 0.5, "not counted", transform=ax.transAxes, ha="center")
            ax.set_xticks([])
            continue
        labels = bin_labels(tokens["edges"])
        histogram_ = tokens["histogram"]
        width = 0.8 / max(1, len(histogram_))
        for k, (split, counts) in enumerate(histogram_.items()):
            ax.bar([i + (k - (len(histogram_) - 1) / 2) * width for i in range(len(labels))], counts, width=width,
                   label=split)
        # the budget: the last bin holds the rows it drops
        ax.axvline(len(labels) - 1.5, color="red", linewidth=1, label=f"budget {tokens['budget']}")
        ax.set_xticks(range(len(labels)), labels, rotation=60, fontsize=8)
        legend_outside(ax)
    axes[0].set_ylabel("rows")
    return drawing


def eval_chart(report: dict):
    """An eval run's accuracy per category against chance (with its 95% interval where the
    report has one), and its position bias: how often the verdict is "1" or "2" against the truth."""
    drawing, (accuracy, bias) = figure(2, f"{Path(report['folder']).name}: {report['benchmark'] or 'eval'}")
    rows = report["categories"]
    names = [f"{r['category']}\nn={r['judgements']}" for r in rows]
    values = [100 * r["accuracy"] for r in rows]
    accuracy.bar(range(len(rows)), values, label="accuracy")
    intervals = [r.get("accuracy_ci95") for r in rows]
    if all(intervals):
        below = [max(0.0, value - 100 * low) for value, (low, _) in zip(values, intervals)]
        above = [max(0.0, 100 * high - value) for value, (_, high) in zip(values, intervals)]
        accuracy.errorbar(range(len(rows)), values, yerr=[below, above], fmt="none", ecolor="black", capsize=4,
                          label="95% interval")
    accuracy.axhline(50, color="grey", linewidth=1, linestyle="--", label="chance (50%)")
    accuracy.set_title("accuracy per category")
    width = 0.2
    for k, (key, label) in enumerate((("said_1", 'said "1"'), ("truth_1", 'truth "1"'),
                                      ("said_2", 'said "2"'), ("truth_2", 'truth "2"'))):
        bias.bar([i + (k - 1.5) * width for i in range(len(rows))], [100 * r[key] for r in rows], width=width,
                 label=label)
    bias.set_title("position bias: verdicts against the truth")
    for ax in (accuracy, bias):
        ax.set_xticks(range(len(rows)), names)
        ax.set_xlabel("category, judgements")
        legend_outside(ax)
    accuracy.set_ylim(0, 100)
    accuracy.set_ylabel("% of judgements")
    return drawing


def best_of_n_chart(report: dict):
    """A best-of-n run's accuracy against N (with its 95% interval where the report has one),
    beside the majority vote's and any candidate's at the run's N."""
    drawing, (ax,) = figure(1, f"{Path(report['folder']).name}: best-of-{report['n']} ({report['strategy']}), "
                               f"{report['answered']} questions with an answer")
    curve = report["curve"]
    sizes, values = [p["n"] for p in curve], [100 * p["accuracy"] for p in curve]
    ax.plot(sizes, values, marker="o", label=f"{report['strategy']} pick")
    if all(p.get("accuracy_ci95") for p in curve):
        ax.fill_between(sizes, [100 * p["accuracy_ci95"][0] for p in curve],
                        [100 * p["accuracy_ci95"][1] for p in curve], alpha=0.2, label="95% interval")
    for key, style in (("majority_vote", ":"), ("any_candidate", "--")):
        ax.axhline(100 * report["accuracy"][key], linestyle=style, color="grey", linewidth=1,
                   label=f"{key.replace('_', ' ')} (N={report['n']})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.minorticks_off()
    ax.set_ylim(0, 105)  # 100% stays clear of the frame
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlabel("N (candidates)")
    ax.set_ylabel("accuracy %")
    legend_outside(ax)
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
