"""Aggregate every recorded run into leaderboards and paper-shaped tables.

Reads the run store only; writes into a results directory (`reports/` unless
the user names another: the committed reference `results/` is rewritten only
when asked for by name) `leaderboard.csv` (long format, one
row per task x method x variant x metric x feature space x perturbation, mean
and spread over seeds) and, per task, Table 1a (FID_o, FID_c, KID_o, KID_c) and
Table 1b (per-perturbation FID) as Markdown and CSV. Output is a pure function
of the runs: rerunning on the same runs gives byte-identical files.

`index.html` and `<task>/index.html` show the same tables as web pages (`html.py`). A task's `tables.md` is the
sections in `SECTIONS`, in order: each reads one `TaskView` and returns a `Part` (its
Markdown, the CSV tables and figures written with it). The tables are built in `tables.py`, drawn in `charts.py`,
and the words around them are `report_text.py`'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import pandas as pd

from benchmark import io
from benchmark import report_text as text
from benchmark.charts import draw_cd, draw_curves, draw_shift
from benchmark.html import write_pages
from benchmark.markdown import to_markdown
from benchmark.store import RunStore
from benchmark.tables import (CONVERGED, _main_space, ablation_rows, ablation_tests, batch_change, batch_models,
                              comparisons, curve_frame, leaderboard, one_run_per_label, provenance_notes, ranking,
                              run_list, table1a, table1b, table2a, table_map, table_map_per_perturbation, table_pick, table_prdc, table_shift, training_table,
                              row_sources, training_cell, unconditioned_labels)
from benchmark.metrics.stats import friedman


@dataclass
class TaskView:
    """What every section of one task's report reads: the task's runs and the leaderboard, where to write."""

    task: str
    runs: list
    lb: pd.DataFrame
    folder: Path
    calibration: Path | None = None

    @cached_property
    def training(self) -> pd.DataFrame:
        return training_table(self.runs, self.lb, self.task)


@dataclass
class Part:
    """What one section adds: Markdown for `tables.md`, and the CSV tables (by file name) and figures that go with it."""

    markdown: list[str] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)

    def section(self, name: str, table: pd.DataFrame, title: str, words: str, fmt: str = ".3f") -> Part:
        self.tables[name] = table
        self.markdown += [f"\n## {title}\n", words, to_markdown(table, fmt)]
        return self


def _table1a(v: TaskView) -> Part:
    num, fmt = table1a(v.lb, v.task, v.training, unconditioned_labels(v.runs, v.lb, v.task),
                       row_sources(v.runs, v.lb, v.task))
    part = Part([f"# {v.task}: Table 1a\n", text.TABLE1A, to_markdown(fmt)], {"table1a.csv": num})
    if not v.training.empty:
        t = v.training
        shown = t.assign(**{c: t[c].map(lambda x, c=c: training_cell(c, x))
                            for c in ("train min", "val change, last quarter")})
        part.tables["training.csv"] = t
        part.markdown += [text.TRAINING.format(converged=CONVERGED), "\n", to_markdown(shown)]
    return part


def _calibration(v: TaskView) -> Part:
    return Part(calibration_section(v.calibration, v.task, v.lb))


def _curves(v: TaskView) -> Part:
    frame = curve_frame(v.runs, v.lb, v.task)
    if frame.empty:
        return Part()
    fig = draw_curves(frame, v.task, v.folder / "learning_curves.png")
    return Part(tables={"learning_curves.csv": frame}, figures=[fig] if fig is not None else [])


def _table1b(v: TaskView) -> Part:
    part = Part()
    for space in ("inception", "morphology"):
        t = table1b(v.lb, v.task, space)
        if not t.empty:
            part.tables[f"table1b_{space}.csv"] = t
            part.markdown += [f"\n## Table 1b: per-perturbation FID [{space}]\n", to_markdown(t)]
    return part


def _table2a(v: TaskView) -> Part:
    overall, per_moa = table2a(v.lb, v.task)
    if overall.empty:
        return Part()
    return Part(["\n## Table 2a: MoA accuracy\n", text.TABLE2A, to_markdown(overall),
                 "\nPer MoA (accuracy; n generated images per MoA):\n\n", to_markdown(per_moa, ".3f")],
                {"table2a.csv": overall, "table2a_per_moa.csv": per_moa})


def _table2c(v: TaskView) -> Part:
    """Ablations: every variant of a method next to its default row, and the test of each against that row."""
    t = v.lb[v.lb["task"] == v.task]
    variants = t[ablation_rows(t)]
    full = t[t["method"].isin(set(variants["method"])) & (t["variant"] == "default")]["label"]
    if full.empty:  # no ablations, or none whose method has its default row here
        return Part()
    t2c = table_pick(v.lb[v.lb["label"].isin(set(variants["label"]) | set(full))], [v.task])
    if t2c.empty:
        return Part()
    part = Part(["\n## Table 2c: ablations\n", to_markdown(t2c, ".4g")], {"table2c.csv": t2c})
    tests = ablation_tests(v.lb, v.task, v.runs)
    if not tests.empty:
        part.markdown += [text.ABLATION_TESTS, to_markdown(tests, ".3g")]
        part.tables["table2c_tests.csv"] = tests
    return part


def _prdc(v: TaskView) -> Part:
    t = table_prdc(v.lb, v.task)
    return Part() if t.empty else Part().section("prdc.csv", t, "Precision, recall, density, coverage", text.PRDC)


def _map(v: TaskView) -> Part:
    t = table_map(v.lb, v.task)
    if t.empty:
        return Part()
    part = Part().section("map.csv", t, "Phenotypic activity and retrieval (mean average precision, copairs)",
                          text.MAP)
    lb = v.lb
    for space in sorted(set(lb[(lb["task"] == v.task) & (lb["metric"] == "map_activity")]["feature_space"])):
        per = table_map_per_perturbation(lb, v.task, space)
        part.tables[f"map_{space}.csv"] = per
        part.markdown += [f"\nActivity mAP per perturbation [{space}]:\n\n", to_markdown(per, ".3f")]
    return part


def _shift(v: TaskView) -> Part:
    summary, detail = table_shift(v.lb, v.task)
    if summary.empty:
        return Part()
    part = Part().section("feature_shift.csv", summary, "Feature shifts", text.SHIFT)
    for space, table in detail.items():
        part.tables[f"feature_shift_{space}.csv"] = table
        part.figures.append(draw_shift(table, space, v.task, v.folder / f"feature_shift_{space}.png"))
    return part


def _comparisons(v: TaskView) -> Part:
    pairs, tests = comparisons(v.lb, v.task, v.runs)
    part, lb = Part(), v.lb
    for space in sorted(set(lb[(lb["task"] == v.task) & (lb["metric"] == "fid")]["feature_space"])):
        per = table1b(lb, v.task, space).set_index("perturbation").drop(columns="n_real")
        cd = draw_cd(per, f"{v.task}, FID per perturbation [{space}]", v.folder / f"cd_fid_{space}.png")
        if cd is not None:
            part.figures.append(cd)
            tests.append(f"critical-difference diagram of FID per perturbation [{space}]: `{cd.name}`")
    if not pairs.empty:
        part.section("comparisons.csv", pairs, "Paired comparisons of methods",
                     text.COMPARISONS + "".join(f"- {n}\n" for n in tests) + "\n", ".3g")
    return part


def _provenance(v: TaskView) -> Part:
    part = Part(["\n## Provenance\n"] + [f"- {n}\n" for n in provenance_notes(v.lb, v.task)])
    listed = run_list(v.runs, v.lb, v.task)
    if not listed.empty:
        part.markdown += ["\n## Runs\n", to_markdown(listed)]
    return part


SECTIONS: tuple[Callable[[TaskView], Part], ...] = (
    _table1a, _calibration, _curves, _table1b, _table2a, _table2c, _prdc, _map, _shift, _comparisons, _provenance)


def report(runs_dir: Path, results_dir: Path, data_dir: Path | None = None,
           sample_perts: list[str] | None = None, calibration: Path | None = None) -> list[Path]:
    """Tables (always) and figures (where `data_dir` holds the tasks' data) from the run store; with `calibration`
    (a `calibrate` output), what each metric resolves under the simulated screen's tables."""
    # images scored on the validation split are for choosing checkpoints and settings, never for the leaderboard
    runs = [r for r in RunStore(runs_dir).runs() if r.manifest.eval_split == "test"]
    lb = leaderboard(runs)
    results_dir = Path(results_dir)
    written = [io.write_csv(results_dir / "leaderboard.csv", lb)]
    tasks = sorted(set(lb["task"]))
    for task in tasks:
        view = TaskView(task, runs, lb, results_dir / task, calibration)
        markdown = []
        for part in (build(view) for build in SECTIONS):
            written += [io.write_csv(view.folder / name, t) for name, t in part.tables.items()] + part.figures
            markdown += part.markdown
        written += [io.write_text(view.folder / "tables.md", "".join(markdown)),
                    io.write_csv(view.folder / "leaderboard.csv", lb[lb["task"] == task])]
    if data_dir is not None:
        from benchmark.figures import figures

        chosen = {task: one_run_per_label(runs, lb, task) for task in tasks}
        figs, fig_notes = figures(chosen, data_dir, results_dir / "figures", sample_perts)
    else:
        figs = _earlier_figures(results_dir)
        fig_notes = [text.FIGURES_KEPT if figs else text.FIGURES_NONE]
    specs = {r.manifest.task_name: r.manifest.task for r in runs}
    written += figs + overview(runs, lb, specs, results_dir, figs, fig_notes)
    written += write_pages(results_dir, tasks, [p for p in written if p.suffix == ".png"])
    _forget_stale(results_dir, written)
    return written


def calibration_section(cal_dir: Path | None, task: str, lb: pd.DataFrame) -> list[str]:
    """Markdown under a simulated screen's Table 1a: what each of its metrics resolves at the table's n per
    perturbation, from a `calibrate` output (its ladders exist on the simulated screen only)."""
    from benchmark.calibration import LADDERS, recommended_n, resolution

    if cal_dir is None or not (Path(cal_dir) / "summary.csv").is_file():
        return []
    prov = json.loads((Path(cal_dir) / "provenance.json").read_text())
    if task.split("-")[0] != prov["calibration task"].split("-")[0]:
        return []
    summary = pd.read_csv(Path(cal_dir) / "summary.csv")
    t = lb[(lb["task"] == task) & (lb["metric"] == "fid_c")]
    if t.empty:
        return []
    n_table = int(t["n_gen"].min())
    fitting = [n for n in sorted(set(summary["n"])) if n <= n_table]
    if not fitting:
        return [text.CALIBRATION_TOO_SMALL.format(folder=cal_dir, smallest=summary["n"].min(), n=n_table)]
    n = fitting[-1]
    try:  # named as the user would type it, so the text does not depend on where the repository lives
        cal_dir = Path(cal_dir).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        pass
    metrics = [f"{k} [{sp}]" for sp in ("inception", "morphology") for k in ("fid_o", "fid_c", "kid_o", "kid_c")]
    metrics += ["paired_rmse", "paired_morph", "moa_accuracy"]
    metrics += [f"map_{k} [{sp}]" for sp in ("inception", "morphology") for k in ("activity", "retrieval")]
    table = resolution(summary, n, metrics)
    ladders = "; ".join(f"{name}: {LADDERS[name].parameter}" for name in LADDERS if name in table.columns)
    recs = []
    for m in [x for x in metrics if x.startswith(("fid_c", "kid_c"))]:
        best, why = recommended_n(summary, m)
        if best is not None:
            recs.append(f"- {m}: n = {best} per perturbation ({why})\n")
    return [f"\n## What these metrics resolve at n = {n} per perturbation\n",
            text.CALIBRATION.format(task=prov["calibration task"], folder=cal_dir, seed=prov["seed"],
                                    replicates=prov["bootstrap replicates"], n=n, ladders=ladders),
            to_markdown(table), "\nImages per perturbation recommended for the per-perturbation metrics:\n\n", *recs]


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


def overview(runs, lb: pd.DataFrame, specs: dict[str, dict], results_dir: Path, figs: list[Path] = (),
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
            joined["other-batch model"] = joined["method"].map(batch_models(runs, lb, same, other))
            parts.append(joined)
        t2d = pd.concat(parts, ignore_index=True)
        io.write_csv(results_dir / "table2d.csv", t2d)
        md += ["\n## Table 2d: controls from the same batch vs another batch\n", to_markdown(t2d, ".4g")]
        written.append(results_dir / "table2d.csv")
        change = pd.concat([batch_change(lb, same, other) for same, other in pairs], ignore_index=True)
        if not change.empty:
            io.write_csv(results_dir / "table2d_tests.csv", change)
            md += [text.BATCH_CHANGE, to_markdown(change, ".3g")]
            written.append(results_dir / "table2d_tests.csv")
    ranks = ranking(lb)
    if not ranks.empty:
        io.write_csv(results_dir / "ranking.csv", ranks)
        md += [f"\n## Rank by FID_o [{_main_space(lb)}] within each task (1 = best)\n", to_markdown(ranks, ".1f")]
        space = _main_space(lb)
        fid_o = lb[(lb["metric"] == "fid_o") & (lb["feature_space"] == space) & (lb["perturbation"] == "")]
        on_all = fid_o.pivot_table(index="task", columns="label", values="value", aggfunc="first").dropna(axis=1)
        p, n = friedman(on_all)
        md.append(text.FRIEDMAN_NONE if pd.isna(p) else text.FRIEDMAN.format(
            k=on_all.shape[1], n=n, methods=", ".join(on_all.columns), p=p))
        written.append(results_dir / "ranking.csv")
    if figs or fig_notes:
        md += ["\n## Figures\n"] + [f"- `{p.relative_to(results_dir)}`\n" for p in figs if p.suffix == ".png"]
        md += [f"- {n}\n" for n in fig_notes]
    io.write_text(results_dir / "tables.md", "".join(md))
    return written + [results_dir / "tables.md"]
