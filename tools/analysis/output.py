"""Tables (CSV with a units header) and plots (PNG, matplotlib) of the analyses.

Tables: one header line of column names with units in brackets (``r[A],g_OO(r),n_OO(r)``),
then ``#`` comment lines (what, from which file, parameters), then comma-separated rows.
Header first, so that ``numpy.genfromtxt(path, delimiter=",", names=True)``,
``numpy.loadtxt(path, delimiter=",", skiprows=1)`` and ``pandas.read_csv(path,
comment="#")`` all read them. Plots use matplotlib's object API with the Agg canvas (no
display, no global backend switch).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

__all__ = ["write_table", "Figure", "to_json"]


def write_table(path, columns: list[str], data, comments: list[str] = ()) -> Path:
    """Write ``data`` (equal-length 1-D sequences, numeric or text, one per column name) to
    ``path`` under the ``comments`` lines; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = [np.asarray(c) for c in data]
    if len(cols) != len(columns) or len({len(c) for c in cols}) > 1:
        raise ValueError(f"{path}: {len(columns)} column names for {len(cols)} columns of "
                         f"lengths {[len(c) for c in cols]}")
    cols = [c.astype(np.float64) if c.dtype.kind in "biuf" else c for c in cols]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(",".join(columns) + "\n")
        for line in comments:
            fh.write(f"# {line}\n")
        if all(c.dtype.kind == "f" for c in cols):
            np.savetxt(fh, np.column_stack(cols), delimiter=",", fmt="%.10g")
        else:  # text columns (names, units): row by row
            for row in zip(*cols):
                fh.write(",".join(format(v, ".10g") if isinstance(v, float) else str(v)
                                  for v in row) + "\n")
    return path


class Figure:
    """A grid of ``rows × cols`` panels; :meth:`ax` gives panel k, :meth:`save` writes a PNG."""

    def __init__(self, rows: int = 1, cols: int = 1, width: float = 6.0, height: float = 4.0,
                 title: str | None = None):
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure as MplFigure
        except ImportError:
            raise ValueError("the plots need matplotlib (pip install matplotlib); or pass "
                             "--no-plot for the tables only") from None

        self.fig = MplFigure(figsize=(width * cols, height * rows), layout="constrained")
        FigureCanvasAgg(self.fig)
        self.axes = np.atleast_1d(self.fig.subplots(rows, cols, squeeze=False).ravel())
        if title:
            self.fig.suptitle(title)

    def ax(self, k: int = 0):
        return self.axes[k]

    def save(self, path, dpi: int = 120) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for ax in self.axes:
            if not ax.has_data():
                ax.set_visible(False)
        self.fig.savefig(path, dpi=dpi)
        return path


def _clean(value):
    """JSON-safe copy: numpy scalars/arrays to Python, NaN/inf to None, paths to str."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_clean(v) for v in value.tolist()]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def to_json(result: dict) -> str:
    """``result`` as indented JSON (NaN becomes null)."""
    return json.dumps(_clean(result), indent=2, ensure_ascii=False)
