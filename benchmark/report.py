"""Aggregate every recorded run into leaderboards and paper-shaped tables.

Reads the run store only; writes into a results directory (`reports/` unless
the user names another: the committed reference `results/` is rewritten only
when asked for by name) `leaderboard.csv` (long format, one
row per task x method x variant x metric x feature space x perturbation, mean
and spread over seeds) and, per task, Table 1a (FID_o, FID_c, KID_o, KID_c) and
Table 1b (per-perturbation FID) as Markdown and CSV. Output is a pure function
of the runs: rerunning on the same runs gives byte-identical files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark import io
from benchmark.errors import BenchmarkError
from benchmark.external import EXTERNAL
from benchmark.markdown import to_markdown
from benchmark.metrics.stats import friedman, paired_comparison, t_half_width
from benchmark.plotting import pyplot, save_figure
from benchmark.store import RunStore

KEYS = ["task", "method", "variant", "config", "metric", "feature_space", "perturbation", "extractor_sha256"]
TABLE1A = [("fid_o", "FID_o", 1.0), ("fid_c", "FID_c", 1.0), ("kid_o", "KID_o x100", 100.0), ("kid_c", "KID_c x100", 100.0)]
PAIRED = [("paired_rmse", "pixels", "paired RMSE"), ("paired_morph", "morphology", "paired morph. dist.")]


def leaderboard(runs) -> pd.DataFrame:
    frames = []
    for r in runs:
        m = r.metrics()
        m["git_sha"] = r.manifest.git_sha
        m["split_hash"] = r.manifest.split_hash
        # runs of one method with different settings are different rows, never "seeds" of one
        m["config"] = r.manifest.config_hash
        frames.append(m)
    if not frames:
        raise BenchmarkError("no completed runs found; run `python -m benchmark run --method M --task T` first")
    df = pd.concat(frames, ignore_index=True)
    df["extractor_sha256"] = df["extractor_sha256"].fillna("").astype(str).str[:16]
    _one_extractor_per_space(df)
    agg = df.groupby(KEYS, sort=True).agg(
        value=("value", "mean"),
        seed_std=("value", lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")),
        seed_ci95=("value", t_half_width),
        ci_low=("ci_low", "mean"),
        ci_high=("ci_high", "mean"),
        n_seeds=("seed", "nunique"),
        seeds=("seed", lambda s: ",".join(map(str, sorted(set(s))))),
        n_gen=("n_gen", "min"),
        n_real=("n_real", "min"),
        channel_rule=("channel_rule", lambda s: ",".join(sorted(set(map(str, s))))),
        split_hash=("split_hash", lambda s: ",".join(sorted(set(str(x)[:16] for x in s)))),
        git_sha=("git_sha", lambda s: ",".join(sorted(set(str(x)[:12] for x in s)))),
        runs=("run_id", lambda s: len(set(s))),
    ).reset_index()
    # rows as the methods declare (the paper's order: floor, baselines, ours, ceiling), then alphabetically
    order = {r.manifest.method: r.manifest.display_order for r in runs}
    agg["_order"] = agg["method"].map(order).fillna(5)
    agg = agg.sort_values(["task", "_order", "method", "variant", "config", "feature_space", "metric", "perturbation"]).drop(columns="_order")
    n_configs = agg.groupby(["task", "method", "variant"])["config"].transform("nunique")
    agg["label"] = [_label(m, v) + (f" [{c}]" if k > 1 else "") for m, v, c, k in
                    zip(agg["method"], agg["variant"], agg["config"], n_configs)]
    return agg.reset_index(drop=True)


def _one_extractor_per_space(df: pd.DataFrame) -> None:
    """Numbers of one task and feature space are compared across seeds and methods, which only means something when
    one set of weights produced them all (an MoA classifier retrained on another CPU differs, and so do its
    accuracies): refuse a mix rather than average or set side by side values from different extractors."""
    first = df.drop_duplicates(["task", "feature_space", "extractor_sha256"])
    mixed = first[first.duplicated(["task", "feature_space"], keep=False)]
    if len(mixed):
        a, b = mixed.iloc[0], mixed.iloc[1]
        raise BenchmarkError(
            f"runs {a['run_id']} and {b['run_id']} score task {a['task']!r} in feature space {a['feature_space']!r} "
            f"with different weights (sha256 {a['extractor_sha256']} and {b['extractor_sha256']}); their numbers "
            "are not comparable: report them from separate --runs folders")


def _fmt(v: float, sd: float, n: int, lo: float = np.nan, hi: float = np.nan) -> str:
    """Mean ± seed interval over several seeds; value [bootstrap interval] for one."""
    if pd.isna(v):
        return "-"
    num = (lambda x: f"{x:.2f}") if abs(v) >= 1 else (lambda x: f"{x:.4f}")
    s = num(v)
    if n > 1 and not pd.isna(sd):
        s += f" ± {sd:.2f}" if abs(sd) >= 0.1 else f" ± {sd:.3f}"
    elif n == 1 and not (pd.isna(lo) or pd.isna(hi)):
        s += f" [{num(lo)}, {num(hi)}]"
    return s


def _label(method: str, variant: str) -> str:
    if method == EXTERNAL:  # images made elsewhere: the name they were scored under
        return f"{variant} (scored from images)"
    return method if variant in ("", "default") else f"{method} ({variant})"


def table1a(lb: pd.DataFrame, task: str, training: pd.DataFrame | None = None
            ) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Numeric and formatted Table 1a for one task (one column block per feature space), with each trained row's
    compute and convergence (`training_table`) where given."""
    t = lb[(lb["task"] == task) & (lb["perturbation"] == "")]
    spaces = [s for s in ("inception", "morphology") if s in set(t["feature_space"])] + sorted(
        {f for f in set(t["feature_space"]) - {"inception", "morphology", "pixels"} if not f.startswith("moa")})
    rows_num, rows_fmt, notes = [], [], []
    for label in dict.fromkeys(t["label"]):
        sub = t[t["label"] == label]
        num, fmt = {"method": label}, {"method": label}
        for space in spaces:
            for key, col, scale in TABLE1A:
                hit = sub[(sub["metric"] == key) & (sub["feature_space"] == space)]
                name = f"{col} [{space}]"
                if len(hit):
                    h = hit.iloc[0]
                    num[name] = h["value"] * scale
                    fmt[name] = _fmt(h["value"] * scale, h["seed_ci95"] * scale, int(h["n_seeds"]),
                                     h["ci_low"] * scale, h["ci_high"] * scale)
                else:
                    num[name], fmt[name] = np.nan, "-"
        for key, space, col in PAIRED:
            hit = sub[(sub["metric"] == key) & (sub["feature_space"] == space)]
            if len(hit):
                h = hit.iloc[0]
                num[col], fmt[col] = h["value"], _fmt(h["value"], h["seed_ci95"], int(h["n_seeds"]), h["ci_low"], h["ci_high"])
        seeds = sub["n_seeds"].max()
        num["n_seeds"] = fmt["n_seeds"] = int(seeds)
        if training is not None and not training.empty:
            hit = training[training["method"] == label]
            for col in ("images seen", "train min", "device", "val change, last quarter", "converged"):
                v = hit[col].iloc[0] if len(hit) else np.nan
                num[col] = v
                if isinstance(v, str) or pd.isna(v):
                    fmt[col] = "-" if pd.isna(v) else v
                else:
                    fmt[col] = {"train min": f"{v:.1f}", "val change, last quarter": f"{v:+.1%}"}.get(col, f"{v:.0f}")
        rows_num.append(num)
        rows_fmt.append(fmt)
    for space in spaces:
        s = t[t["feature_space"] == space]
        o = s[s["metric"] == "fid_o"]
        c = s[s["metric"] == "fid_c"]
        notes.append(f"{space}: weights sha256 {','.join(sorted(set(s['extractor_sha256'])))}; channel rule "
                     f"{','.join(sorted(set(s['channel_rule'])))}; n per side overall {int(o['n_real'].min()) if len(o) else '-'} real / "
                     f"{int(o['n_gen'].min()) if len(o) else '-'} generated; per perturbation >= {int(c['n_real'].min()) if len(c) else '-'}")
    notes.append(f"split hash {','.join(sorted(set(t['split_hash'])))}; code {','.join(sorted(set(t['git_sha'])))}")
    return pd.DataFrame(rows_num), pd.DataFrame(rows_fmt), notes


