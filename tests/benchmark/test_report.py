"""The report's paper tables from tiny runs: 2a (MoA), 2b (unseen), 2c (ablations), 2d (batch), ranks."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from benchmark.cli import main

from .conftest import TINY_CELLFLOW

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def results(tmp_path_factory, data_dir):
    runs = tmp_path_factory.mktemp("runs")
    out = tmp_path_factory.mktemp("results")
    common = ["--out", str(runs), "--data-dir", str(data_dir), "--features", "tiny,moa"]
    for task in ("synthetic-tiny", "synthetic-tiny-ood", "synthetic-tiny-batchswap"):
        for method in ("identity", "oracle"):
            assert main(["run", "--method", method, "--task", task, *common]) == 0
    for seed in ("0", "1"):
        assert main(["run", "--method", "cellflow", "--task", "synthetic-tiny", "--seed", seed, *common, *TINY_CELLFLOW]) == 0
    assert main(["run", "--method", "identity", "--task", "synthetic-tiny", "--seed", "1", *common]) == 0
    assert main(["run", "--method", "cellflow", "--task", "synthetic-tiny", "--profile", "no-cfg", *common,
                 *TINY_CELLFLOW]) == 0
    assert main(["report", "--runs", str(runs), "--results", str(out), "--data-dir", str(data_dir)]) == 0
    return out, runs


def test_table2a_has_every_method_and_the_real_ceiling_with_intervals(results):
    results, _ = results
    t = pd.read_csv(results / "synthetic-tiny" / "table2a.csv")
    assert list(t["method"])[-1] == "real held-out images (ceiling)"
    assert {"identity", "oracle", "cellflow", "cellflow (w/o CFG)"} <= set(t["method"])
    assert t["accuracy [95% CI]"].str.match(r"^\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]$").all()
    t1a = pd.read_csv(results / "synthetic-tiny" / "table1a.csv")
    assert not [c for c in t1a.columns if "moa" in c]  # accuracy is Table 2a's, not an FID column
    per = pd.read_csv(results / "synthetic-tiny" / "table2a_per_moa.csv")
    assert "real held-out" in per.columns and per["n"].min() > 0


def test_ablations_unseen_and_batch_tables_and_ranks(results):
    results, _ = results
    t2c = pd.read_csv(results / "synthetic-tiny" / "table2c.csv")
    assert set(t2c["method"]) == {"cellflow", "cellflow (w/o CFG)"}
    assert dict(zip(t2c["method"], t2c["n_seeds"])) == {"cellflow": 2, "cellflow (w/o CFG)": 1}
    t2b = pd.read_csv(results / "table2b.csv")
    assert set(t2b["task"]) == {"synthetic-tiny-ood"} and set(t2b["method"]) == {"identity", "oracle"}
    t2d = pd.read_csv(results / "table2d.csv")
    assert {"FID_o [tiny] same-batch", "FID_o [tiny] other-batch", "n_seeds other-batch"} <= set(t2d.columns)
    assert set(t2d["method"]) == {"identity", "oracle"}
    lb = pd.read_csv(results / "synthetic-tiny" / "leaderboard.csv")
    cf = lb[(lb["label"] == "cellflow") & (lb["metric"] == "fid_o")].iloc[0]
    assert cf["n_seeds"] == 2 and cf["seed_ci95"] > 0


def test_table2d_tests_each_methods_change_between_batches_paired_by_perturbation(results):
    """Checked against scipy's Wilcoxon on the per-perturbation FIDs of the two tasks' own leaderboards."""
    from scipy import stats

    results, _ = results
    tests = pd.read_csv(results / "table2d_tests.csv")
    assert set(tests["method"]) == {"identity", "oracle"} and set(tests["task"]) == {"synthetic-tiny"}
    row = tests[(tests["method"] == "identity") & (tests["metric"] == "FID per perturbation [tiny]")].iloc[0]
    per = {}
    for task in ("synthetic-tiny", "synthetic-tiny-batchswap"):
        lb = pd.read_csv(results / task / "leaderboard.csv", keep_default_na=False)
        hit = lb[(lb["label"] == "identity") & (lb["metric"] == "fid") & (lb["feature_space"] == "tiny")
                 & (lb["perturbation"] != "")]
        per[task] = hit.set_index("perturbation")["value"].astype(float)
    d = (per["synthetic-tiny"] - per["synthetic-tiny-batchswap"]).dropna()
    assert row["n perturbations"] == len(d) > 2
    assert row["median same - other"] == pytest.approx(float(d.median()))
    assert row["same lower"] == int((d < 0).sum()) and row["other lower"] == int((d > 0).sum())
    assert row["p"] == pytest.approx(float(stats.wilcoxon(d[d != 0]).pvalue))
    assert (tests["p (Holm)"] >= tests["p"]).all()


def test_table2d_says_whether_the_other_batch_rows_score_the_same_weights(results, data_dir, tmp_path):
    """A model scored again with other-batch controls (`--from-run`) isolates the controls; one trained again on the
    other task does not (it picks its own checkpoint), and the table must say which it holds."""
    _, runs = results
    store = tmp_path / "runs"
    shutil.copytree(runs, store)
    full = next(d for d in sorted(store.glob("*-cellflow-synthetic-tiny-s0-*"))
                if json.loads((d / "manifest.json").read_text())["profile"] != "no-cfg")
    common = ["--task", "synthetic-tiny-batchswap", "--out", str(store), "--data-dir", str(data_dir),
              "--features", "tiny,moa"]
    assert main(["run", "--method", "cellflow", "--seed", "0", "--from-run", str(full), *common]) == 0
    assert main(["run", "--method", "cellflow", "--profile", "no-cfg", *common, *TINY_CELLFLOW]) == 0
    out = tmp_path / "results"
    assert main(["report", "--runs", str(store), "--results", str(out)]) == 0
    t2d = pd.read_csv(out / "table2d.csv")
    assert dict(zip(t2d["method"], t2d["other-batch model"])) == {
        "identity": "no training", "oracle": "no training", "cellflow": "same weights",
        "cellflow (w/o CFG)": "trained again"}
    assert "cellflow" in set(pd.read_csv(out / "table2d_tests.csv")["method"])


def test_figures_are_drawn_and_the_whole_report_is_byte_identical_on_rerun(results, data_dir, tmp_path):
    out, runs = results
    figs = sorted(p.relative_to(out) for p in (out / "figures").rglob("*.png"))
    assert {"figures/synthetic-tiny/samples.png", "figures/synthetic-tiny/pca.png"} <= {str(p) for p in figs}
    assert any("trajectories" in str(p) and str(p).endswith("-forward.png") for p in figs)
    again = tmp_path / "again"
    assert main(["report", "--runs", str(runs), "--results", str(again), "--data-dir", str(data_dir)]) == 0
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((out / f).read_bytes() == (again / f).read_bytes() for f in files)


def test_report_never_writes_the_committed_results_unless_named(results, tmp_path, monkeypatch):
    _, runs = results
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "leaderboard.csv").write_text("the committed reference\n")
    assert main(["report", "--runs", str(runs)]) == 0
    assert (tmp_path / "results" / "leaderboard.csv").read_text() == "the committed reference\n"
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["leaderboard.csv"]
    assert (tmp_path / "reports" / "leaderboard.csv").is_file() and (tmp_path / "reports" / "tables.md").is_file()


def test_a_rerun_removes_what_the_report_no_longer_writes_and_nothing_else(results, tmp_path):
    _, runs = results
    out = tmp_path / "out"
    assert main(["report", "--runs", str(runs), "--results", str(out)]) == 0
    assert (out / "synthetic-tiny-ood" / "tables.md").is_file() and (out / "table2b.csv").is_file()
    (out / "synthetic-tiny-ood" / "my notes.txt").write_text("mine")
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for run in runs.iterdir():  # the same store without the OOD runs
        if not run.name.startswith(".") and "-ood-" not in run.name:
            (fewer / run.name).symlink_to(run)
    assert main(["report", "--runs", str(fewer), "--results", str(out)]) == 0
    assert not (out / "table2b.csv").exists() and not (out / "synthetic-tiny-ood" / "tables.md").exists()
    assert (out / "synthetic-tiny-ood" / "my notes.txt").read_text() == "mine"  # not the report's: kept
    assert (out / "synthetic-tiny" / "tables.md").is_file() and "table2b" not in (out / "tables.md").read_text()


def test_the_report_only_reads_stored_runs():
    """report and figures import nothing that trains or loads a model: no methods, runner or trajectory."""
    import ast
    from pathlib import Path

    root = Path(__file__).parents[2] / "benchmark"
    for name in ("report.py", "tables.py", "charts.py", "report_text.py", "figures.py"):
        tree = ast.parse((root / name).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        bad = {m for m in imported if m.split(".")[0] == "methods" or m in ("benchmark.runner", "benchmark.trajectory")}
        assert bad == set(), (name, bad)



def test_a_report_loads_no_model_generation_or_torch_code_when_it_runs(tmp_path):
    """The direct imports above are not enough: what a report run loads, transitively, from the committed records,
    in a fresh interpreter."""
    import subprocess
    import sys

    code = ("import sys; from benchmark.report import report; "
            f"report({str(ROOT / 'results' / 'runs')!r}, {str(tmp_path / 'out')!r}, "
            f"calibration={str(ROOT / 'results' / 'calibration')!r}); "
            "print(' '.join(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.strip().splitlines()[-1].split())
    assert (tmp_path / "out" / "tables.md").is_file()
    bad = {m for m in loaded if m.split(".")[0] in ("methods", "torch", "diffusers")
           or m in ("benchmark.generation", "benchmark.method", "benchmark.runner", "benchmark.trajectory",
                    "benchmark.validation")}
    assert bad == set()


def test_a_flow_run_draws_its_trajectories_and_the_report_collects_them(results, tmp_path):
    out, runs = results
    drawn = sorted(p.name for r in runs.iterdir() if "-cellflow-" in r.name for p in (r / "trajectories").glob("*.png"))
    assert drawn and all(name.endswith(("-forward.png", "-reverse.png")) for name in drawn)
    collected = sorted(p.name for p in (out / "figures" / "synthetic-tiny" / "trajectories").glob("*.png"))
    assert set(collected) <= set(drawn) and collected  # the default-variant run's strips, copied as they are


def test_table2c_tests_each_ablation_against_its_full_method_paired_by_perturbation(results):
    """Checked against scipy's Wilcoxon on the per-perturbation FIDs of the two rows in the task's leaderboard."""
    from scipy import stats

    results, _ = results
    tests = pd.read_csv(results / "synthetic-tiny" / "table2c_tests.csv")
    assert set(tests["method"]) == {"cellflow (w/o CFG)"} and set(tests["task"]) == {"synthetic-tiny"}
    assert set(tests["metric"]) == {"FID per perturbation [tiny]", "KID per perturbation [tiny]"}
    row = tests[tests["metric"] == "FID per perturbation [tiny]"].iloc[0]
    lb = pd.read_csv(results / "synthetic-tiny" / "leaderboard.csv", keep_default_na=False)
    per = {label: lb[(lb["label"] == label) & (lb["metric"] == "fid") & (lb["feature_space"] == "tiny")
                     & (lb["perturbation"] != "")].set_index("perturbation")["value"].astype(float)
           for label in ("cellflow (w/o CFG)", "cellflow")}
    d = (per["cellflow (w/o CFG)"] - per["cellflow"]).dropna()
    assert row["n perturbations"] == len(d) > 2
    assert row["median ablation - full"] == pytest.approx(float(d.median()))
    assert row["ablation lower"] == int((d < 0).sum()) and row["full lower"] == int((d > 0).sum())
    assert row["p"] == pytest.approx(float(stats.wilcoxon(d[d != 0]).pvalue))
    assert (tests["p (Holm)"] >= tests["p"]).all()
    assert "Does each ablation score differently" in (results / "synthetic-tiny" / "tables.md").read_text()


def test_prdc_and_paired_comparisons_are_reported_per_task(results):
    results, _ = results
    prdc = pd.read_csv(results / "synthetic-tiny" / "prdc.csv")
    assert {"identity", "oracle", "cellflow"} <= set(prdc["method"])
    for col in ("precision [tiny]", "recall [tiny]", "coverage [tiny]"):
        assert prdc[col].between(0, 1).all()
    pairs = pd.read_csv(results / "synthetic-tiny" / "comparisons.csv")
    assert set(pairs["metric"]) == {"FID per perturbation [tiny]", "KID per perturbation [tiny]"}
    labels = set(pairs["A"]) | set(pairs["B"])
    assert "cellflow" in labels and "cellflow (w/o CFG)" not in labels  # an ablation is tested under Table 2c
    assert len(pairs) == 2 * len(labels) * (len(labels) - 1) // 2 and pairs["p (Holm)"].ge(pairs["p"]).all()
    assert (results / "synthetic-tiny" / "cd_fid_tiny.png").is_file()  # critical-difference diagram


def test_comparisons_add_the_test_over_seeds_from_each_runs_own_rows(results):
    """The seed test's inputs rebuilt from the runs' metric files: each seed's mean per-perturbation FID; identity,
    a rule, scores the same on both seeds, so Welch's test reduces to cellflow's seeds against identity's value."""
    from scipy import stats

    results, runs = results
    pairs = pd.read_csv(results / "synthetic-tiny" / "comparisons.csv").set_index(["metric", "A", "B"])
    row = pairs.loc[("FID per perturbation [tiny]", "identity", "cellflow")]
    per_seed = {}
    for run in runs.iterdir():
        m = json.loads((run / "manifest.json").read_text()) if (run / "manifest.json").is_file() else None
        if m and m["task"]["name"] == "synthetic-tiny" and m["method"] in ("identity", "cellflow") \
                and m["variant"] == "default":
            rows = pd.read_csv(run / "metrics.csv")
            rows = rows[(rows["metric"] == "fid") & (rows["feature_space"] == "tiny") & rows["perturbation"].notna()]
            per_seed.setdefault(m["method"], []).append(rows["value"].mean())
    assert row["seeds"] == "2 v 2" and len(per_seed["identity"]) == len(per_seed["cellflow"]) == 2
    assert per_seed["identity"][0] == pytest.approx(per_seed["identity"][1], rel=1e-6)  # a rule: no spread
    expected = stats.ttest_1samp(per_seed["cellflow"], per_seed["identity"][0]).pvalue
    assert row["p (seeds)"] == pytest.approx(expected, rel=1e-6)
    assert pd.isna(pairs.loc[("FID per perturbation [tiny]", "identity", "oracle"), "p (seeds)"])  # 2 v 1
    maps = pd.read_csv(results / "synthetic-tiny" / "map.csv")
    assert list(maps["method"])[-1] == "real held-out images" and maps["activity mAP [tiny]"].between(0, 1).all()
    per = pd.read_csv(results / "synthetic-tiny" / "map_tiny.csv")
    assert len(per) == 8 and "real" in per.columns  # the tiny screen's eight compounds


