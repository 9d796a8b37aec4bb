"""Known-answer calibration of the suite's metrics on the simulated screen.

The screen knows, for every test control cell, its true counterfactual under every compound. From those, ladders
of generators whose order of quality is known without any metric are built (no training):

- `mixing`: each image the true counterfactual with probability lambda, the control otherwise;
- `strength`: the same cells re-rendered with every compound's effect at a fraction of its strength;
- `blur`, `texture` (high frequencies attenuated), `intensity` (a per-channel shift, like a batch effect) and
  `collapse` (a share of each compound's images replaced by one image of it), applied to the counterfactuals.

Rung 0 of every ladder is the true counterfactuals (real cells, disjoint from the reference set: the real-vs-real
floor), and quality falls with the rung. For every metric and every n per perturbation this package measures the
Spearman correlation of the metric with the rung, and the smallest rung whose difference from rung 0 a seeded
bootstrap over images resolves at 95%: the same resampled images at every rung, so the difference is paired.
`python -m benchmark calibrate` writes the tables and figures.

One module per job: `ladders` (the generators), `metrics` (each metric on a rung's scored rows), `features` (the
images' features through the cache), `bootstrap` (draws and verdicts), `pipeline` (a request to a folder),
`summaries` (the tables, the recommendation and the folder's files), `drawing` (one figure per ladder).
"""

from benchmark.calibration.ladders import LADDERS, Ladder, LadderInputs, rung_table
from benchmark.calibration.metrics import BOOT_MAX_IMAGES, CALIBRATION_KID_SUBSETS, KernelKID
from benchmark.calibration.pipeline import Request, calibrate, run
from benchmark.calibration.summaries import recommended_n, resolution

__all__ = ["BOOT_MAX_IMAGES", "CALIBRATION_KID_SUBSETS", "LADDERS", "KernelKID", "Ladder", "LadderInputs", "Request",
           "calibrate", "recommended_n", "resolution", "rung_table", "run"]