def table1b(lb: pd.DataFrame, task: str, space: str) -> pd.DataFrame:
    """Per-perturbation FID, methods as columns (the paper's Table 1b / Table 4)."""
    t = lb[(lb["task"] == task) & (lb["metric"] == "fid") & (lb["feature_space"] == space)]
    if t.empty:
        return pd.DataFrame()
    cols = list(dict.fromkeys(t["label"]))
    wide = t.pivot_table(index="perturbation", columns="label", values="value", aggfunc="first")[cols]
    n = t.groupby("perturbation")["n_real"].min()
    wide.insert(0, "n_real", n)
    return wide.reset_index()


PRDC = ("precision", "recall", "density", "coverage")


def table_prdc(lb: pd.DataFrame, task: str) -> pd.DataFrame:
    """Precision, recall, density, coverage of all generated against all reference features, per feature space."""
    t = lb[(lb["task"] == task) & lb["metric"].isin(PRDC) & (lb["perturbation"] == "")]
    if t.empty:
        return pd.DataFrame()
    t = t.assign(column=[f"{m} [{s}]" for m, s in zip(t["metric"], t["feature_space"])])
    cols = [f"{m} [{s}]" for s in sorted(set(t["feature_space"])) for m in PRDC]
    wide = t.pivot_table(index="label", columns="column", values="value", aggfunc="first")
    wide = wide.reindex(index=list(dict.fromkeys(t["label"])), columns=[c for c in cols if c in wide.columns])
    n = t.groupby("label")["n_gen"].min()
    wide.insert(0, "n_gen", n)
    return wide.reset_index().rename(columns={"label": "method"})


MAP = [("map_activity", "activity mAP"), ("map_active_frac", "share active"), ("map_retrieval", "retrieval mAP")]


