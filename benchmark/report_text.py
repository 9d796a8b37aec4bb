"""What the report says around its tables: how to read each one. Kept apart from the code that builds and writes
them so that the words can be read and edited in one place; `{placeholders}` are filled by `report.py`."""

TABLE1A = ("Lower is better for every column. KID is multiplied by 100 as in the paper. Values are means over seeds ± "
           "the half-width of the 95% t interval over seeds; for one seed, [the 95% bootstrap interval over images]. `source`: "
           "trained here, an imported checkpoint, images scored as given, or no training (identity, oracle).\n\n")

TRAINING = ("\nTrained rows: images seen in training up to the checkpoint that was kept and scored (a range where seeds "
            "kept different ones), minutes of the whole run's training (mean over seeds, the curve's scoring left "
            "out), device, and the relative change of the validation selection metric over the last quarter of "
            "training (the largest over seeds): beyond {converged:.0%} the row is marked not converged. Curves: "
            "`learning_curves.png`.\n")

CALIBRATION = ("Known-answer calibration on `{task}` (`{folder}/summary.md`; seed {seed}, {replicates} bootstrap "
               "replicates over images): for each metric and ladder of generators of known order, the smallest step "
               "from the true counterfactuals that the metric tells apart at 95% with {n} images per perturbation "
               "(`-`: no step; `nb`: not bootstrapped), and on how many ladders it orders every step right. A "
               "difference between two rows of the table above smaller than one such step is not one this metric can "
               "be trusted to see. Ladders: {ladders}.\n\n")

CALIBRATION_TOO_SMALL = ("\nMetric calibration (`{folder}`): its smallest n, {smallest}, exceeds this table's {n} "
                         "generated images per perturbation.\n")

TABLE2A = ("A classifier trained on the task's real training images (weights hash in `classifier`) labels each "
           "generated image; the interval is a seeded bootstrap over images. The last row scores real held-out "
           "images: the ceiling of real phenotypes, not of the score: a generator that exaggerates what the classifier "
           "keys on can exceed it (IMPA on the simulated screen does), so read accuracy together with FID.\n\n")

PRDC = ("All generated against all reference features, k = 5 nearest neighbours (PyPI `prdc`). Precision and density: "
        "do generated cells look real; recall and coverage: is the variety of real cells generated. Higher is better; "
        "the oracle row is real against real.\n\n")

MAP = ("Activity: is each perturbation's set of cells retrievable against the plan's control cells (cosine "
       "similarity; mAP averaged over perturbations; share active: FDR-corrected permutation p < 0.05). Retrieval: is "
       "a generated cell closest to real cells of its own perturbation. The last row is the real cells' activity "
       "against the same controls: a generator should match it, not exceed it.\n\n")

SHIFT = ("For each perturbation, the features that move most between its real cells and the control cells (|Cohen's "
         "d|, top 10), measured again on the generated cells: the correlation of the two sets of effect sizes and the "
         "share that move the same way, averaged over perturbations (1 is best; the oracle row is real against real). "
         "The effect sizes themselves: `feature_shift_<space>.csv` and the heatmap `feature_shift_<space>.png`.\n\n")

COMPARISONS = ("Is one method better than another on a metric scored per perturbation, beyond the noise across "
               "perturbations? A two-sided Wilcoxon signed-rank test over the perturbations both were scored on (lower "
               "is better; `A lower` counts perturbations where A scored lower), p-values Holm-corrected over every "
               "row of this table; the verdict is at 5%. Each row is a mean over its seeds, so that test asks whether "
               "these trained models differ: a seed or checkpoint moves every perturbation together. `verdict (seeds)` "
               "asks whether training again would keep the order: Welch's t-test of the two rows' per-seed means over "
               "perturbations, Holm over the table; with 3 seeds it resolves only gaps well beyond the seeds' spread, "
               "and a rule without randomness (identity, oracle) against another is not tested. Ablations are tested "
               "against their own method under Table 2c, not here.\n\n")

ABLATION_TESTS = ("\nDoes each ablation score differently from its full method, beyond the noise across perturbations? A "
                  "two-sided Wilcoxon signed-rank test of the two rows' per-perturbation values, paired by perturbation "
                  "(`ablation lower` counts perturbations where the ablation scored lower, lower is better), p-values "
                  "Holm-corrected over every row of this table; the verdict is at 5%; `verdict (seeds)` is the same "
                  "question over training runs (Welch's t-test of the per-seed means, Holm over the table; see the "
                  "paired comparisons below).\n\n")

BATCH_CHANGE = ("\nDoes each method's score change when its controls come from another batch, beyond the noise across "
                "perturbations? A two-sided Wilcoxon signed-rank test of the method's per-perturbation values on the two "
                "tasks, paired by perturbation (`same lower` counts perturbations that scored lower with same-batch "
                "controls), p-values Holm-corrected over every row of this table; the verdict is at 5%. The test isolates "
                "the controls only where the other-batch rows score the same weights (`other-batch model` above: "
                "`run --from-run` of the same-batch runs); a model trained again on the other task also chooses its "
                "checkpoint on that task's validation plan, and that choice moves every perturbation together.\n\n")

FIGURES_KEPT = ("figures: kept from an earlier report that had the images (--data-dir); they show the runs of that "
                "report")
FIGURES_NONE = "figures: not drawn (pass --data-dir: they need the tasks' images)"

FRIEDMAN = ("\nFriedman test of the {k} methods run on all {n} tasks ({methods}), tasks as blocks: p = {p:.3g}.\n")
FRIEDMAN_NONE = "\nFriedman test across tasks: not computable (it needs 3 methods run on 2 or more tasks).\n"
