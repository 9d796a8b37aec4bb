"""The report's charts: figures drawn from its tables alone (no images, no model), one atomic `save_figure` each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.plotting import pyplot, save_figure

def draw_shift(table: pd.DataFrame, space: str, task: str, path: Path) -> Path:
    """Heatmap of effect sizes: rows perturbation x feature, columns the real cells then each method."""
    plt = pyplot()

    values = table.drop(columns=["perturbation", "feature"])
    lim = float(np.nanmax(np.abs(values.to_numpy(float)))) if values.size else 1.0
    fig, ax = plt.subplots(figsize=(2 + 0.9 * values.shape[1], 2 + 0.12 * len(table)))
    im = ax.imshow(values.to_numpy(float), aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="none")
    ax.set_xticks(range(values.shape[1]), values.columns, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(table)), [f"{p} | {f}" for p, f in zip(table["perturbation"], table["feature"])],
                  fontsize=4)
    ax.set_title(f"{task}: effect size vs controls (Cohen's d), top features per perturbation [{space}]", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.04, label="Cohen's d")
    return save_figure(fig, path, dpi=150)


def draw_cd(table: pd.DataFrame, title: str, path: Path) -> Path | None:
    """Critical-difference diagram (autorank: Friedman, then Nemenyi) of methods ranked per perturbation, lower is
    better; None where there are fewer than 3 methods or 5 complete perturbations."""
    complete = table.dropna()
    if complete.shape[1] < 3 or len(complete) < 5:
        return None
    import warnings

    pyplot()  # the Agg backend, before autorank imports pyplot
    from autorank import autorank, plot_stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its notes on the choice of test; the test is fixed here
        result = autorank(complete, alpha=0.05, order="ascending", force_mode="nonparametric")
        ax = plot_stats(result, allow_insignificant=True)
    ax.set_title(f"{title}: mean rank over {len(complete)} perturbations (1 = best), Friedman p = {result.pvalue:.2g}, "
                 f"Nemenyi CD = {result.cd:.2f}", fontsize=7)
    return save_figure(ax.figure, path, dpi=150, tight=False, bbox_inches="tight")


def draw_curves(frame: pd.DataFrame, task: str, path: Path) -> Path | None:
    """Validation metrics against images seen and against training time, one colour per method (mean over seeds,
    band: their range), identity and oracle as horizontal lines; None where no run has a curve."""
    curves = frame.dropna(subset=["step"])
    if curves.empty:
        return None
    plt = pyplot()
    import seaborn as sns

    metrics = [m for m in ("val_fd_morph_o", "val_fd_morph_c", "val_paired_rmse") if m in set(curves["metric"])]
    labels = list(dict.fromkeys(curves["label"]))
    palette = dict(zip(labels, sns.color_palette("colorblind", len(labels))))
    lines = frame[frame["step"].isna()].groupby(["label", "metric"])["value"].mean()
    fig, axes = plt.subplots(len(metrics), 2, figsize=(10, 3.2 * len(metrics)), squeeze=False)
    for i, metric in enumerate(metrics):
        data = curves[curves["metric"] == metric]
        for j, (x, xlabel) in enumerate((("images", "training images seen"), ("train_s", "training seconds"))):
            ax = axes[i, j]
            # against images seen the seeds share their x: their mean and range; against time each seed is a line
            spread = dict(estimator="mean", errorbar=("pi", 100)) if x == "images" else dict(units="seed",
                                                                                             estimator=None)
            sns.lineplot(data=data, x=x, y="value", hue="label", palette=palette, marker="o", markersize=4, ax=ax,
                         legend=(i == 0 and j == 0), **spread)
            for (label, m), v in lines.items():
                if m == metric:
                    ax.axhline(v, color="grey", ls="--" if label == "identity" else ":", lw=1)
                    ax.annotate(label, (1, v), xycoords=("axes fraction", "data"), fontsize=7, color="grey",
                                ha="right", va="bottom")
            ax.set_xscale("symlog", linthresh=float(data.loc[data[x] > 0, x].min()) if (data[x] > 0).any() else 1.0)
            if metric.startswith("val_fd"):
                ax.set_yscale("log")  # an untrained model starts orders of magnitude away
            if ax.get_legend() is not None:
                ax.get_legend().set_title("method")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"{metric} (validation)")
    n = frame.groupby("label")["seed"].nunique()
    fig.suptitle(f"{task}: learning curves on the validation split\n(against images: mean over seeds, band: their "
                 f"range; against time: one line per seed; "
                 f"seeds per method: {', '.join(f'{k} {v}' for k, v in n.items())})", fontsize=9)
    return save_figure(fig, path, dpi=120)
