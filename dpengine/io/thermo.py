"""Plain-text logs of an MD run: the thermo log and DeePMD-kit's ``model_devi.out``.

Both are whitespace-separated columns under one ``#`` header line, readable by
``numpy.loadtxt``; every line is flushed as soon as it is written. On restart, open them with
``append=True`` and call ``truncate_after_step(step)`` to drop the lines the restarted run
will write again (lines whose step is greater than ``step``). A last line without a newline
(left by a killed process) is always dropped when a log is appended to.
"""
from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["ThermoLog", "ModelDeviationLog", "model_deviation", "truncate_log_after_step",
           "MODEL_DEVI_COLUMNS"]

#: Columns of ``model_devi.out`` after ``step``, in file order.
MODEL_DEVI_COLUMNS = ("max_devi_v", "min_devi_v", "avg_devi_v",
                      "max_devi_f", "min_devi_f", "avg_devi_f", "devi_e")
_TOKEN = re.compile(r"^[^\s\[\]#]+$")


def _scalar(v):
    """A Python int or float from ``v`` (Python/numpy scalar or one-element torch tensor)."""
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    return float(v)


def _read_lines(path: str) -> list[str]:
    """Complete lines of ``path`` (newline included); a trailing partial line is dropped."""
    with open(path, encoding="utf-8") as fh:
        lines = fh.readlines()
    if lines and not lines[-1].endswith("\n"):
        lines.pop()
    return lines


def _write_atomic(path: str, lines: list[str]) -> None:
    d, base = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{base}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.writelines(lines)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def truncate_log_after_step(path, step: int, step_column: int = 0) -> int:
    """Rewrite the log ``path`` without its data lines whose step (field ``step_column``) is
    greater than ``step``, and without a trailing partial line; ``#`` lines are kept. The file is
    replaced atomically. Returns the number of data lines kept."""
    path = os.fspath(path)
    kept, n = [], 0
    for lineno, line in enumerate(_read_lines(path), 1):
        fields = line.split()
        if not fields or line.lstrip().startswith("#"):
            kept.append(line)
            continue
        try:
            s = int(fields[step_column])
        except (IndexError, ValueError):
            raise ValueError(f"{path}:{lineno}: no integer step in column {step_column}: {line!r}") from None
        if s <= step:
            kept.append(line)
            n += 1
    _write_atomic(path, kept)
    return n


