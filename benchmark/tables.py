"""The report's tables, as pure functions of the leaderboard and the run records.

`leaderboard` aggregates every run's metric rows over seeds (one row per task x method x variant x config x metric x
feature space x perturbation); each builder below cuts one paper-shaped table out of it. Nothing here writes files,
draws or reads images: `report.py` decides what is written where, `charts.py` draws.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.curves import last_quarter_change
from benchmark.errors import BenchmarkError
from benchmark.external import EXTERNAL
from benchmark.metrics.stats import friedman, paired_comparison, seed_test, t_half_width

KEYS = ["task", "method", "variant", "config", "metric", "feature_space", "perturbation", "extractor_sha256"]
TABLE1A = [("fid_o", "FID_o", 1.0), ("fid_c", "FID_c", 1.0), ("kid_o", "KID_o x100", 100.0), ("kid_c", "KID_c x100", 100.0)]
PAIRED = [("paired_rmse", "pixels", "paired RMSE"), ("paired_morph", "morphology", "paired morph. dist.")]
PRDC = ("precision", "recall", "density", "coverage")
MAP = [("map_activity", "activity mAP"), ("map_active_frac", "share active"), ("map_retrieval", "retrieval mAP")]
PER_PERTURBATION = [("fid", "FID"), ("kid", "KID")]  # metrics scored per perturbation (lower is better)
CONVERGED = 0.05  # a trained row whose validation metric moved by more than this share over its last quarter of
# training is marked "not converged"


def leaderboard(runs) -> pd.DataFrame:
    """Every run's metric rows, mean and spread over seeds, in the order the methods declare."""
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


def _labelled_runs(runs, lb: pd.DataFrame, task: str) -> Iterator[tuple[str, Any]]:
    """A task's runs, each with the label of the leaderboard row it feeds."""
    labels = {(r.method, r.variant, r.config): r.label for r in
              lb[lb["task"] == task].drop_duplicates(["method", "variant", "config"]).itertuples()}
    for r in runs:
        m = r.manifest
        if m.task_name == task:
            yield labels.get((m.method, m.variant, m.config_hash), m.method), r


def _task_runs(runs, lb: pd.DataFrame, task: str) -> Iterator[tuple[str, Any]]:
    """The manifests of a task's runs, each with the label of the leaderboard row it feeds."""
    for label, r in _labelled_runs(runs, lb, task):
        yield label, r.manifest


def _table1a_spaces(t: pd.DataFrame) -> list[str]:
    """Table 1a's feature spaces, those with a distance scored (the paired morphology distance alone makes no
    column block): Inception and morphology first, then any other."""
    scored = set(t.loc[t["metric"].isin([key for key, _, _ in TABLE1A]), "feature_space"])
    return [s for s in ("inception", "morphology") if s in scored] + sorted(scored - {"inception", "morphology"})


NOT_CONDITIONED = "n/a (not conditioned on the control)"


def unconditioned_labels(runs, lb: pd.DataFrame, task: str) -> set[str]:
    """Rows whose images do not answer their requests' controls (a generator from noise): their paired errors are
    not scored, and the table says why instead of a dash."""
    return {label for label, m in _task_runs(runs, lb, task) if not m.conditioned_on_control}


def row_sources(runs, lb: pd.DataFrame, task: str) -> dict[str, str]:
    """Where each row's images came from: trained here, an imported checkpoint, images scored as given, or a rule
    with no training (identity, oracle); a row whose runs differ lists each."""
    out = {}
    for label, m in _task_runs(runs, lb, task):
        source = {"imported": "imported checkpoint", "scored from images": "scored from images"}.get(
            m.model_source, "trained here" if "steps" in _trained(m) else "no training")
        out[label] = ", ".join(sorted(set(filter(None, out.get(label, "").split(", "))) | {source}))
    return out


def training_cell(column: str, v) -> str:
    """One cell of the training columns as Table 1a and the training table show it."""
    if isinstance(v, str):
        return v
    if pd.isna(v):
        return "-"
    return {"train min": f"{v:.1f}", "val change, last quarter": f"{v:+.1%}"}.get(column, f"{v:.0f}")