def test_feature_shifts_are_tabled_and_drawn_for_named_features(tmp_path, data_dir, tiny_data):
    runs, out = tmp_path / "runs", tmp_path / "results"
    for method in ("identity", "oracle"):
        assert main(["run", "--method", method, "--task", "synthetic-tiny", "--out", str(runs), "--data-dir",
                     str(data_dir), "--features", "morphology"]) == 0
    assert main(["report", "--runs", str(runs), "--results", str(out)]) == 0
    shift = pd.read_csv(out / "synthetic-tiny" / "feature_shift.csv").set_index("method")
    # the oracle's cells are real cells of the perturbation: their shifts follow the real ones
    assert shift.loc["oracle", "effect correlation [morphology]"] > shift.loc["identity", "effect correlation [morphology]"]
    detail = pd.read_csv(out / "synthetic-tiny" / "feature_shift_morphology.csv")
    assert {"perturbation", "feature", "real", "identity", "oracle"} <= set(detail.columns)
    assert (out / "synthetic-tiny" / "feature_shift_morphology.png").is_file()


def test_records_alone_regenerate_the_tables_and_keep_the_figures(results, tmp_path):
    """What `results/` is built from: records exported from a store (no images, no weights) give the same tables
    as the runs themselves, and a report without images keeps the figures an earlier report drew."""
    out, runs = results
    records = tmp_path / "records"
    assert main(["list-runs", "--out", str(runs), "--export", str(records)]) == 0
    assert {p.name for p in records.iterdir()} == {p.name for p in runs.iterdir() if not p.name.startswith(".")}
    assert all(sorted(f.name for f in p.iterdir()) == ["manifest.json", "metrics.csv"] for p in records.iterdir())
    copy = tmp_path / "results"
    shutil.copytree(out, copy)
    assert main(["report", "--runs", str(records), "--results", str(copy)]) == 0
    before, after = _tree(out), _tree(copy)
    assert sorted(before) == sorted(after) and any(k.startswith("figures/") for k in after)
    changed = sorted(k for k in before if before[k] != after[k])
    assert changed == ["index.html", "tables.md"]  # only its figure note (kept, not drawn), and its page
    assert "kept from an earlier report" in (copy / "tables.md").read_text()