def table_map(lb: pd.DataFrame, task: str) -> pd.DataFrame:
    """Phenotypic activity and retrieval (copairs mAP) per method and feature space, and the real cells' activity
    against the same controls as the last row (it does not depend on the method)."""
    t = lb[(lb["task"] == task) & (lb["perturbation"] == "") & lb["metric"].str.startswith("map_")]
    if t.empty:
        return pd.DataFrame()
    spaces = sorted(set(t["feature_space"]))
    rows = []
    for label in dict.fromkeys(t["label"]):
        m = t[t["label"] == label].set_index(["metric", "feature_space"])["value"]
        rows.append({"method": label, **{f"{name} [{sp}]": m.get((metric, sp), float("nan"))
                                         for sp in spaces for metric, name in MAP}})
    real = t.drop_duplicates(["metric", "feature_space"]).set_index(["metric", "feature_space"])["value"]
    rows.append({"method": "real held-out images", **{
        f"{name} [{sp}]": real.get((metric + "_real", sp), float("nan")) if metric != "map_retrieval"
        else float("nan") for sp in spaces for metric, name in MAP}})
    return pd.DataFrame(rows)


def table_map_per_perturbation(lb: pd.DataFrame, task: str, space: str) -> pd.DataFrame:
    """Activity mAP per perturbation, methods as columns and the real cells' last."""
    t = lb[(lb["task"] == task) & (lb["feature_space"] == space) & (lb["perturbation"] != "")]
    gen = t[t["metric"] == "map_activity"]
    if gen.empty:
        return pd.DataFrame()
    wide = gen.pivot_table(index="perturbation", columns="label", values="value", aggfunc="first")
    wide = wide[list(dict.fromkeys(gen["label"]))]
    wide["real"] = t[t["metric"] == "map_activity_real"].groupby("perturbation")["value"].first()
    return wide.reset_index()


