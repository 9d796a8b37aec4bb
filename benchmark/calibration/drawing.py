"""One figure per ladder: every metric against the rung's parameter."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.plotting import pyplot, save_figure


def draw_ladder(values: pd.DataFrame, rungs: pd.DataFrame, ladder: str, path: Path) -> Path:
    """One ladder: every metric against the rung's parameter, one panel per metric, one line per n, bootstrap
    bands."""
    plt = pyplot()
    import seaborn as sns

    part = values[values["ladder"] == ladder].merge(rungs[rungs["ladder"] == ladder][["rung", "value"]],
                                                    on="rung", suffixes=("", "_param"))
    metrics = list(dict.fromkeys(part["metric"]))
    cols = 4
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    palette = dict(zip(sorted(part["n"].unique()), sns.color_palette("viridis", part["n"].nunique())))
    for ax, metric in zip(axes.flat, metrics):
        m = part[part["metric"] == metric]
        for n, g in m.groupby("n"):
            ax.plot(g["value_param"], g["value"], marker="o", ms=3, color=palette[n], label=f"n = {n}")
            ax.fill_between(g["value_param"], g["ci_low"], g["ci_high"], color=palette[n], alpha=0.2, lw=0)
        ax.set_title(metric, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    widest = max(range(len(metrics)), key=lambda i: part[part["metric"] == metrics[i]]["n"].nunique())
    axes.flat[widest].legend(fontsize=7)  # a panel with every n
    param = rungs.loc[rungs["ladder"] == ladder, "parameter"].iloc[0]
    fig.suptitle(f"ladder {ladder}: each metric against the {param} (rung 0: the true counterfactuals); band: 95% "
                 "bootstrap over images", fontsize=9)
    return save_figure(fig, path, dpi=110)
