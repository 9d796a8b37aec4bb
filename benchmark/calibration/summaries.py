"""What a calibration says: its tables, what each metric resolves at a given n, the n to recommend, the Markdown
summary; and its folder (written atomically, or merged into an earlier one)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark import io
from benchmark.calibration.drawing import draw_ladder
from benchmark.errors import BenchmarkError
from benchmark.markdown import to_markdown


def resolution(summary: pd.DataFrame, n: int, metrics: list[str]) -> pd.DataFrame:
    """What each metric tells apart at n images per perturbation: per ladder, the parameter value of the smallest
    rung resolved from the true counterfactuals (`-`: none; `nb`: not bootstrapped at this n), and on how many
    ladders the metric orders every rung right."""
    part = summary[(summary["n"] == n) & summary["metric"].isin(metrics)]
    rows = []
    for metric in [m for m in metrics if m in set(part["metric"])]:
        m = part[part["metric"] == metric]
        row = {"metric": metric}
        for r in m.itertuples():
            row[r.ladder] = "nb" if r.n_boot == 0 else "-" if pd.isna(r.resolved_value) else f"{r.resolved_value:g}"
        row["orders every rung"] = f"{int(m['ranks_all_rungs'].sum())} of {len(m)}"
        rows.append(row)
    return pd.DataFrame(rows)


def recommended_n(summary: pd.DataFrame, metric: str) -> tuple[int | None, str]:
    """The smallest calibrated n at which the metric resolves, on every ladder, as fine a rung as it does with the
    most images (more images no longer help); (None, why) when no n was bootstrapped."""
    m = summary[(summary["metric"] == metric) & (summary["n_boot"] > 0)]
    if m.empty:
        return None, "not bootstrapped at any n"
    rung = m.assign(r=m["resolved_rung"].fillna(np.inf)).pivot_table(index="n", columns="ladder", values="r")
    best = rung.loc[rung.index.max()]
    for n in sorted(rung.index):
        if (rung.loc[n] <= best).all():
            unresolved = [c for c in rung.columns if np.isinf(best[c])]
            why = (f"resolves the smallest step of every ladder from n = {n}; finer steps are not calibrated"
                   if (best == 1).all() else f"resolves at n = {n} what it resolves at n = {rung.index.max()}")
            why += f"; never resolves {', '.join(unresolved)}" if unresolved else ""
            if n == rung.index.max() and len(rung.index) > 1:
                why += "; still improving at the largest n calibrated"
            return int(n), why
    raise AssertionError("unreachable: the largest n always qualifies")


def summary_markdown(summary: pd.DataFrame, rungs: pd.DataFrame, provenance: dict) -> str:
    """Per n: for every metric and ladder, the rank agreement and the smallest resolved rung's parameter value."""
    lines = ["# Calibration of the metrics on the simulated screen\n\n",
             "Ladders of generators with a known order of quality, built from the screen's true counterfactuals "
             "(rung 0: the counterfactuals themselves, real cells disjoint from the reference set; quality falls with "
             "the rung). Each cell: Spearman correlation of the metric with the true order over the rungs (1: right, "
             "sign-corrected for higher-is-better metrics), then the parameter value of the smallest rung that a "
             "seeded bootstrap over images tells apart from rung 0 at 95% (`-`: none; `nb`: not bootstrapped, a "
             "whole-set metric above the bootstrap's size limit).\n\n",
             "".join(f"- {k}: {v}\n" for k, v in provenance.items()),
             "\n## The rungs and their true paired error (pixel RMSE against the counterfactuals)\n\n",
             to_markdown(rungs.pivot_table(index="rung", columns="ladder", values="paired_error").reset_index(),
                         ".4f"),
             "\nParameters: " + "; ".join(f"{r.ladder}: {r.parameter} {list(rungs[rungs['ladder'] == r.ladder]['value'])}"
                                          for r in rungs.drop_duplicates("ladder").itertuples()) + "\n"]
    for n, part in summary.groupby("n"):
        cell = part.assign(cell=[f"{s:.2f} / {'nb' if b == 0 else '-' if pd.isna(v) else f'{v:g}'}"
                                 for s, v, b in zip(part["spearman"], part["resolved_value"], part["n_boot"])])
        wide = cell.pivot_table(index="metric", columns="ladder", values="cell", aggfunc="first")
        wide = wide.reindex(list(dict.fromkeys(part["metric"])))[list(dict.fromkeys(part["ladder"]))]
        ranked = part.groupby("metric", sort=False)["ranks_all_rungs"].sum().astype(int)
        wide["ladders ranked right"] = ranked.reindex(wide.index).astype(str) + f" of {part['ladder'].nunique()}"
        floor = part.groupby("metric", sort=False)["floor"].first()
        wide["real-vs-real floor"] = floor.reindex(wide.index).map("{:.4g}".format)
        lines += [f"\n## n = {n} per perturbation\n\n", to_markdown(wide.reset_index())]
    return "".join(lines)