class _TextLog:
    """Shared machinery: open (create with header, or append after checking the header)."""

    def __init__(self, path, header: str, append: bool, step_column: int):
        self.path = os.fspath(path)
        self._header, self._step_column = header, step_column
        if append and os.path.exists(self.path) and os.path.getsize(self.path) > 0:
            lines = _read_lines(self.path)
            headers = [ln for ln in lines if ln.startswith("#")]
            if not headers or headers[0].split() != header.split():
                found = headers[0].strip() if headers else "no header"
                raise ValueError(f"{self.path}: cannot append, columns differ: file has "
                                 f"{found!r}, this log writes {header.strip()!r}")
            _write_atomic(self.path, lines)  # drops a partial last line
            self._fh = open(self.path, "a", encoding="utf-8")
        else:
            self._fh = open(self.path, "w", encoding="utf-8")
            self._emit(header)

    def _emit(self, line: str) -> None:
        if self._fh is None:
            raise ValueError(f"{self.path}: log is closed")
        self._fh.write(line + "\n")
        self._fh.flush()

    def truncate_after_step(self, step: int) -> int:
        """Drop the data lines with step > ``step`` (see :func:`truncate_log_after_step`)."""
        if self._fh is None:
            raise ValueError(f"{self.path}: log is closed")
        self._fh.close()
        try:
            return truncate_log_after_step(self.path, step, self._step_column)
        finally:
            self._fh = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ThermoLog(_TextLog):
    """Thermodynamic log: one ``#`` header line naming each column as ``name[unit]``, e.g.
    ``# step time[ps] pe[eV] ke[eV] etotal[eV] temp[K] press[bar] vol[A^3] conserved[eV]``
    (right-aligned to the data below), then one line per :meth:`write`.

    columns : list of ``(name, unit)``; ``unit`` None or ``""`` gives a bare ``name``. Names and
        units must not contain whitespace, ``[``, ``]`` or ``#``. A column named ``step`` is
        written as an integer and is the key of :meth:`truncate_after_step`.
    precision : significant digits of float columns (``%.{precision}g``).
    append : continue an existing log whose header names the same columns (else ``ValueError``);
        the header is not repeated. A missing or empty file is created with a header.
    """

    def __init__(self, path, columns: Sequence[tuple[str, str | None]], append: bool = False,
                 precision: int = 10):
        self.columns = [(str(n), "" if u is None else str(u)) for n, u in columns]
        if not self.columns:
            raise ValueError("ThermoLog needs at least one column")
        names = [n for n, _ in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate column names in {names}")
        for n, u in self.columns:
            if not _TOKEN.match(n) or (u and not _TOKEN.match(u)):
                raise ValueError(f"column ({n!r}, {u!r}): no whitespace, '[', ']' or '#' allowed")
        self._int_cols = {i for i, n in enumerate(names) if n == "step"}
        tokens = [f"{n}[{u}]" if u else n for n, u in self.columns]
        self._widths = [max(len(t), 12 if i in self._int_cols else precision + 7)
                        for i, t in enumerate(tokens)]
        self._float_fmt = f"%.{int(precision)}g"
        header = "# " + " ".join(t.rjust(w) for t, w in zip(tokens, self._widths))
        super().__init__(path, header, append, names.index("step") if "step" in names else -1)

    def truncate_after_step(self, step: int) -> int:
        if self._step_column < 0:
            raise ValueError(f"{self.path}: this log has no 'step' column to truncate by")
        return super().truncate_after_step(step)

    def write(self, values: Sequence | Mapping) -> None:
        """Write one line. ``values``: one value per column, in column order, or a mapping from
        column name to value. Integers are written with ``%d``, floats with ``%.10g``."""
        if isinstance(values, Mapping):
            missing = [n for n, _ in self.columns if n not in values]
            if missing:
                raise ValueError(f"ThermoLog.write: missing column(s) {missing}")
            values = [values[n] for n, _ in self.columns]
        values = list(values)
        if len(values) != len(self.columns):
            raise ValueError(f"ThermoLog.write: {len(values)} values for {len(self.columns)} columns")
        fields = []
        for i, (v, w) in enumerate(zip(values, self._widths)):
            v = _scalar(v)
            if i in self._int_cols:
                if v != int(v):
                    raise ValueError(f"step must be an integer, got {v!r}")
                v = int(v)
            fields.append(("%d" % v if isinstance(v, int) else self._float_fmt % v).rjust(w))
        self._emit("  " + " ".join(fields))


class ModelDeviationLog(_TextLog):
    """DeePMD-kit's ``model_devi.out``: header (as ``deepmd.infer.model_devi.write_model_devi_out``
    and LAMMPS ``pair_style deepmd`` write it)::

        #       step         max_devi_v         min_devi_v         avg_devi_v         max_devi_f         min_devi_f         avg_devi_f             devi_e

    i.e. ``"#" + "%11s" % "step" + 7 × "%19s"``, then per line ``"%12d" + 7 × "%19.6e"``
    without delimiters. Units: forces eV/Å, virial and energy eV (per atom).
    """

    HEADER = "#" + "%11s" % "step" + "".join("%19s" % c for c in MODEL_DEVI_COLUMNS)

    def __init__(self, path, append: bool = False):
        super().__init__(path, self.HEADER, append, 0)

    def write(self, step: int, devi: Mapping[str, float]) -> None:
        """Write one line: ``step`` and ``devi`` as returned by :func:`model_deviation`."""
        try:
            vals = [float(_scalar(devi[c])) for c in MODEL_DEVI_COLUMNS]
        except KeyError as e:
            raise ValueError(f"ModelDeviationLog.write: devi lacks {e.args[0]!r}") from None
        self._emit("%12d" % int(step) + "".join("%19.6e" % v for v in vals))


def _np64(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if not a.size:
        raise ValueError(f"{name} is empty")
    return a


def model_deviation(forces, virials, energies, n_atoms: int) -> dict[str, float]:
    """Model deviation of an ensemble of M models, exactly as DeePMD-kit computes it
    (``deepmd.infer.model_devi.calc_model_devi_{f,v,e}`` and LAMMPS ``pair_style deepmd``).

    forces : [M, N, 3] eV/Å;  virials : [M, 3, 3] or [M, 9] eV;  energies : [M] eV (total);
    n_atoms : number of atoms the virial and energy are normalised by (normally N).
    Numpy arrays or torch tensors; computed in float64. All standard deviations are population
    ones (divide by M), ``⟨·⟩`` is the mean over models.

    * forces, per atom i:  ``ε_F,i = sqrt( ⟨ |F_m,i − ⟨F_i⟩|² ⟩ )``  (= ``norm(std(F, axis=0), axis=-1)``);
      ``max_devi_f = max_i ε_F,i``, ``min_devi_f = min_i ε_F,i``, ``avg_devi_f = mean_i ε_F,i``.
    * virial, per component k of the 9 components of ``v_m = W_m / n_atoms``:
      ``σ_k = sqrt( ⟨ (v_m,k − ⟨v_k⟩)² ⟩ )``; ``max_devi_v = max_k σ_k``, ``min_devi_v = min_k σ_k``,
      and — note — ``avg_devi_v = sqrt( Σ_k σ_k² / 9 ) = ‖σ‖ / 3`` (root mean square, not the mean).
    * energy: ``devi_e = sqrt( ⟨ (E_m/n_atoms − ⟨E/n_atoms⟩)² ⟩ )`` (std of the energy per atom).

    Returns a dict of floats with keys ``MODEL_DEVI_COLUMNS``. One model gives all zeros.
    """
    f = _np64(forces, "forces")
    if f.ndim != 3 or f.shape[2] != 3:
        raise ValueError(f"forces must have shape [M, N, 3], got {f.shape}")
    m = f.shape[0]
    w = _np64(virials, "virials")
    if w.shape not in ((m, 3, 3), (m, 9)):
        raise ValueError(f"virials must have shape [M, 3, 3] or [M, 9] with M={m}, got {w.shape}")
    w = w.reshape(m, 9)
    e = _np64(energies, "energies")
    if e.shape not in ((m,), (m, 1)):
        raise ValueError(f"energies must have shape [M] with M={m}, got {e.shape}")
    e = e.reshape(m)
    if int(n_atoms) < 1:
        raise ValueError(f"n_atoms must be positive, got {n_atoms}")
    eps_f = np.linalg.norm(np.std(f, axis=0), axis=-1)
    sig_v = np.std(w / int(n_atoms), axis=0)
    return {"max_devi_v": float(sig_v.max()), "min_devi_v": float(sig_v.min()),
            "avg_devi_v": float(np.linalg.norm(sig_v) / 3.0),
            "max_devi_f": float(eps_f.max()), "min_devi_f": float(eps_f.min()),
            "avg_devi_f": float(eps_f.mean()),
            "devi_e": float(np.std(e / int(n_atoms)))}