def test_the_committed_results_are_regenerated_from_their_run_records(tmp_path):
    """`results/` is a function of `results/runs/` (manifest and metric rows of each run): from an empty directory
    holding only the figures that needed the runs' images (drawn when the reference was made) and the list of the
    last report's files, `report` writes every table again, byte for byte. The PNGs the report draws from records
    (heatmaps, critical-difference diagrams, learning curves) are compared pixel for pixel, decoded (their bytes
    also depend on the PNG encoder's build; matplotlib and seaborn are pinned)."""
    import numpy as np
    from PIL import Image

    committed = ROOT / "results"
    copy = tmp_path / "results"
    shutil.copytree(committed / "figures", copy / "figures")
    shutil.copy(committed / ".report-files", copy / ".report-files")
    assert main(["report", "--runs", str(committed / "runs"), "--results", str(copy), "--calibration",
                 str(committed / "calibration")]) == 0
    # not the report's (nor calibrate's): the run records it reads, and the search behind the reference profiles
    want = {k: v for k, v in _tree(committed).items() if not k.startswith(("runs/", "reference/", "calibration/"))}
    got = _tree(copy)
    assert sorted(got) == sorted(want)
    for name in want:
        if name.endswith(".png") and not name.startswith("figures/"):
            pixels = [np.asarray(Image.open(root / name).convert("RGBA")) for root in (copy, committed)]
            assert pixels[0].shape == pixels[1].shape and np.array_equal(*pixels), name
        else:
            assert got[name] == want[name], name


