"""The report's figures, from recorded runs and the task data (the paper's Figures 3-5).

- `samples.png`: per perturbation (one per MoA unless the user names them), a
  real held-out target, the control it started from, and each method's image
  generated from that control; the caption says which stain is which colour.
- `pca.png`: PCA of morphology features of test controls, real targets and
  each method's images, coloured by batch (does a method keep the batch?),
  with each axis's share of the variance.
- the forward / reverse trajectory strips that runs of flow methods drew when they were made.

Everything is a deterministic function of the runs and the data (fixed
choices, no timestamps in the PNGs), so a rerun writes the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark import io
from benchmark.display import display, display_key
from benchmark.errors import BenchmarkError
from benchmark.plotting import pyplot, save_figure
from benchmark.registry import TASKS
from benchmark.store import GENERATED, TRAJECTORIES

N_PERTURBATIONS = 6


def sample_perturbations(data, wanted: list[str] | None = None) -> list[str]:
    """The sample grid's rows: the user's choice, else one perturbation per MoA where the task has MoAs."""
    evaluated = data.eval_perturbations()
    if wanted:
        unknown = [p for p in wanted if p not in evaluated]
        if unknown:
            raise BenchmarkError(f"--sample-perturbations: {unknown[0]!r} is not evaluated in task {data.task.name}; "
                                 f"expected some of {', '.join(evaluated)}")
        return list(wanted)
    if not data.task.moa:
        return evaluated[:N_PERTURBATIONS]
    annot = data.annotations()
    first = {}
    for p in evaluated:
        first.setdefault(annot[p], p)
    return [first[m] for m in sorted(first)]


def samples_figure(data, plan, chosen: dict[str, object], path: Path, perts: list[str]) -> Path:
    plt = pyplot()

    ref = plan.reference.reset_index(drop=True)
    annot = data.annotations()
    cols = ["real target", "control", *chosen]
    fig, axes = plt.subplots(len(perts), len(cols), figsize=(1.3 * len(cols), 1.3 * len(perts)), squeeze=False)
    for i, pert in enumerate(perts):
        k = int(np.flatnonzero(ref["CPD_NAME"].to_numpy() == pert)[0])  # first reference image of the perturbation
        tiles = [data.images[int(ref["row"][k])], data.images[int(plan.requests["control_row"][k])]]
        for run in chosen.values():
            tiles.append(np.load(run.path / GENERATED, mmap_mode="r")[k])
        for j, tile in enumerate(tiles):
            ax = axes[i, j]
            ax.imshow(display(np.asarray(tile)[None])[0], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=7)
            if j == 0:
                moa = f"\n({annot[pert]})" if data.task.moa else ""
                ax.set_ylabel(f"{pert}{moa}", fontsize=6)
    fig.suptitle(f"{data.task.name}: {display_key(data.task.channels)}", fontsize=7)
    return save_figure(fig, path, dpi=100)


def pca_figure(data, plan, chosen: dict[str, object], path: Path) -> Path:
    plt = pyplot()

    from benchmark.metrics.evaluate import view_features
    from benchmark.metrics.features import Morphology
    from benchmark.rows import RowView

    morph = Morphology(data.task.channels)
    features = lambda images, what: view_features(morph, "all", images, what)["all"]  # noqa: E731 (in chunks)
    ctrl_rows = data.rows("test", "control")
    ref_rows = plan.reference["row"].to_numpy()
    groups = {"test controls": (features(RowView(data.images, ctrl_rows), "test controls"),
                                data.obs["BATCH"].to_numpy()[ctrl_rows]),
              "real targets": (features(RowView(data.images, ref_rows), "real targets"),
                               plan.reference["BATCH"].to_numpy())}
    batch_of_request = plan.requests["target_batch"].to_numpy()
    for label, run in chosen.items():
        gen = np.load(run.path / GENERATED, mmap_mode="r")
        groups[label] = (features(gen, f"{label}'s images"), batch_of_request)
    real = np.concatenate([groups["test controls"][0], groups["real targets"][0]])
    mu, sd = real.mean(0), real.std(0) + 1e-6
    _, sing, vt = np.linalg.svd((real - mu) / sd, full_matrices=False)
    basis = vt[:2].T * np.sign(vt[:2, :1].T + 1e-12)  # fixed sign: the same picture on every rerun
    explained = sing[:2] ** 2 / (sing ** 2).sum()
    batches = sorted(set(data.obs["BATCH"]))
    colours = plt.get_cmap("tab10")
    ncols = min(5, len(groups))
    nrows = -(-len(groups) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.6 * nrows), sharex=True, sharey=True, squeeze=False)
    for ax in axes.flat[len(groups):]:
        ax.axis("off")
    for ax, (name, (feats, batch)) in zip(axes.flat, groups.items()):
        z = ((feats - mu) / sd) @ basis
        for b_i, b in enumerate(batches):
            m = batch == b
            ax.scatter(z[m, 0], z[m, 1], s=4, color=colours(b_i % 10), label=b)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel(f"PC1 ({explained[0]:.0%} of variance)", fontsize=7)
        ax.set_ylabel(f"PC2 ({explained[1]:.0%} of variance)", fontsize=7)
    axes.flat[0].legend(fontsize=6, markerscale=2, title="batch", title_fontsize=6)
    return save_figure(fig, path, dpi=100)


def figures(chosen_by_task: dict[str, dict[str, object]], data_dir: Path, out: Path,
            sample_perts: list[str] | None = None) -> tuple[list[Path], list[str]]:
    """All figures for every task whose data is at `data_dir`, from one run per table row; notes say what was
    skipped and why. Trajectory strips are the files the runs drew when they were made, copied."""
    written, notes = [], []
    for task, chosen in sorted(chosen_by_task.items()):
        try:
            data = TASKS.get(task).load(data_dir)
        except BenchmarkError as e:
            notes.append(f"{task}: no figures ({e})")
            continue
        plan = data.eval_plan()
        for label, run in list(chosen.items()):
            if run.manifest.eval_plan_sha256 != plan.digest():
                notes.append(f"{task}: {label} left out of the figures (run {run.manifest.run_id} answers another "
                             "evaluation plan than this data gives)")
                del chosen[label]
        chosen = {k: r for k, r in chosen.items() if (r.path / GENERATED).is_file()}
        d = Path(out) / task
        written.append(samples_figure(data, plan, chosen, d / "samples.png", sample_perturbations(data, sample_perts)))
        written.append(pca_figure(data, plan, chosen, d / "pca.png"))
        for label, run in chosen.items():
            if run.manifest.variant != "default":
                continue
            for strip in sorted((run.path / TRAJECTORIES).glob("*.png")):
                written.append(d / TRAJECTORIES / strip.name)
                io.write_bytes(written[-1], strip.read_bytes())
    return written, notes
