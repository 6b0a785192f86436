"""AMBER NetCDF trajectories and restarts (AMBER NetCDF convention 1.0, ambermd.org/netcdf/nctraj.xhtml).

Units: callers pass ENGINE units (positions and box Å, velocities Å/fs, forces eV/Å, time ps);
AMBER variables hold ``coordinates``/``cell_lengths`` Å, ``cell_angles`` degree, ``time`` ps,
``velocities`` Å/ps = v[Å/fs]·1000 and ``forces`` kcal/(mol·Å) = F[eV/Å]·EV_TO_KCAL_MOL
(no ``scale_factor`` attributes; they are optional in the convention).

Cell orientation: the convention stores a cell only as lengths ``(a, b, c)`` and angles
``alpha = ∠(b, c)``, ``beta = ∠(a, c)``, ``gamma = ∠(a, b)``. Readers (cpptraj, MDAnalysis,
MDTraj, VMD) rebuild it in the standard orientation: rows ``L = [[a, 0, 0],
[b cosγ, b sinγ, 0], [c_x, c_y, c_z]]`` (lower triangular, positive diagonal). If the engine box
``H`` (rows a, b, c) is not lower triangular with a positive diagonal, the writer finds the
orthogonal ``Q`` with ``H Q = L`` (QR decomposition ``Hᵀ = Q R``, signs fixed so ``diag(R) > 0``,
``L = Rᵀ``) and writes ``r Q``, ``v Q``, ``F Q`` instead of ``r``, ``v``, ``F``: fractional
coordinates ``s = r H⁻¹ = (r Q) L⁻¹`` are preserved, so the file is self-consistent. For a
left-handed box (``det H < 0``) ``Q`` is a reflection, since lengths/angles cannot encode
handedness. Boxes already in the standard orientation (including every orthorhombic box with a
positive diagonal) are written untouched. Positions are written as given (not wrapped).

Restarts additionally store the exact engine state (un-rotated positions, the box matrix,
velocities in Å/fs, the step and arbitrary ``extra`` arrays) in ``dpengine_*`` variables, which
readers that follow the convention ignore; :func:`read_restart` reads those, bit for bit.
NETCDF3 has no int64 and wants global attributes to be short strings, so ``extra`` values of
other dtypes are stored as raw bytes and strings as ``char`` variables (see ``_put_value``).
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from importlib import metadata

import netCDF4
import numpy as np

from dpengine.units import A_PER_FS_TO_A_PER_PS, EV_TO_KCAL_MOL

__all__ = ["AmberTrajectoryWriter", "truncate_trajectory", "write_restart", "read_restart",
           "cell_lengths_angles", "standard_orientation"]

_FORMAT = "NETCDF3_64BIT_OFFSET"
_NATIVE = {"i1", "i2", "i4", "f4", "f8"}  # numeric types of the NETCDF3 classic data model (not b1)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_EXTRA = "dpengine_extra_"


def _program_version() -> str:
    try:
        return metadata.version("dpengine")
    except metadata.PackageNotFoundError:
        import dpengine
        return str(getattr(dpengine, "__version__", "unknown"))


def _as_array(x, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``x`` (numpy array, torch tensor, sequence) as float64 numpy, shape checked."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if shape is not None and a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    return a


def cell_lengths_angles(box) -> tuple[np.ndarray, np.ndarray]:
    """Lengths ``(|a|, |b|, |c|)`` [Å] and angles ``(∠(b,c), ∠(a,c), ∠(a,b))`` [degree] of the
    cell whose rows are ``a, b, c``: ``alpha = arccos(b·c / (|b||c|))`` and so on."""
    h = _as_array(box, "box", (3, 3))
    lengths = np.linalg.norm(h, axis=1)
    if not np.all(lengths > 0) or not np.all(np.isfinite(lengths)):
        raise ValueError(f"box has a zero-length or non-finite cell vector: {h.tolist()}")
    i, j = np.array([1, 0, 0]), np.array([2, 2, 1])
    cos = np.einsum("kx,kx->k", h[i], h[j]) / (lengths[i] * lengths[j])
    return lengths, np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def standard_orientation(box) -> tuple[np.ndarray, np.ndarray | None]:
    """``(L, Q)`` with ``box @ Q = L``, ``L`` lower triangular with positive diagonal and ``Q``
    orthogonal [3, 3]; ``Q`` is ``None`` when ``box`` is already in that form (``L = box``)."""
    h = _as_array(box, "box", (3, 3))
    if h[0, 1] == 0 and h[0, 2] == 0 and h[1, 2] == 0 and np.all(np.diag(h) > 0):
        return h.copy(), None
    q, r = np.linalg.qr(h.T)
    s = np.where(np.diag(r) < 0, -1.0, 1.0)
    q, r = q * s, r * s[:, None]
    if abs(np.prod(np.diag(r))) <= 1e-12 * np.prod(np.linalg.norm(h, axis=1)):
        raise ValueError(f"box is singular (cell vectors are linearly dependent): {h.tolist()}")
    return r.T, q


def _cell(box):
    """``(lengths, angles, rotate)`` of ``box``; ``rotate(a) = a @ Q`` (standard orientation)."""
    lengths, angles = cell_lengths_angles(box)
    q = standard_orientation(box)[1]
    return lengths, angles, (lambda a: a) if q is None else (lambda a: a @ q)


def _set_globals(ds, conventions: str, title: str) -> None:
    if len(title) > 80:
        raise ValueError("title must be at most 80 characters (AMBER convention)")
    ds.setncatts({"Conventions": conventions, "ConventionVersion": "1.0",
                  "program": "dpengine", "programVersion": _program_version()[:80],
                  "application": "dpengine", "title": title})


def _define_labels(ds, n_atoms: int, periodic: bool) -> None:
    """Dimensions spatial/atom (and cell_spatial/cell_angular/label) and their label variables."""
    ds.createDimension("spatial", 3)
    ds.createDimension("atom", n_atoms)
    ds.createVariable("spatial", "S1", ("spatial",))[:] = np.array(list("xyz"), "S1")
    if periodic:
        ds.createDimension("cell_spatial", 3)
        ds.createDimension("cell_angular", 3)
        ds.createDimension("label", 5)
        ds.createVariable("cell_spatial", "S1", ("cell_spatial",))[:] = np.array(list("abc"), "S1")
        ds.createVariable("cell_angular", "S1", ("cell_angular", "label"))[:] = \
            netCDF4.stringtochar(np.array(["alpha", "beta ", "gamma"], "S5"))


def _var(ds, name: str, dtype: str, dims: tuple[str, ...], units: str):
    (v := ds.createVariable(name, dtype, dims)).units = units
    return v


def _conventions(ds) -> list[str]:
    return str(getattr(ds, "Conventions", "")).replace(",", " ").split()


class AmberTrajectoryWriter:
    """Frame-by-frame writer of an AMBER NetCDF trajectory (format ``NETCDF3_64BIT_OFFSET``).

    Variables: ``time`` float32 [frame] ps; ``coordinates`` float32 [frame, atom, spatial] Å;
    ``cell_lengths``/``cell_angles`` float64 [frame, 3] Å/degree (``periodic`` only);
    ``velocities`` float32 Å/ps and ``forces`` float32 kcal/(mol·Å) when enabled; plus the
    non-standard ``dpengine_step`` float64 [frame] (MD step, exact to 2⁵³; −1 if not given) and,
    when ``atomic_numbers`` [atom] are given, ``atom_types`` int32 [atom] holding them (the
    variable ASE's and OVITO's NetCDF readers take the elements from; 0 = not an element;
    AMBER readers ignore it). The file is synced after every frame: it stays readable during
    the run and after a kill.

    ``append=True`` continues an existing file (created if missing), which must have the same
    atom count, periodicity and velocity/force variables (else ``ValueError``); call
    :meth:`truncate_after` before writing to drop the frames a restarted run will write again.
    """

    def __init__(self, path, n_atoms: int, periodic: bool, velocities: bool = False,
                 forces: bool = False, append: bool = False, title: str = "dpengine trajectory",
                 atomic_numbers=None):
        self.path = os.fspath(path)
        self.atomic_numbers = None if atomic_numbers is None else np.asarray(atomic_numbers)
        self.n_atoms, self.periodic = int(n_atoms), bool(periodic)
        self.has_velocities, self.has_forces = bool(velocities), bool(forces)
        if self.n_atoms < 1:
            raise ValueError(f"n_atoms must be positive, got {n_atoms}")
        if append and os.path.exists(self.path) and os.path.getsize(self.path) > 0:
            self._open_existing()
        else:
            self._create(title)

    def _create(self, title: str) -> None:
        ds = netCDF4.Dataset(self.path, "w", format=_FORMAT, clobber=True)
        try:
            _set_globals(ds, "AMBER", title)
            ds.createDimension("frame", None)
            _define_labels(ds, self.n_atoms, self.periodic)
            _var(ds, "time", "f4", ("frame",), "picosecond")
            _var(ds, "coordinates", "f4", ("frame", "atom", "spatial"), "angstrom")
            if self.periodic:
                _var(ds, "cell_lengths", "f8", ("frame", "cell_spatial"), "angstrom")
                _var(ds, "cell_angles", "f8", ("frame", "cell_angular"), "degree")
            if self.has_velocities:
                _var(ds, "velocities", "f4", ("frame", "atom", "spatial"), "angstrom/picosecond")
            if self.has_forces:
                _var(ds, "forces", "f4", ("frame", "atom", "spatial"), "kilocalorie/mole/angstrom")
            ds.createVariable("dpengine_step", "f8", ("frame",)).long_name = "MD step (-1: unknown)"
            if self.atomic_numbers is not None:
                if self.atomic_numbers.shape != (self.n_atoms,):
                    raise ValueError(f"atomic_numbers must have shape [{self.n_atoms}], got "
                                     f"{self.atomic_numbers.shape}")
                numbers = ds.createVariable("atom_types", "i4", ("atom",))
                numbers.long_name = "atomic number (0: not an element)"
                numbers[:] = self.atomic_numbers.astype(np.int32)
            ds.set_fill_off()  # every record variable is written for every frame
            ds.sync()
        except BaseException:
            ds.close()
            raise
        self._ds, self._n_frames = ds, 0

    def _open_existing(self) -> None:
        try:
            ds = netCDF4.Dataset(self.path, "a")
        except OSError as e:
            raise ValueError(f"{self.path}: cannot append, not a NetCDF file ({e})") from None
        v, problems = ds.variables, []
        if ds.data_model != _FORMAT or "AMBER" not in _conventions(ds):
            problems.append(f"format {ds.data_model}, Conventions={getattr(ds, 'Conventions', None)!r}"
                            f" (expected {_FORMAT}, AMBER)")
        if "frame" not in ds.dimensions or "coordinates" not in v:
            problems.append("no frame dimension or coordinates variable")
        elif len(ds.dimensions["atom"]) != self.n_atoms:
            problems.append(f"{len(ds.dimensions['atom'])} atoms (expected {self.n_atoms})")
        for name, want in (("cell_lengths", self.periodic), ("velocities", self.has_velocities),
                           ("forces", self.has_forces)):
            if (name in v) != want:
                problems.append(f"{name} {'missing' if want else 'present'}")
        if problems:
            ds.close()
            raise ValueError(f"{self.path}: cannot append to this trajectory: " + "; ".join(problems))
        ds.set_fill_off()
        self._ds, self._n_frames = ds, len(ds.dimensions["frame"])

    @property
    def n_frames(self) -> int:
        """Frames in the file."""
        return self._n_frames

    def sync(self) -> None:
        """Write the header (record count) and buffered data to the OS (safe against a kill)."""
        self._ds.sync()

    def close(self) -> None:
        if self._ds is not None:
            self._ds.close()
            self._ds = None

    def __enter__(self) -> "AmberTrajectoryWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def truncate_after(self, time_ps: float | None = None, *, step: int | None = None) -> int:
        """Drop every frame from the first one with ``time >= time_ps`` (or with ``dpengine_step >
        step``) on; returns the number of frames kept. See :func:`truncate_trajectory`."""
        if self._ds is None:
            raise ValueError(f"{self.path}: writer is closed")
        self.close()
        try:
            kept = truncate_trajectory(self.path, time_ps, step=step)
        finally:
            self._open_existing()
        return kept

    def write_frame(self, time_ps: float, positions, box=None, velocities=None, forces=None,
                    step: int | None = None) -> None:
        """Append one frame and sync.

        time_ps : ps.  positions : [N, 3] Å.  box : [3, 3] Å, rows a, b, c (required iff periodic).
        velocities [N, 3] Å/fs, forces [N, 3] eV/Å: required when enabled, else ignored.
        step : MD step, stored in ``dpengine_step`` for exact truncation."""
        if self._ds is None:
            raise ValueError(f"{self.path}: writer is closed")
        n3 = (self.n_atoms, 3)
        r = _as_array(positions, "positions", n3)
        if self.periodic != (box is not None):
            raise ValueError("periodic trajectory: write_frame needs a box" if self.periodic
                             else "open-boundary trajectory (periodic=False) was given a box")
        lengths, angles, rot = _cell(box) if self.periodic else (None, None, lambda a: a)
        data = {"coordinates": rot(r)}
        for name, value, scale, on in (("velocities", velocities, A_PER_FS_TO_A_PER_PS, self.has_velocities),
                                       ("forces", forces, EV_TO_KCAL_MOL, self.has_forces)):
            if on:
                if value is None:
                    raise ValueError(f"trajectory was opened with {name}=True: write_frame needs {name}")
                data[name] = rot(_as_array(value, name, n3)) * scale
        i, v = self._n_frames, self._ds.variables
        v["time"][i] = float(time_ps)
        for name, value in data.items():
            v[name][i] = value
        if self.periodic:
            v["cell_lengths"][i] = lengths
            v["cell_angles"][i] = angles
        if "dpengine_step" in v:  # absent from files written by other programs
            v["dpengine_step"][i] = -1.0 if step is None else float(step)
        self._n_frames += 1
        self.sync()


def _copy_frames(src, dst_path: str, n_keep: int, chunk_bytes: int = 1 << 26) -> None:
    """Copy ``src`` with only its first ``n_keep`` records into a new file ``dst_path``."""
    with netCDF4.Dataset(dst_path, "w", format=_FORMAT, clobber=True) as dst:
        dst.setncatts({k: src.getncattr(k) for k in src.ncattrs()})
        for name, dim in src.dimensions.items():
            dst.createDimension(name, None if dim.isunlimited() else len(dim))
        dst.set_fill_off()
        for var in src.variables.values():
            atts = dict(var.__dict__)
            fill = atts.pop("_FillValue", None)
            dst.createVariable(var.name, var.dtype, var.dimensions, fill_value=fill).setncatts(atts)
        dst.set_auto_maskandscale(False)
        for name, var in src.variables.items():
            out = dst.variables[name]
            if not var.dimensions or not src.dimensions[var.dimensions[0]].isunlimited():
                out[...] = var[...]
            else:  # record variable: copy in chunks of about chunk_bytes
                n = max(1, chunk_bytes // max(1, int(np.prod(var.shape[1:])) * var.dtype.itemsize))
                for lo in range(0, n_keep, n):
                    out[lo:min(n_keep, lo + n)] = var[lo:min(n_keep, lo + n)]


@contextlib.contextmanager
def _atomic_file(path: str):
    """Yield a temporary path next to ``path``; on success fsync it, ``os.replace`` it onto
    ``path`` and fsync the folder; on error delete it. ``path`` is never left half-written."""
    folder, base = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{base}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        for target in (tmp, folder):
            fd = os.open(target, os.O_RDONLY)
            try:
                os.fsync(fd)
            except OSError:  # some file systems cannot fsync a folder
                pass
            finally:
                os.close(fd)
            if target == tmp:
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def truncate_trajectory(path, time_ps: float | None = None, *, step: int | None = None) -> int:
    """Keep only the frames before the first frame with ``time >= time_ps`` or, given ``step``,
    with ``dpengine_step > step`` (mind the asymmetry: a run restarted from step N, time t_N,
    rewrites frame N, so call it with ``time_ps=t_N`` or ``step=N - 1``); returns the number
    of frames kept. Times are stored as float32, so a frame counts as ``>= time_ps`` when
    ``time >= time_ps − (1e-6 ps + 2.4e-7·|time_ps|)`` (two float32 ulps): a frame written at the
    restart time is always dropped. Truncating by ``step`` is exact and preferred. NETCDF3
    cannot shrink the record dimension, so the kept frames are copied into a temporary file in
    the same folder, which then atomically replaces ``path``; nothing is rewritten when no frame
    is dropped.
    """
    path = os.fspath(path)
    if (time_ps is None) == (step is None):
        raise ValueError("truncate_trajectory: give exactly one of time_ps or step")
    with netCDF4.Dataset(path, "r") as src:
        if "frame" not in src.dimensions or "time" not in src.variables:
            raise ValueError(f"{path}: not an AMBER trajectory (no frame dimension or time variable)")
        n = len(src.dimensions["frame"])
        src.set_auto_maskandscale(False)
        if step is not None:
            if "dpengine_step" not in src.variables:
                raise ValueError(f"{path}: has no dpengine_step variable; truncate by time_ps instead")
            steps = np.asarray(src.variables["dpengine_step"][:n], dtype=np.float64)
            if np.any(steps < 0):
                raise ValueError(f"{path}: some frames were written without a step; truncate by time_ps")
            drop = steps > float(step)
        else:
            times = np.asarray(src.variables["time"][:n], dtype=np.float64)
            drop = times >= float(time_ps) - (1e-6 + 2.4e-7 * abs(float(time_ps)))
        n_keep = int(np.argmax(drop)) if drop.any() else n
        if n_keep == n:
            return n
        with _atomic_file(path) as tmp:
            _copy_frames(src, tmp, n_keep)
    return n_keep


# -- restarts ------------------------------------------------------------------------------
def _put_value(ds, name: str, value) -> None:
    """Store ``value`` (str, Python/numpy scalar, numpy array or torch tensor) losslessly as the
    variable ``name``; attributes ``dpengine_kind``/``dpengine_dtype``/``dpengine_shape`` say how
    to rebuild it. NETCDF3 types are stored as such, others (and bool) as raw bytes."""
    if isinstance(value, str):
        raw = np.frombuffer(value.encode("utf-8"), dtype="S1")
        ds.createDimension(f"{name}_nchar", max(1, raw.size))  # size 0 would mean unlimited
        v = ds.createVariable(name, "S1", (f"{name}_nchar",))
        v.setncatts({"dpengine_kind": "str", "dpengine_nbytes": np.int32(raw.size)})
        v[: raw.size] = raw
        return
    kind = "array" if hasattr(value, "detach") or isinstance(value, np.ndarray) else (
        "numpy_scalar" if isinstance(value, np.generic) else "python")
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if type(value) is int and not -2**63 <= value < 2**63:
        raise ValueError(f"{name}: integer {value} does not fit in int64")
    arr = np.asarray(value, dtype=np.int64 if type(value) is int else None)
    if arr.dtype.kind not in "biufc":
        raise TypeError(f"{name}: cannot store a value of dtype {arr.dtype} ({type(value).__name__})")
    attrs = {"dpengine_kind": kind, "dpengine_dtype": arr.dtype.str,
             "dpengine_shape": ",".join(str(s) for s in arr.shape)}
    if arr.size == 0:
        v = ds.createVariable(name, "i1", ())
    elif f"{arr.dtype.kind}{arr.dtype.itemsize}" in _NATIVE:
        dims = tuple(f"{name}_d{k}" for k in range(arr.ndim))
        for d, size in zip(dims, arr.shape):
            ds.createDimension(d, size)
        v = ds.createVariable(name, arr.dtype.newbyteorder("="), dims)
        v[...] = arr
    else:  # raw bytes of the C-ordered array
        raw = np.ascontiguousarray(arr.reshape(-1)).view(np.int8)
        ds.createDimension(f"{name}_nbytes", raw.size)
        v = ds.createVariable(name, "i1", (f"{name}_nbytes",))
        v[:] = raw
        attrs["dpengine_storage"] = "raw_bytes"
    v.setncatts(attrs)


def _get_value(var):
    """Inverse of :func:`_put_value`."""
    var.set_auto_maskandscale(False)
    kind = var.getncattr("dpengine_kind")
    if kind == "str":
        return np.asarray(var[:]).tobytes()[: int(var.dpengine_nbytes)].decode("utf-8")
    dtype = np.dtype(var.dpengine_dtype)
    shape = tuple(int(s) for s in var.dpengine_shape.split(",") if s)
    if int(np.prod(shape)) == 0:
        arr = np.empty(shape, dtype)
    elif getattr(var, "dpengine_storage", "") == "raw_bytes":
        arr = np.asarray(var[:], dtype=np.int8).view(dtype).reshape(shape).copy()
    else:
        arr = np.asarray(var[...]).astype(dtype).reshape(shape)
    return arr.item() if kind == "python" else (arr[()] if kind == "numpy_scalar" else arr)


def write_restart(path, time_ps: float, positions, velocities, box, extra: dict | None = None, *,
                  step: int, title: str = "dpengine restart") -> None:
    """Write an AMBER NetCDF restart plus the exact engine state, atomically.

    AMBER part (``Conventions="AMBERRESTART"``, float64, no frame dimension): scalar ``time``
    [ps]; ``coordinates`` [atom, spatial] Å and ``velocities`` Å/ps, rotated into the standard
    cell orientation (module docstring); ``cell_lengths``/``cell_angles`` when ``box`` is given.

    Engine part (read back bit-exact by :func:`read_restart`): ``dpengine_positions`` [N, 3] Å
    and ``dpengine_velocities`` [N, 3] Å/fs as given, ``dpengine_box`` [3, 3] Å (rows a, b, c),
    ``dpengine_step`` (int64), and each ``extra[name]`` as ``dpengine_extra_<name>``: str, Python
    or numpy scalars, numpy arrays or torch tensors of any numeric dtype and shape (names:
    letters, digits, ``_``). ``velocities`` may be None (no velocities stored).

    The file is written to a temporary file in the same folder and moved onto ``path`` with
    ``os.replace``, so an interrupted write never leaves a partial restart.
    """
    path = os.fspath(path)
    r = _as_array(positions, "positions")
    if r.ndim != 2 or r.shape[1] != 3 or r.shape[0] < 1:
        raise ValueError(f"positions must have shape [N, 3], got {r.shape}")
    n3 = r.shape
    v = None if velocities is None else _as_array(velocities, "velocities", n3)
    h = None if box is None else _as_array(box, "box", (3, 3))
    extra = dict(extra or {})
    for name in extra:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"extra key {name!r}: must start with a letter and hold only letters, digits, _")
    lengths, angles, rot = (None, None, lambda a: a) if h is None else _cell(h)
    with _atomic_file(path) as tmp, netCDF4.Dataset(tmp, "w", format=_FORMAT, clobber=True) as ds:
        _set_globals(ds, "AMBERRESTART", title)
        ds.dpengine_restart_version = "1"
        _define_labels(ds, n3[0], h is not None)
        _var(ds, "time", "f8", (), "picosecond").assignValue(float(time_ps))
        _var(ds, "coordinates", "f8", ("atom", "spatial"), "angstrom")[:] = rot(r)
        _var(ds, "dpengine_positions", "f8", ("atom", "spatial"), "angstrom")[:] = r
        if v is not None:
            _var(ds, "velocities", "f8", ("atom", "spatial"),
                 "angstrom/picosecond")[:] = rot(v) * A_PER_FS_TO_A_PER_PS
            _var(ds, "dpengine_velocities", "f8", ("atom", "spatial"),
                 "angstrom/femtosecond")[:] = v
        if h is not None:
            _var(ds, "cell_lengths", "f8", ("cell_spatial",), "angstrom")[:] = lengths
            _var(ds, "cell_angles", "f8", ("cell_angular",), "degree")[:] = angles
            _var(ds, "dpengine_box", "f8", ("cell_spatial", "spatial"), "angstrom")[:] = h
        _put_value(ds, "dpengine_step", int(step))
        ds.variables["dpengine_step"].value = str(int(step))
        for name, value in extra.items():
            _put_value(ds, _EXTRA + name, value)


def read_restart(path) -> dict:
    """Read a restart written by :func:`write_restart`.

    Returns ``{"positions": float64 [N, 3] Å, "velocities": float64 [N, 3] Å/fs or None,
    "box": float64 [3, 3] Å or None, "step": int, "time_ps": float, "extra": dict}``, all
    bit-identical to what was written (extra arrays come back as numpy arrays of their dtype).
    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file and what
    is missing for anything that is not a dpengine AMBER restart.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"restart file {path} does not exist")
    try:
        ds = netCDF4.Dataset(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a NetCDF restart file ({e})") from None
    with ds:
        ds.set_auto_maskandscale(False)
        if "AMBERRESTART" not in _conventions(ds):
            raise ValueError(f"{path}: not an AMBER restart: Conventions="
                             f"{getattr(ds, 'Conventions', None)!r}, expected 'AMBERRESTART'")
        v = ds.variables
        need = ["time", "dpengine_positions", "dpengine_step"] + ["dpengine_box"] * (
            "cell_lengths" in v) + ["dpengine_velocities"] * ("velocities" in v)
        missing = [name for name in need if name not in v]
        if missing:
            raise ValueError(f"{path}: not a dpengine restart, missing variable(s) "
                             f"{', '.join(missing)} (a restart written by another program?)")

        def get(name):
            return np.array(v[name][:], dtype=np.float64) if name in v else None

        out = {"positions": get("dpengine_positions"), "velocities": get("dpengine_velocities"),
               "box": get("dpengine_box"), "step": int(_get_value(v["dpengine_step"])),
               "time_ps": float(v["time"].getValue()), "extra": {}}
        for name, var in v.items():
            if name.startswith(_EXTRA):
                out["extra"][name[len(_EXTRA):]] = _get_value(var)
    return out