def merged(out: Path, values: pd.DataFrame, summary: pd.DataFrame, rungs: pd.DataFrame,
           provenance: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """A calibration already in `out` with the metrics just computed put in place of its rows of the same metrics,
    for adding or redoing some metrics (a feature space, a retrained classifier) without the hours the rest took.
    Only an output of the same task, seed, bootstrap and ladders can take them; the provenance says which rows came
    from which run."""
    old_prov = json.loads((out / "provenance.json").read_text()) if (out / "provenance.json").is_file() else None
    if old_prov is None or not (out / "values.csv").is_file() or not (out / "summary.csv").is_file():
        raise BenchmarkError(f"--merge: {out} holds no calibration (provenance.json, values.csv, summary.csv)")
    for key in ("calibration task", "seed", "bootstrap replicates", "ladder steps"):
        if old_prov.get(key) != provenance.get(key):
            raise BenchmarkError(f"--merge: {out}/provenance.json has {key} {old_prov.get(key)!r}, this calibration "
                                 f"{provenance.get(key)!r}; merge only calibrations of the same screen and draws")
    old_rungs = pd.read_csv(out / "rungs.csv")
    mine = old_rungs[old_rungs["ladder"].isin(set(rungs["ladder"]))].reset_index(drop=True)
    if not np.allclose(mine["value"], rungs["value"].to_numpy()) or len(mine) != len(rungs):
        raise BenchmarkError(f"--merge: {out}/rungs.csv has other rungs than this calibration's ladders")
    new = set(summary["metric"])
    tables = []
    for name, fresh in (("values.csv", values), ("summary.csv", summary)):
        # the new rows take the places of the rows they replace; rows the old output did not have go last
        old = pd.read_csv(out / name)
        keys = ["ladder", "metric", "n"] + (["rung"] if "rung" in old else [])
        place = {k: i for i, k in enumerate(map(tuple, old[keys].to_numpy().tolist()))}
        at = [place.get(k, len(old) + i) for i, k in enumerate(map(tuple, fresh[keys].to_numpy().tolist()))]
        both = pd.concat([old[~old["metric"].isin(new)].assign(_at=np.flatnonzero(~old["metric"].isin(new))),
                          fresh.assign(_at=at)], ignore_index=True)
        tables.append(both.sort_values("_at", kind="stable").drop(columns="_at").reset_index(drop=True))
    part = ", ".join(sorted(new))
    prov = {**old_prov, f"rows of {part}": f"recomputed by code {provenance['code']}, MoA classifier "
                                           f"{provenance['MoA classifier']}; {provenance['compute']}"}
    if "moa_accuracy" in new:
        prov["MoA classifier"] = provenance["MoA classifier"]
    return tables[0], tables[1], old_rungs, prov


def write(out: Path, values: pd.DataFrame, summary: pd.DataFrame, rungs: pd.DataFrame, provenance: dict,
          ladders: list[str]) -> None:
    """A calibration's files: the values, the summary per ladder and metric, the rungs, the provenance, the summary
    as Markdown and one figure per ladder."""
    io.write_csv(out / "values.csv", values)
    io.write_csv(out / "summary.csv", summary)
    io.write_csv(out / "rungs.csv", rungs)
    io.write_json(out / "provenance.json", provenance)
    shown = {k: v for k, v in provenance.items() if k not in ("calibration task", "n")}
    io.write_text(out / "summary.md", summary_markdown(summary, rungs, shown))
    for ladder in ladders:
        draw_ladder(values, rungs, ladder, out / f"{ladder}.png")


def provenance(request, task, data, split_hash: str, weights: dict[str, str], moa, seconds: float) -> dict:
    """What produced a calibration, as its `provenance.json` and the head of its `summary.md` say it."""
    import os

    import torch

    from benchmark import __version__
    from benchmark.calibration.metrics import BOOT_MAX_IMAGES, CALIBRATION_KID_SUBSETS

    sha, _, changes = io.code_version(io.git_sha()).partition("+")
    code = sha[:12] + (f"+{changes[:8]} (uncommitted changes)" if changes else "")
    return {"task": f"{task.name} (split hash {split_hash[:16]}, plan {data.eval_plan().digest()[:16]})",
            "seed": request.seed, "bootstrap replicates": request.n_boot,
            "bootstrap of whole-set metrics (overall FD and KID, prdc, mAP)":
                f"up to {BOOT_MAX_IMAGES} images a side (their cost grows with the cube of the set; the tables' "
                "overall sets have 36 per perturbation)",
            "KID subsets per value": CALIBRATION_KID_SUBSETS,
            "not bootstrapped": ",".join(request.no_bootstrap) or "none",
            "ladder steps": "the defaults" if request.zoom == 1 else f"the defaults divided by {request.zoom:g}",
            "n capped": ", ".join(f"{k} up to n = {v}" for k, v in request.max_n.items()) or "none",
            "feature spaces": ", ".join(weights) + (" (weights sha256 " + ", ".join(
                f"{s} {sha256[:16]}" for s, sha256 in weights.items()) + ")"),
            "MoA classifier": moa.weights_sha256[:16] if moa is not None else "not scored",
            "channel rule": task.channel_rule, "code": f"benchmark {__version__}, git {code}",
            "compute": f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {seconds:.0f} s "
                       "(features from the cache where present)",
            "calibration task": task.name, "n": request.ns}