def table_shift(lb: pd.DataFrame, task: str) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Feature shifts: per method and feature space, the correlation of effect sizes (generated vs real, over each
    perturbation's top features) and the share with the right sign; and per space, the effect sizes themselves
    (perturbation x feature rows; the real cells' and each method's)."""
    t = lb[lb["task"] == task]
    summary = t[t["metric"].isin(["shift_corr", "shift_sign"]) & (t["perturbation"] == "")]
    if summary.empty:
        return pd.DataFrame(), {}
    names = {"shift_corr": "effect correlation", "shift_sign": "same direction"}
    summary = summary.assign(column=[f"{names[m]} [{sp}]" for m, sp in zip(summary["metric"], summary["feature_space"])])
    wide = summary.pivot_table(index="label", columns="column", values="value", aggfunc="first")
    wide = wide.reindex(index=list(dict.fromkeys(summary["label"])),
                        columns=sorted(wide.columns, key=lambda c: (c.split("[")[1], c))).reset_index()
    detail = {}
    for space in sorted(set(summary["feature_space"])):
        e = t[(t["feature_space"] == space) & t["metric"].str.startswith("effect_")]
        e = e.assign(feature=e["metric"].str.split(":", n=1).str[1], side=e["metric"].str.split(":", n=1).str[0])
        real = e[e["side"] == "effect_real"].drop_duplicates(["perturbation", "feature"])
        table = real.set_index(["perturbation", "feature"])[["value"]].rename(columns={"value": "real"})
        gen = e[e["side"] == "effect_gen"]
        for label in dict.fromkeys(gen["label"]):
            table[label] = gen[gen["label"] == label].set_index(["perturbation", "feature"])["value"]
        detail[space] = table.reset_index()
    return wide.rename(columns={"label": "method"}), detail


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


PER_PERTURBATION = [("fid", "FID"), ("kid", "KID")]  # metrics scored per perturbation (lower is better)


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


def comparisons(lb: pd.DataFrame, task: str) -> tuple[pd.DataFrame, list[str]]:
    """Every pair of methods on each per-perturbation metric and feature space of a task: Wilcoxon signed-rank over
    perturbations, Holm-corrected over the whole table; and a Friedman test per metric (do the methods differ at
    all?)."""
    t = lb[(lb["task"] == task) & (lb["perturbation"] != "")]
    wide, notes = {}, []
    for metric, name in PER_PERTURBATION:
        for space in sorted(set(t[t["metric"] == metric]["feature_space"])):
            m = t[(t["metric"] == metric) & (t["feature_space"] == space)]
            cols = list(dict.fromkeys(m["label"]))
            table = m.pivot_table(index="perturbation", columns="label", values="value", aggfunc="first")[cols]
            if table.shape[1] < 2:
                continue
            key = f"{name} per perturbation [{space}]"
            wide[key] = table
            p, n = friedman(table)
            if not pd.isna(p):
                notes.append(f"{key}: Friedman test over {n} perturbations, {table.shape[1]} methods: p = {p:.3g}")
    return (paired_comparison(wide) if wide else pd.DataFrame()), notes


def _ci(v: float, lo: float, hi: float) -> str:
    return "-" if pd.isna(v) else (f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if not pd.isna(lo) else f"{v:.3f}")


def table2a(lb: pd.DataFrame, task: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MoA accuracy per method with bootstrap CI, real held-out images as the ceiling; and per MoA."""
    t = lb[(lb["task"] == task) & lb["metric"].str.startswith("moa_acc")]
    if t.empty:
        return pd.DataFrame(), pd.DataFrame()
    overall = t[t["perturbation"] == ""]
    rows = []
    for label in dict.fromkeys(overall["label"]):
        h = overall[(overall["label"] == label) & (overall["metric"] == "moa_acc")].iloc[0]
        rows.append({"method": label, "accuracy [95% CI]": _ci(h["value"], h["ci_low"], h["ci_high"]),
                     "n": int(h["n_gen"]), "n_seeds": int(h["n_seeds"]), "classifier": h["extractor_sha256"]})
    real = overall[overall["metric"] == "moa_acc_real"].iloc[0]
    rows.append({"method": "real held-out images (ceiling)", "accuracy [95% CI]": _ci(real["value"], real["ci_low"], real["ci_high"]),
                 "n": int(real["n_gen"]), "n_seeds": int(real["n_seeds"]), "classifier": real["extractor_sha256"]})
    per = t[t["metric"] == "moa_acc_by_moa"]
    wide = per.pivot_table(index="perturbation", columns="label", values="value", aggfunc="first")[list(dict.fromkeys(per["label"]))]
    real_per = t[t["metric"] == "moa_acc_real_by_moa"].drop_duplicates("perturbation").set_index("perturbation")
    wide["real held-out"] = real_per["value"]
    wide.insert(0, "n", per.groupby("perturbation")["n_gen"].min())
    return pd.DataFrame(rows), wide.reset_index().rename(columns={"perturbation": "MoA"})


def _main_space(t: pd.DataFrame) -> str:
    """Inception where it was scored, else the first feature space that has an FID."""
    spaces = sorted(set(t.loc[t["metric"] == "fid_o", "feature_space"]))
    return "inception" if "inception" in spaces else (spaces[0] if spaces else "inception")


def table_pick(lb: pd.DataFrame, tasks: list[str], space: str | None = None) -> pd.DataFrame:
    """FID_o / FID_c (and paired error) of every method on the given tasks, one row per task x method, with the
    number of seeds its values are means over."""
    t = lb[lb["task"].isin(tasks) & (lb["perturbation"] == "")]
    space = space or _main_space(t)
    rows = []
    for (task, label), sub in t.groupby(["task", "label"], sort=False):
        row = {"task": task, "method": label}
        for key, col, _ in TABLE1A[:2]:
            hit = sub[(sub["metric"] == key) & (sub["feature_space"] == space)]
            row[f"{col} [{space}]"] = hit["value"].iloc[0] if len(hit) else np.nan
        hit = sub[sub["metric"] == "paired_rmse"]
        row["paired RMSE"] = hit["value"].iloc[0] if len(hit) else np.nan
        row["n_seeds"] = int(sub["n_seeds"].max())  # a mean over seeds next to one seed must say so
        rows.append(row)
    return pd.DataFrame(rows)


def ranking(lb: pd.DataFrame, space: str | None = None) -> pd.DataFrame:
    """Rank of each method by FID_o within each task (1 = best), and its mean rank over tasks."""
    space = space or _main_space(lb)
    t = lb[(lb["metric"] == "fid_o") & (lb["feature_space"] == space) & (lb["perturbation"] == "")]
    if t.empty:
        return pd.DataFrame()
    t = t.assign(rank=t.groupby("task")["value"].rank(method="min"))
    wide = t.pivot_table(index="label", columns="task", values="rank", aggfunc="first")
    wide["mean rank"] = wide.mean(axis=1)
    return wide.sort_values(["mean rank"]).reset_index().rename(columns={"label": "method"})


def run_list(runs, lb: pd.DataFrame, task: str) -> pd.DataFrame:
    """Which runs produced a task's rows: label, run id, how it was configured and trained."""
    labels, rows = _labels(lb, task), []
    for r in runs:
        m = r.manifest
        if m.task_name != task:
            continue
        fit = m.fit
        trained = fit.get("trained_with", fit)
        if m.model_source == "scored from images":
            how = (f"scored from images ({fit.get('format', '?')}, sha256 {str(fit.get('images_sha256', ''))[:12]})"
                   + (f": {fit['description']}" if fit.get("description") else ""))
        elif m.model_source == "imported":
            files = fit.get("imported", {}).get("files", {})
            how = (f"published checkpoint imported ({fit.get('imported', {}).get('weights', '?')} weights; "
                   + ", ".join(f"{Path(k).name} sha256 {v[:12]}" for k, v in files.items()) + ")")
        else:
            how = ("trained in this run" if "from_run" not in fit else f"images of run {fit['from_run']} scored "
                   "again" if "generated_by" in fit else f"model of run {fit['from_run']} scored")
        kept = trained.get("selected", {})
        rows.append({"label": labels.get((m.method, m.variant, m.config_hash), m.method), "run_id": m.run_id,
                     "seed": m.seed, "profile": m.profile or "default", "overrides": " ".join(m.overrides) or "-",
                     "steps": trained.get("steps", "-"), "kept": f"{kept['rule']} (step {kept['step']})" if kept else "-",
                     "device": trained.get("device", "-"), "model": how, "code": m.git_sha[:12]})
    return pd.DataFrame(rows).sort_values(["label", "run_id"]).reset_index(drop=True) if rows else pd.DataFrame()


CONVERGED = 0.05  # a trained row whose validation metric moved by more than this share over its last quarter of
# training is marked "not converged"


def _trained(manifest) -> dict:
    """The training summary behind a run: its own, or that of the run whose model it scored."""
    return manifest.fit.get("trained_with", manifest.fit)


def _labels(lb: pd.DataFrame, task: str) -> dict[tuple, str]:
    return {(r.method, r.variant, r.config): r.label for r in
            lb[lb["task"] == task].drop_duplicates(["method", "variant", "config"]).itertuples()}


def curve_frame(runs, lb: pd.DataFrame, task: str) -> pd.DataFrame:
    """Every learning-curve point of the task's runs (long format: label, seed, step, images, train_s, metric,
    value), and one row per untrained run's validation score (step NaN): the figure's reference lines."""
    labels, rows = _labels(lb, task), []
    for r in runs:
        m = r.manifest
        if m.task_name != task:
            continue
        label = labels.get((m.method, m.variant, m.config_hash), m.method)
        trained = _trained(m)
        points = trained.get("curve") or ([{**trained["validation"], "step": np.nan, "images": np.nan,
                                            "train_s": np.nan}] if "validation" in trained else [])
        for point in points:
            for metric, value in point.items():
                if metric.startswith("val_"):
                    rows.append({"label": label, "seed": m.seed, "step": point["step"], "images": point["images"],
                                 "train_s": point["train_s"], "metric": metric, "value": value})
    return pd.DataFrame(rows, columns=["label", "seed", "step", "images", "train_s", "metric", "value"])


def training_table(runs, lb: pd.DataFrame, task: str) -> pd.DataFrame:
    """Per trained row: images seen, training time, device and threads, the checkpoint kept, and the relative change
    of the selection metric over the last quarter of training (the largest over seeds), against CONVERGED."""
    from benchmark.curves import last_quarter_change

    labels, rows = _labels(lb, task), []
    for r in runs:
        m = r.manifest
        trained = _trained(m)
        if m.task_name != task or not trained.get("curve"):
            continue
        metric = trained["curve_monitor"]["selection_metric"]
        sel = trained.get("selected", {})
        # the images behind the weights that were scored: up to the kept checkpoint, not the whole run
        kept = [p["images"] for p in trained["curve"] if p["step"] == sel.get("step")]
        rows.append({"label": labels.get((m.method, m.variant, m.config_hash), m.method), "seed": m.seed,
                     "images": kept[0] if kept else trained["curve"][-1]["images"],
                     "train_s": trained.get("train_s", np.nan),
                     "device": f"{trained.get('device', '-')}"
                               + (f" x{m.torch_threads} threads" if "trained_with" not in m.fit else ""),
                     "metric": metric, "change": last_quarter_change(trained["curve"], metric),
                     "kept": f"{sel.get('rule', 'last')}: step {sel.get('step', '-')}"})
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    out = []
    for label, g in df.groupby("label", sort=False):
        worst = g["change"].iloc[int(np.nanargmax(np.abs(g["change"].to_numpy())))] if g["change"].notna().any() \
            else np.nan
        lo, hi = int(g["images"].min()), int(g["images"].max())
        out.append({"method": label, "images seen": lo if lo == hi else f"{lo}-{hi}", "train min": g["train_s"].mean() / 60,
                    "device": ",".join(sorted(set(g["device"]))), "selection metric": g["metric"].iloc[0],
                    "kept": ",".join(dict.fromkeys(g["kept"])), "val change, last quarter": worst,
                    "converged": "-" if pd.isna(worst) else "yes" if abs(worst) <= CONVERGED else "not converged"})
    return pd.DataFrame(out)


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


def one_run_per_label(runs, lb: pd.DataFrame, task: str) -> dict[str, object]:
    """The lowest-seed run behind each row label of the task: the one a figure shows."""
    listed = run_list(runs, lb, task)
    by_id = {r.manifest.run_id: r for r in runs}
    out = {}
    for row in listed.sort_values(["label", "seed", "run_id"]).itertuples():
        out.setdefault(row.label, by_id[row.run_id])
    return out


def calibration_section(cal_dir: Path | None, task: str, lb: pd.DataFrame) -> list[str]:
    """Markdown under a simulated screen's Table 1a: what each of its metrics resolves at the table's n per
    perturbation, from a `calibrate` output (its ladders exist on the simulated screen only)."""
    from benchmark.calibration import LADDERS, recommended_n, resolution

    if cal_dir is None or not (Path(cal_dir) / "summary.csv").is_file():
        return []
    prov = json.loads((Path(cal_dir) / "provenance.json").read_text())
    family = prov["calibration task"].split("-")[0]
    if task.split("-")[0] != family:
        return []
    summary = pd.read_csv(Path(cal_dir) / "summary.csv")
    t = lb[(lb["task"] == task) & (lb["metric"] == "fid_c")]
    if t.empty:
        return []
    n_table = int(t["n_gen"].min())
    fitting = [n for n in sorted(set(summary["n"])) if n <= n_table]
    if not fitting:
        return [f"\nMetric calibration (`{cal_dir}`): its smallest n, {summary['n'].min()}, exceeds this table's "
                f"{n_table} generated images per perturbation.\n"]
    n = fitting[-1]
    try:  # named as the user would type it, so the text does not depend on where the repository lives
        cal_dir = Path(cal_dir).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        pass
    metrics = [f"{k} [{sp}]" for sp in ("inception", "morphology") for k in ("fid_o", "fid_c", "kid_o", "kid_c")]
    metrics += ["paired_rmse", "paired_morph", "moa_accuracy"]
    metrics += [f"map_{k} [{sp}]" for sp in ("inception", "morphology") for k in ("activity", "retrieval")]
    table = resolution(summary, n, metrics)
    ladders = [c for c in LADDERS if c in table.columns]
    params = "; ".join(f"{name}: {LADDERS[name].parameter}" for name in ladders)
    recs = []
    for m in [x for x in metrics if x.startswith(("fid_c", "kid_c"))]:
        best, why = recommended_n(summary, m)
        if best is not None:
            recs.append(f"- {m}: n = {best} per perturbation ({why})\n")
    return [f"\n## What these metrics resolve at n = {n} per perturbation\n",
            f"Known-answer calibration on `{prov['calibration task']}` (`{cal_dir}/summary.md`; seed "
            f"{prov['seed']}, {prov['bootstrap replicates']} bootstrap replicates over images): for each metric and "
            f"ladder of generators of known order, the smallest step from the true counterfactuals that the metric "
            f"tells apart at 95% with {n} images per perturbation (`-`: no step; `nb`: not bootstrapped), and on how "
            f"many ladders it orders every step right. A difference between two rows of the table above smaller than "
            f"one such step is not one this metric can be trusted to see. Ladders: {params}.\n\n",
            to_markdown(table), "\nImages per perturbation recommended for the per-perturbation metrics:\n\n",
            *recs]


def report(runs_dir: Path, results_dir: Path, data_dir: Path | None = None,
           sample_perts: list[str] | None = None, calibration: Path | None = None) -> list[Path]:
    """Tables (always) and figures (where `data_dir` holds the tasks' data) from the run store; with `calibration`
    (a `calibrate` output), what each metric resolves under the simulated screen's tables."""
    # images scored on the validation split are for choosing checkpoints and settings, never for the leaderboard
    runs = [r for r in RunStore(runs_dir).runs() if r.manifest.eval_split == "test"]
    lb = leaderboard(runs)
    results_dir = Path(results_dir)
    written = [results_dir / "leaderboard.csv"]
    io.write_csv(written[0], lb)
    for task in sorted(set(lb["task"])):
        training = training_table(runs, lb, task)
        num, fmt, notes = table1a(lb, task, training)
        d = results_dir / task
        io.write_csv(d / "table1a.csv", num)
        md = [f"# {task}: Table 1a\n", "Lower is better for every column. KID is multiplied by 100 as in the paper. "
              "Values are means over seeds ± the half-width of the 95% t interval over seeds; for one seed, "
              "[the 95% bootstrap interval over images].\n", to_markdown(fmt)]
        if not training.empty:
            md.append(f"\nTrained rows: images seen in training up to the checkpoint that was kept and scored (a "
                      f"range where seeds kept different ones), minutes of the whole run's training (mean over seeds, "
                      f"the curve's scoring left out), device, and the relative change of the validation selection metric over "
                      f"the last quarter of training (the largest over seeds): beyond {CONVERGED:.0%} the row is "
                      f"marked not converged. Curves: `learning_curves.png`.\n")
            io.write_csv(d / "training.csv", training)
            written.append(d / "training.csv")
            shown = training.assign(**{"train min": training["train min"].map("{:.1f}".format),
                                       "val change, last quarter": training["val change, last quarter"].map(
                                           lambda v: "-" if pd.isna(v) else f"{v:+.1%}")})
            md += ["\n", to_markdown(shown)]
        md += calibration_section(calibration, task, lb)
        frame = curve_frame(runs, lb, task)
        if not frame.empty:
            io.write_csv(d / "learning_curves.csv", frame)
            written.append(d / "learning_curves.csv")
            fig = draw_curves(frame, task, d / "learning_curves.png")
            if fig is not None:
                written.append(fig)
        for space in ("inception", "morphology"):
            t1b = table1b(lb, task, space)
            if not t1b.empty:
                io.write_csv(d / f"table1b_{space}.csv", t1b)
                written.append(d / f"table1b_{space}.csv")
                md += [f"\n## Table 1b: per-perturbation FID [{space}]\n", to_markdown(t1b)]
        t2a, t2a_moa = table2a(lb, task)
        if not t2a.empty:
            io.write_csv(d / "table2a.csv", t2a)
            io.write_csv(d / "table2a_per_moa.csv", t2a_moa)
            written += [d / "table2a.csv", d / "table2a_per_moa.csv"]
            md += ["\n## Table 2a: MoA accuracy\n", "A classifier trained on the task's real training images "
                   "(weights hash in `classifier`) labels each generated image; the interval is a seeded bootstrap "
                   "over images. The last row scores real held-out images: the ceiling of real phenotypes, not of the "
                   "score: a generator that exaggerates what the classifier keys on can exceed it (IMPA on the "
                   "simulated screen does), so read accuracy together with FID.\n", to_markdown(t2a),
                   "\nPer MoA (accuracy; n generated images per MoA):\n", to_markdown(t2a_moa, ".3f")]
        variants = lb[(lb["task"] == task) & (lb["variant"] != "default")]
        if not variants.empty:
            base = set(lb[(lb["task"] == task) & (lb["variant"] == "default")]["method"])
            labels = set(variants["label"]) | set(lb[(lb["task"] == task) & lb["method"].isin(set(variants["method"]))
                                                     & (lb["variant"] == "default")]["label"])
            t2c = table_pick(lb[lb["label"].isin(labels)], [task])
            if not t2c.empty and base:
                io.write_csv(d / "table2c.csv", t2c)
                written.append(d / "table2c.csv")
                md += ["\n## Table 2c: ablations\n", to_markdown(t2c, ".4g")]
        def section(name: str, table: pd.DataFrame, title: str, text: str, fmt: str = ".3f") -> None:
            io.write_csv(d / name, table)
            written.append(d / name)
            md.extend([f"\n## {title}\n", text, to_markdown(table, fmt)])

        prdc = table_prdc(lb, task)
        if not prdc.empty:
            section("prdc.csv", prdc, "Precision, recall, density, coverage", "All generated against all reference "
                    "features, k = 5 nearest neighbours (PyPI `prdc`). Precision and density: do generated cells look "
                    "real; recall and coverage: is the variety of real cells generated. Higher is better; the oracle "
                    "row is real against real.\n\n")
        maps = table_map(lb, task)
        if not maps.empty:
            section("map.csv", maps, "Phenotypic activity and retrieval (mean average precision, copairs)",
                    "Activity: is each perturbation's set of cells retrievable against the plan's control cells "
                    "(cosine similarity; mAP averaged over perturbations; share active: FDR-corrected permutation "
                    "p < 0.05). Retrieval: is a generated cell closest to real cells of its own perturbation. The last "
                    "row is the real cells' activity against the same controls: a generator should match it, not "
                    "exceed it.\n\n")
            for space in sorted(set(lb[(lb["task"] == task) & (lb["metric"] == "map_activity")]["feature_space"])):
                per = table_map_per_perturbation(lb, task, space)
                io.write_csv(d / f"map_{space}.csv", per)
                written.append(d / f"map_{space}.csv")
                md += [f"\nActivity mAP per perturbation [{space}]:\n\n", to_markdown(per, ".3f")]
        shift, shift_detail = table_shift(lb, task)
        if not shift.empty:
            section("feature_shift.csv", shift, "Feature shifts", "For each perturbation, the features that move "
                    "most between its real cells and the control cells (|Cohen's d|, top 10), measured again on the "
                    "generated cells: the correlation of the two sets of effect sizes and the share that move the "
                    "same way, averaged over perturbations (1 is best; the oracle row is real against real). The "
                    "effect sizes themselves: `feature_shift_<space>.csv` and the heatmap "
                    "`feature_shift_<space>.png`.\n\n")
            for space, table in shift_detail.items():
                io.write_csv(d / f"feature_shift_{space}.csv", table)
                written += [d / f"feature_shift_{space}.csv",
                            draw_shift(table, space, task, d / f"feature_shift_{space}.png")]
        pairs, tests = comparisons(lb, task)
        for space in sorted(set(lb[(lb["task"] == task) & (lb["metric"] == "fid")]["feature_space"])):
            per = table1b(lb, task, space).set_index("perturbation").drop(columns="n_real")
            cd = draw_cd(per, f"{task}, FID per perturbation [{space}]", d / f"cd_fid_{space}.png")
            if cd is not None:
                written.append(cd)
                tests.append(f"critical-difference diagram of FID per perturbation [{space}]: `{cd.name}`")
        if not pairs.empty:
            section("comparisons.csv", pairs, "Paired comparisons of methods", "Is one method better than another on "
                    "a metric scored per perturbation, beyond the noise across perturbations? A two-sided Wilcoxon "
                    "signed-rank test over the perturbations both were scored on (lower is better; `A lower` counts "
                    "perturbations where A scored lower), p-values Holm-corrected over every row of this table; the "
                    "verdict is at 5%.\n\n" + "".join(f"- {n}\n" for n in tests) + "\n", ".3g")
        md += ["\n## Provenance\n"] + [f"- {n}\n" for n in notes]
        listed = run_list(runs, lb, task)
        if not listed.empty:
            md += ["\n## Runs\n", to_markdown(listed)]
        io.write_text(d / "tables.md", "".join(md))
        written += [d / "table1a.csv", d / "tables.md"]
        per_task = lb[lb["task"] == task]
        io.write_csv(d / "leaderboard.csv", per_task)
        written.append(d / "leaderboard.csv")
    if data_dir is not None:
        from benchmark.figures import figures

        chosen = {task: one_run_per_label(runs, lb, task) for task in sorted(set(lb["task"]))}
        figs, fig_notes = figures(chosen, data_dir, results_dir / "figures", sample_perts)
    else:
        figs = _earlier_figures(results_dir)
        fig_notes = ["figures: kept from an earlier report that had the images (--data-dir); they show the runs of "
                     "that report" if figs else "figures: not drawn (pass --data-dir: they need the tasks' images)"]
    specs = {r.manifest.task_name: r.manifest.task for r in runs}
    written += figs + overview(lb, specs, results_dir, figs, fig_notes)
    _forget_stale(results_dir, written)
    return written


OUTPUT_LIST = ".report-files"  # what the last report wrote here, so the next one removes what it no longer writes


def _earlier_figures(results_dir: Path) -> list[Path]:
    """Figures an earlier report drew here: a report without the images (e.g. one that regenerates the tables
    from committed run records) keeps them rather than deleting what it cannot redraw."""
    listing = results_dir / OUTPUT_LIST
    before = listing.read_text().split("\n") if listing.is_file() else []
    return [results_dir / rel for rel in before if rel.startswith("figures/") and (results_dir / rel).is_file()]


def _forget_stale(results_dir: Path, written: list[Path]) -> None:
    """Remove files an earlier report wrote into `results_dir` and this one did not; never anything else."""
    now = sorted({p.relative_to(results_dir).as_posix() for p in written})
    listing = results_dir / OUTPUT_LIST
    before = listing.read_text().split("\n") if listing.is_file() else []
    for rel in sorted(set(before) - set(now) - {""}):
        path = results_dir / rel
        if path.is_file():
            path.unlink()
        for parent in path.parents:  # folders the report made that are now empty
            if parent == results_dir or not parent.is_dir() or any(parent.iterdir()):
                break
            parent.rmdir()
    io.write_text(listing, "\n".join(now) + "\n")


def overview(lb: pd.DataFrame, specs: dict[str, dict], results_dir: Path, figs: list[Path] = (),
             fig_notes: list[str] = ()) -> list[Path]:
    """Tables across tasks: 2b (unseen perturbations), 2d (same- vs other-batch controls), ranks; figure index.
    Which task plays which part comes from the tasks' declarations recorded in the runs."""
    tasks = sorted(set(lb["task"]))
    md, written = ["# Across tasks\n"], []
    ood = [t for t in tasks if specs[t].get("eval_only_heldout") and specs[t].get("heldout")]
    if ood:
        t2b = table_pick(lb, ood)
        io.write_csv(results_dir / "table2b.csv", t2b)
        md += ["\n## Table 2b: unseen perturbations (zero-shot through their embeddings)\n", to_markdown(t2b, ".4g")]
        written.append(results_dir / "table2b.csv")
    pairs = [(specs[t]["variant_of"], t) for t in tasks
             if specs[t].get("pairing") == "other-batch" and specs[t]["variant_of"] in tasks]
    if pairs:
        parts = []
        for same, other in pairs:
            a = table_pick(lb, [same]).drop(columns="task").set_index("method")
            b = table_pick(lb, [other]).drop(columns="task").set_index("method")
            joined = a.add_suffix(" same-batch").join(b.add_suffix(" other-batch"), how="inner").reset_index()
            joined.insert(0, "task", same)
            parts.append(joined)
        t2d = pd.concat(parts, ignore_index=True)
        io.write_csv(results_dir / "table2d.csv", t2d)
        md += ["\n## Table 2d: controls from the same batch vs another batch\n", to_markdown(t2d, ".4g")]
        written.append(results_dir / "table2d.csv")
    ranks = ranking(lb)
    if not ranks.empty:
        io.write_csv(results_dir / "ranking.csv", ranks)
        md += [f"\n## Rank by FID_o [{_main_space(lb)}] within each task (1 = best)\n", to_markdown(ranks, ".1f")]
        space = _main_space(lb)
        fid_o = lb[(lb["metric"] == "fid_o") & (lb["feature_space"] == space) & (lb["perturbation"] == "")]
        on_all = fid_o.pivot_table(index="task", columns="label", values="value", aggfunc="first").dropna(axis=1)
        p, n = friedman(on_all)
        md.append(f"\nFriedman test of the {on_all.shape[1]} methods run on all {n} tasks ({', '.join(on_all.columns)}), "
                  f"tasks as blocks: p = {p:.3g}.\n" if not pd.isna(p) else
                  "\nFriedman test across tasks: not computable (it needs 3 methods run on 2 or more tasks).\n")
        written.append(results_dir / "ranking.csv")
    if figs or fig_notes:
        md += ["\n## Figures\n"] + [f"- `{p.relative_to(results_dir)}`\n" for p in figs if p.suffix == ".png"]
        md += [f"- {n}\n" for n in fig_notes]
    io.write_text(results_dir / "tables.md", "".join(md))
    return written + [results_dir / "tables.md"]