def _tree(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_each_table_says_what_its_metrics_resolve_at_its_n(results, tmp_path):
    """A `calibrate` output beside the runs: under the screen's Table 1a, the resolved step per metric and ladder at
    the largest calibrated n not above the table's, and the recommended n for the per-perturbation metrics."""
    _, runs = results
    cal = tmp_path / "cal"
    cal.mkdir()
    rows = [{"ladder": "blur", "metric": m, "n": n, "resolved_rung": r, "resolved_value": r / 4, "n_boot": 20,
             "ranks_all_rungs": True, "spearman": 1.0}
            for m in ("fid_c [inception]", "paired_rmse") for n, r in ((2, 3), (4, 1), (16, 1))]
    pd.DataFrame(rows).to_csv(cal / "summary.csv", index=False)
    (cal / "provenance.json").write_text('{"calibration task": "synthetic-calibration", "seed": 0, '
                                         '"bootstrap replicates": 20}')
    out = tmp_path / "report"
    assert main(["report", "--runs", str(runs), "--results", str(out), "--calibration", str(cal)]) == 0
    text = (out / "synthetic-tiny" / "tables.md").read_text()
    assert "## What these metrics resolve at n = 4 per perturbation" in text  # 16 is more than the tiny screen's 8
    assert "| fid_c [inception] | 0.25 | 1 of 1 |" in text
    assert "- fid_c [inception]: n = 4 per perturbation (resolves the smallest step of every ladder from n = 4" in text


def test_a_feature_space_scored_with_two_sets_of_weights_is_refused(results, tmp_path, capsys):
    """One seed's MoA accuracy from a retrained classifier (another hash) must not be averaged with the others'."""
    _, runs = results
    records = tmp_path / "records"
    assert main(["list-runs", "--out", str(runs), "--export", str(records)]) == 0
    assert main(["report", "--runs", str(records), "--results", str(tmp_path / "ok")]) == 0
    one = sorted(records.glob("*-cellflow-*"))[0] / "metrics.csv"
    m = pd.read_csv(one, keep_default_na=False)
    moa = m["feature_space"].str.startswith("moa")
    assert moa.any()
    m.loc[moa, "extractor_sha256"] = "f" * 64
    m.to_csv(one, index=False)
    assert main(["report", "--runs", str(records), "--results", str(tmp_path / "mixed")]) != 0
    err = capsys.readouterr().err
    assert one.parent.name in err and "ffffffffffffffff" in err and "not comparable" in err
    assert not (tmp_path / "mixed").exists()


@pytest.mark.parametrize("page", ["README.md", "docs/results.md"])
def test_the_readme_reference_table_shows_the_committed_results(page):
    """Each number of the reference table (README and the results page) is the committed Table 1a / 2a value to the
    digits shown, and no method of Table 1a is left out."""
    import re

    lines = (ROOT / page).read_text().splitlines()
    start = next(i for i, s in enumerate(lines) if s.startswith("| (mean of 3 seeds) |"))
    head = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for s in lines[start + 2:]:
        if not s.startswith("|"):
            break
        rows.append([c.strip() for c in s.strip("|").split("|")])
    t1 = pd.read_csv(ROOT / "results" / "synthetic" / "table1a.csv").set_index("method")
    t2 = pd.read_csv(ROOT / "results" / "synthetic" / "table2a.csv").set_index("method")
    column = {"FID_o [inception]": "FID_o [inception]", "FID_c [inception]": "FID_c [inception]",
              "FID_o [morph.]": "FID_o [morphology]", "FID_c [morph.]": "FID_c [morphology]",
              "paired RMSE": "paired RMSE"}
    checked = 0
    # every method of Table 1a (ablations, labelled "method (variant)", may be left to the page's Table 2c)
    assert {m for m in t1.index if "(" not in m} <= {row[0].lower() for row in rows}, "a method of Table 1a is missing"
    for row in rows:
        method = row[0].lower()
        assert method in t1.index, row[0]
        for name, cell in zip(head[1:], row[1:]):
            if name in column:
                want = t1.loc[method, column[name]]
            elif name == "MoA acc.":
                want = float(t2.loc[method, "accuracy [95% CI]"].split()[0])
            else:  # the convergence column: the largest last-quarter change over seeds, as the table shows it
                want = t1.loc[method, "val change, last quarter"] * 100 if cell else None
            if want is None:
                continue
            if pd.isna(want):  # a method not conditioned on the control has no paired error
                assert cell == "n/a", (row[0], name, cell)
                continue
            shown = re.match(r"[+-]?\d+(\.\d+)?", cell)
            assert shown, (row[0], name, cell)
            decimals = len(shown.group(1) or ".") - 1
            assert abs(float(shown.group(0)) - want) <= 0.5 * 10 ** -decimals + 1e-12, (row[0], name, cell, want)
            checked += 1
    assert checked >= 30


def _page_tables(page: str) -> list[list[list[str]]]:
    """Each <table> of a page as rows of cell texts (header row first), read with the standard library."""
    from html.parser import HTMLParser

    class Tables(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tables, self.cell = [], None

        def handle_starttag(self, tag, attrs):
            if tag == "table":
                self.tables.append([])
            elif tag == "tr":
                self.tables[-1].append([])
            elif tag in ("td", "th"):
                self.cell = ""

        def handle_endtag(self, tag):
            if tag in ("td", "th"):
                self.tables[-1][-1].append(self.cell.strip())
                self.cell = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell += data

    parser = Tables()
    parser.feed(page)
    return parser.tables


def test_the_leaderboard_pages_show_every_table_and_figure_and_reach_nothing_outside(results):
    """index.html and each task's page: every Markdown table of tables.md as an HTML table with the same header,
    every image a file of the report, and no address outside the folder (the page opens from disk, offline)."""
    import re

    out, _ = results
    for page, md in [(out / "index.html", out / "tables.md"),
                     (out / "synthetic-tiny" / "index.html", out / "synthetic-tiny" / "tables.md")]:
        text = page.read_text()
        headers = [[c.strip() for c in line.strip().strip("|").split("|")] for i, line in
                   enumerate(md.read_text().splitlines()) if line.startswith("| ")
                   and (md.read_text().splitlines()[i + 1:i + 2] or [""])[0].startswith("|---")]
        tables = _page_tables(text)
        assert [t[0] for t in tables] == [[h.replace("`", "") for h in row] for row in headers]
        assert not re.search(r"""(src|href)=["'](https?:)?//""", text)
        for src in re.findall(r'<img src="([^"]+)"', text):
            assert (page.parent / src).resolve().is_file(), src
    task_page = (out / "synthetic-tiny" / "index.html").read_text()
    assert 'src="../figures/synthetic-tiny/samples.png"' in task_page and 'src="learning_curves.png"' in task_page


def test_a_browser_renders_the_leaderboard_sorted_with_its_images(results, tmp_path):
    """Headless Chromium (Debian's package) opens a task's page from disk: the script ran on every table, every image
    loaded, and `#sort=0:COLUMN:desc` sorted Table 1a by its FID_o, largest first; a screenshot is left for a
    person to look at."""
    import re
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium)")
    out, _ = results
    page = (out / "synthetic-tiny" / "index.html").resolve()
    column = list(pd.read_csv(out / "synthetic-tiny" / "table1a.csv").columns).index("FID_o [tiny]")
    url = page.as_uri() + f"#sort=0:{column}:desc"
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=5000",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    tables = _page_tables(dom)
    assert re.search(r'data-ready="(\d+)"', dom).group(1) == str(len(tables)) and len(tables) >= 5
    shown, loaded = map(int, re.search(r'data-images="(\d+):(\d+)"', dom).groups())
    assert shown >= 3 and loaded == shown
    cells = [re.match(r"[+-]?\d+(\.\d+)?", row[column]) for row in tables[0][1:]]
    first = [float(c.group(0)) for c in cells if c]
    assert first == sorted(first, reverse=True) and len(set(first)) > 1
    assert all(cells[:len(first)])  # the rows without a value last
    shot = tmp_path / "leaderboard.png"
    subprocess.run([*flags, "--window-size=1400,1000", f"--screenshot={shot}", url], capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_every_committed_reference_record_comes_from_a_clean_commit():
    """A reference number must be reproducible from the repository: its run was recorded from a committed tree (no
    uncommitted changes), and where the history is at hand that commit is in it."""
    import subprocess

    manifests = sorted((ROOT / "results" / "runs").glob("*/manifest.json"))
    assert manifests
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True)  # noqa: E731
    full_history = git("rev-parse", "--is-shallow-repository").stdout.strip() == "false"
    for path in manifests:
        m = json.loads(path.read_text())
        assert m["git_dirty"] is False, f"{path.parent.name} was recorded from a tree with uncommitted changes"
        assert len(m["git_sha"]) == 40, path.parent.name
        if full_history:
            assert git("merge-base", "--is-ancestor", m["git_sha"], "HEAD").returncode == 0, path.parent.name


def test_a_row_not_conditioned_on_the_control_shows_its_paired_errors_as_not_applicable(results, tmp_path):
    """A run that records `conditioned_on_control: false` (a generator from noise) has no paired rows, and Table 1a
    says why rather than a dash; its other columns are as scored."""
    _, runs = results
    mine = tmp_path / "runs"
    for run in runs.iterdir():
        if run.is_dir() and "synthetic-tiny-" in run.name and "-ood-" not in run.name and "-batchswap-" not in run.name:
            shutil.copytree(run, mine / run.name)
    cellflow = next(p for p in mine.iterdir() if "-cellflow-" in p.name
                    and json.loads((p / "manifest.json").read_text())["variant"] == "default")
    m = json.loads((cellflow / "manifest.json").read_text())
    (cellflow / "manifest.json").write_text(json.dumps({**m, "conditioned_on_control": False}))
    rows = pd.read_csv(cellflow / "metrics.csv")
    rows[~rows["metric"].str.startswith("paired")].to_csv(cellflow / "metrics.csv", index=False)
    assert main(["report", "--runs", str(mine), "--results", str(tmp_path / "out")]) == 0
    t1 = pd.read_csv(tmp_path / "out" / "synthetic-tiny" / "table1a.csv").set_index("method")
    shown = (tmp_path / "out" / "synthetic-tiny" / "tables.md").read_text()
    line = next(s for s in shown.splitlines() if s.startswith("| cellflow |"))
    assert line.count("n/a (not conditioned on the control)") == 2
    assert pd.isna(t1.loc["cellflow", "paired RMSE"]) and t1.loc["identity", "paired RMSE"] > 0
    assert not pd.isna(t1.loc["cellflow", "FID_o [tiny]"])
