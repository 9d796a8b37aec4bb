"""Tables as Markdown: the one renderer of the report's and the calibration's tables (so neither imports the other
for it). Floats take one format, NaN shows as `-`, everything else as `str`."""

from __future__ import annotations

import numpy as np
import pandas as pd


def to_markdown(df: pd.DataFrame, floatfmt: str = ".2f") -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "|".join(["---"] * len(cols)) + "|"]
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            if isinstance(v, (float, np.floating)):
                cells.append("-" if pd.isna(v) else format(v, floatfmt))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