def table1a(lb: pd.DataFrame, task: str, training: pd.DataFrame | None = None,
            unconditioned: set[str] = frozenset(), sources: dict[str, str] | None = None
            ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Numeric and formatted Table 1a for one task (one column block per feature space), with each row's source
    (`row_sources`) and each trained row's compute and convergence (`training_table`) where given; the paired errors
    of `unconditioned` rows are n/a."""
    t = lb[(lb["task"] == task) & (lb["perturbation"] == "")]
    spaces = _table1a_spaces(t)
    rows_num, rows_fmt = [], []
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
            if label in unconditioned and (t["metric"] == key).any():  # the task has counterfactuals
                num[col], fmt[col] = np.nan, NOT_CONDITIONED
            elif len(hit):
                h = hit.iloc[0]
                num[col], fmt[col] = h["value"], _fmt(h["value"], h["seed_ci95"], int(h["n_seeds"]), h["ci_low"], h["ci_high"])
        seeds = sub["n_seeds"].max()
        num["n_seeds"] = fmt["n_seeds"] = int(seeds)
        if sources is not None:
            num["source"] = fmt["source"] = sources.get(label, "-")
        if training is not None and not training.empty:
            hit = training[training["method"] == label]
            for col in ("images seen", "train min", "device", "val change, last quarter", "converged"):
                v = hit[col].iloc[0] if len(hit) else np.nan
                num[col], fmt[col] = v, training_cell(col, v)
        rows_num.append(num)
        rows_fmt.append(fmt)
    return pd.DataFrame(rows_num), pd.DataFrame(rows_fmt)


def provenance_notes(lb: pd.DataFrame, task: str) -> list[str]:
    """What produced Table 1a's numbers: per feature space the extractor's weights, the channel rule and the n per
    side; the split and the code."""
    t = lb[(lb["task"] == task) & (lb["perturbation"] == "")]
    notes = []
    for space in _table1a_spaces(t):
        s = t[t["feature_space"] == space]
        o = s[s["metric"] == "fid_o"]
        c = s[s["metric"] == "fid_c"]
        notes.append(f"{space}: weights sha256 {','.join(sorted(set(s['extractor_sha256'])))}; channel rule "
                     f"{','.join(sorted(set(s['channel_rule'])))}; n per side overall {int(o['n_real'].min()) if len(o) else '-'} real / "
                     f"{int(o['n_gen'].min()) if len(o) else '-'} generated; per perturbation >= {int(c['n_real'].min()) if len(c) else '-'}")
    notes.append(f"split hash {','.join(sorted(set(t['split_hash'])))}; code {','.join(sorted(set(t['git_sha'])))}")
    return notes


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


def _per_perturbation(t: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """The per-perturbation rows of each metric scored per perturbation, one feature space at a time, under the name
    the tests' tables give them."""
    t = t[t["perturbation"] != ""]
    for metric, name in PER_PERTURBATION:
        for space in sorted(set(t[t["metric"] == metric]["feature_space"])):
            yield f"{name} per perturbation [{space}]", t[(t["metric"] == metric) & (t["feature_space"] == space)]


def ablation_rows(t: pd.DataFrame) -> pd.Series:
    """Which leaderboard rows are ablations (Table 2c): a method's own variant, not an imported checkpoint nor
    images scored from elsewhere."""
    return (t["variant"] != "default") & ~t["variant"].str.endswith("imported") & (t["method"] != EXTERNAL)


def seed_values(runs, lb: pd.DataFrame, task: str) -> dict[tuple[str, str], np.ndarray]:
    """Per per-perturbation metric (under the tests' names) and row label: each seed's mean over its perturbations,
    in seed order; what `seed_test` compares."""
    values: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for label, r in _labelled_runs(runs, lb, task):
        for key, rows in _per_perturbation(r.metrics()):
            values.setdefault((key, label), []).append((r.manifest.seed, float(rows["value"].mean())))
    return {k: np.array([v for _, v in sorted(pairs)]) for k, pairs in values.items()}


def comparisons(lb: pd.DataFrame, task: str, runs=()) -> tuple[pd.DataFrame, list[str]]:
    """Every pair of methods on each per-perturbation metric and feature space of a task: Wilcoxon signed-rank over
    perturbations, Holm-corrected over the whole table, with the same question over seeds beside it (`seed_test`,
    from `runs`); and a Friedman test per metric (do the methods differ at all?). Ablations are left to
    `ablation_tests`: each is a question about its own method, and pairing it with every other row would only widen
    the Holm family the method comparisons are corrected over."""
    t = lb[lb["task"] == task]
    wide, notes = {}, []
    for key, m in _per_perturbation(t[~ablation_rows(t)]):
        cols = list(dict.fromkeys(m["label"]))
        table = m.pivot_table(index="perturbation", columns="label", values="value", aggfunc="first")[cols]
        if table.shape[1] < 2:
            continue
        wide[key] = table
        p, n = friedman(table)
        if not pd.isna(p):
            notes.append(f"{key}: Friedman test over {n} perturbations, {table.shape[1]} methods: p = {p:.3g}")
    if not wide:
        return pd.DataFrame(), notes
    return seed_test(paired_comparison(wide), seed_values(runs, lb, task)), notes


def _tests_by_label(wide: dict[tuple[str, str], pd.DataFrame], first: str, second: str,
                    seeds: dict | None = None) -> pd.DataFrame:
    """`paired_comparison` of two-column tables keyed by (row label, metric), as a table with a `method` column and
    the two columns' names in place of A and B; with `seeds` (keyed by (key, column)), the test over seeds too."""
    out = paired_comparison(wide)
    if seeds is not None:
        out = seed_test(out, seeds)
    out = out.drop(columns=["A", "B"])
    labels, metrics = zip(*out["metric"])
    out["metric"] = metrics
    out.insert(0, "method", labels)
    return out.rename(columns={"median A - B": f"median {first} - {second}", "A lower": f"{first} lower",
                               "B lower": f"{second} lower"})


def ablation_tests(lb: pd.DataFrame, task: str, runs=()) -> pd.DataFrame:
    """Table 2c's test: per ablation, does it score differently from its method's default row on each
    per-perturbation metric, beyond the noise across perturbations? Wilcoxon signed-rank paired by perturbation,
    Holm-corrected over this table alone, and the same over seeds (`seed_test`, from `runs`)."""
    t = lb[lb["task"] == task]
    ablations = t[ablation_rows(t)]
    wide, full_of = {}, {}
    for method, label in dict.fromkeys(zip(ablations["method"], ablations["label"])):
        for full in dict.fromkeys(t[(t["method"] == method) & (t["variant"] == "default")]["label"]):
            full_of[label] = full
            for key, m in _per_perturbation(t[t["label"].isin([label, full])]):
                table = m.pivot_table(index="perturbation", columns="label", values="value", aggfunc="first")
                if {label, full} <= set(table.columns):
                    wide[(label, key)] = table[[label, full]].set_axis(["ablation", "full"], axis=1)
    if not wide:
        return pd.DataFrame()
    seeds = seed_values(runs, lb, task)
    by_side = {((label, key), side): seeds.get((key, name), np.array([]))
               for (label, key), table in wide.items() for side, name in (("ablation", label), ("full", full_of[label]))}
    out = _tests_by_label(wide, "ablation", "full", by_side)
    out.insert(0, "task", task)
    return out


def batch_change(lb: pd.DataFrame, same: str, other: str) -> pd.DataFrame:
    """Table 2d's test: per method, does scoring against controls from another batch change its per-perturbation
    FID and KID beyond the noise across perturbations? A Wilcoxon signed-rank test of the same method's values on the
    two tasks, paired by perturbation, Holm-corrected over every row (`paired_comparison`)."""
    t = lb[lb["task"].isin([same, other])]
    wide = {}
    for label in dict.fromkeys(t["label"]):
        for key, m in _per_perturbation(t[t["label"] == label]):
            table = m.pivot_table(index="perturbation", columns="task", values="value", aggfunc="first")
            if {same, other} <= set(table.columns):
                wide[(label, key)] = table[[same, other]].set_axis(["same-batch", "other-batch"], axis=1)
    if not wide:
        return pd.DataFrame()
    out = _tests_by_label(wide, "same", "other")
    out.insert(0, "task", same)
    return out


def batch_models(runs, lb: pd.DataFrame, same: str, other: str) -> dict[str, str]:
    """Per method on the other-batch task: are its rows the same weights as on the same-batch task (`run --from-run`
    of those runs) or models trained again? Only the first isolates the controls: a model trained again also picks
    its checkpoint on its own task's validation plan, and that choice moves the scores by itself."""
    same_ids = {r.manifest.run_id for r in runs if r.manifest.task_name == same}
    kinds = {}
    for label, m in _task_runs(runs, lb, other):
        kind = ("same weights" if m.fit.get("from_run") in same_ids else
                "trained again" if "steps" in _trained(m) else "no training")
        kinds.setdefault(label, set()).add(kind)
    return {label: " and ".join(sorted(k)) for label, k in kinds.items()}


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
    rows = []
    for label, m in _task_runs(runs, lb, task):
        fit, trained = m.fit, _trained(m)
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
        rows.append({"label": label, "run_id": m.run_id,
                     "seed": m.seed, "profile": m.profile or "default", "overrides": " ".join(m.overrides) or "-",
                     "steps": trained.get("steps", "-"), "kept": f"{kept['rule']} (step {kept['step']})" if kept else "-",
                     "device": trained.get("device", "-"), "model": how, "code": m.git_sha[:12]})
    return pd.DataFrame(rows).sort_values(["label", "run_id"]).reset_index(drop=True) if rows else pd.DataFrame()


def _trained(manifest) -> dict:
    """The training summary behind a run: its own, or that of the run whose model it scored."""
    return manifest.fit.get("trained_with", manifest.fit)


def curve_frame(runs, lb: pd.DataFrame, task: str) -> pd.DataFrame:
    """Every learning-curve point of the task's runs (long format: label, seed, step, images, train_s, metric,
    value), and one row per untrained run's validation score (step NaN): the figure's reference lines."""
    rows = []
    for label, m in _task_runs(runs, lb, task):
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
    rows = []
    for label, m in _task_runs(runs, lb, task):
        trained = _trained(m)
        if not trained.get("curve"):
            continue
        metric = trained["curve_monitor"]["selection_metric"]
        sel = trained.get("selected", {})
        # the images behind the weights that were scored: up to the kept checkpoint, not the whole run
        kept = [p["images"] for p in trained["curve"] if p["step"] == sel.get("step")]
        rows.append({"label": label, "seed": m.seed,
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


def one_run_per_label(runs, lb: pd.DataFrame, task: str) -> dict[str, object]:
    """The lowest-seed run behind each row label of the task: the one a figure shows."""
    listed = run_list(runs, lb, task)
    by_id = {r.manifest.run_id: r for r in runs}
    out = {}
    for row in listed.sort_values(["label", "seed", "run_id"]).itertuples():
        out.setdefault(row.label, by_id[row.run_id])
    return out
