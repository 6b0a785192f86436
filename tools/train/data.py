"""Training data in DeePMD-kit's ``deepmd/npy`` layout (what dpdata writes).

A *system* is a folder with

    type.raw            N integers, the type index of every atom (same in all frames)
    type_map.raw        optional: the element name of each type index
    nopbc               optional (empty file): open boundaries, no box.npy needed
    set.*/coord.npy     [F, 3N]  Å
    set.*/box.npy       [F, 9]   Å (rows of the 3×3 matrix are the cell vectors)
    set.*/energy.npy    [F]      eV
    set.*/force.npy     [F, 3N]  eV/Å
    set.*/virial.npy    [F, 9]   eV (optional; W = −Σ r_ij ⊗ ∂E/∂r_ij)

Frames of all ``set.*`` folders are concatenated in sorted order. Type indices are mapped
onto the model's type map by name (through ``type_map.raw``; without it, index i is the
model's type i, as DeePMD-kit does). Every problem raises :class:`DataError` whose one-line
message names the system, the set and the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DataError", "System", "load_system", "load_systems", "find_systems"]


class DataError(ValueError):
    """Unreadable or inconsistent training data; the message names system, set and file."""


@dataclass
class System:
    """One deepmd/npy system mapped onto a model's type map.

    path; types int64 [N] (model type indices); coords float64 [F, N, 3] Å; boxes float64
    [F, 3, 3] Å or None (open boundaries); energy float64 [F] eV; forces float64 [F, N, 3]
    eV/Å; virial float64 [F, 9] eV or None (absent from the data).
    """

    path: Path
    types: np.ndarray
    coords: np.ndarray
    boxes: np.ndarray | None
    energy: np.ndarray
    forces: np.ndarray
    virial: np.ndarray | None

    @property
    def n_frames(self) -> int:
        return int(self.coords.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.types.shape[0])

    def type_counts(self, ntypes: int) -> np.ndarray:
        """Number of atoms of each model type, int64 [ntypes]."""
        return np.bincount(self.types, minlength=ntypes)


def find_systems(path: str | Path) -> list[Path]:
    """``path`` itself if it holds ``type.raw``, else every folder below it that does (sorted)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such folder")
    if (path / "type.raw").is_file():
        return [path]
    found = sorted(p.parent for p in path.rglob("type.raw"))
    if not found:
        raise DataError(f"{path}: not a deepmd/npy system (no type.raw) and no system below it")
    return found


def _load_array(path: Path, what: str, shape: tuple, n_frames: int | None) -> np.ndarray:
    """Load ``path`` as float64 with shape ``shape`` (−1 = any frame count); check finiteness."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read {what} ({str(exc).splitlines()[0]})") from None
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{path}: {what} must be numbers, got dtype {arr.dtype}")
    expected = (n_frames if n_frames is not None else (arr.shape[0] if arr.ndim else 0),) + shape
    if arr.ndim == 2 and shape == () and arr.shape[1:] == (1,):   # energy stored as [F, 1]
        arr = arr[:, 0]
    if arr.shape != expected:
        raise DataError(f"{path}: {what} has shape {arr.shape}, expected {expected}")
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1) if arr.size else np.zeros(0, bool)
    if bad.any():
        raise DataError(f"{path}: {what} has NaN or infinite values (frame {int(np.argmax(bad))} "
                        f"of this set)")
    return arr


def _map_types(path: Path, type_map: list[str]) -> np.ndarray:
    type_file = path / "type.raw"
    try:
        raw = np.loadtxt(type_file, dtype=np.int64, ndmin=1)
    except ValueError as exc:
        raise DataError(f"{type_file}: not a list of integers ({exc})") from None
    if raw.size == 0:
        raise DataError(f"{type_file}: no atoms")
    if raw.min() < 0:
        raise DataError(f"{type_file}: negative type index {int(raw.min())}")
    names_file = path / "type_map.raw"
    if names_file.is_file():
        names = names_file.read_text().split()
        if raw.max() >= len(names):
            raise DataError(f"{type_file}: type index {int(raw.max())} but {names_file} names "
                            f"only {len(names)} types ({' '.join(names)})")
        missing = sorted({names[t] for t in np.unique(raw)} - set(type_map))
        if missing:
            raise DataError(f"{path}: element {', '.join(missing)} (from {names_file.name}) is not "
                            f"in the model's type_map [{', '.join(type_map)}]")
        lookup = np.array([type_map.index(n) if n in type_map else -1 for n in names])
        return lookup[raw]
    if raw.max() >= len(type_map):
        raise DataError(f"{type_file}: type index {int(raw.max())} but the model's type_map has "
                        f"{len(type_map)} types [{', '.join(type_map)}] (and there is no "
                        "type_map.raw to map names)")
    return raw


def load_system(path: str | Path, type_map: list[str]) -> System:
    """Read one deepmd/npy system folder and map its types onto ``type_map``."""
    path = Path(path)
    if not (path / "type.raw").is_file():
        raise DataError(f"{path}: not a deepmd/npy system (no type.raw)")
    types = _map_types(path, list(type_map))
    n = types.shape[0]
    periodic = not (path / "nopbc").exists()
    sets = sorted(p for p in path.glob("set.*") if p.is_dir())
    if not sets:
        raise DataError(f"{path}: no set.* folders")
    coords, boxes, energy, forces, virial = [], [], [], [], []
    has_virial = [(s / "virial.npy").is_file() for s in sets]
    if any(has_virial) and not all(has_virial):
        lacking = sets[has_virial.index(False)]
        raise DataError(f"{lacking}: virial.npy missing while other sets of {path.name} have it")
    for s in sets:
        for name in ("coord", "energy", "force") + (("box",) if periodic else ()):
            if not (s / f"{name}.npy").is_file():
                raise DataError(f"{s}: {name}.npy not found" +
                                (" (and no nopbc file)" if name == "box" else ""))
        c = _load_array(s / "coord.npy", "coordinates", (3 * n,), None)
        f = c.shape[0]
        coords.append(c.reshape(f, n, 3))
        energy.append(_load_array(s / "energy.npy", "energies", (), f))
        forces.append(_load_array(s / "force.npy", "forces", (3 * n,), f).reshape(f, n, 3))
        if periodic:
            b = _load_array(s / "box.npy", "boxes", (9,), f).reshape(f, 3, 3)
            vol = np.abs(np.linalg.det(b))
            if (vol < 1e-6).any():
                raise DataError(f"{s / 'box.npy'}: singular box in frame {int(np.argmax(vol < 1e-6))}"
                                " of this set")
            boxes.append(b)
        if has_virial[0]:
            virial.append(_load_array(s / "virial.npy", "virials", (9,), f))
    coords_all = np.concatenate(coords)
    if coords_all.shape[0] == 0:
        raise DataError(f"{path}: no frames")
    return System(path=path, types=types, coords=coords_all,
                  boxes=np.concatenate(boxes) if periodic else None,
                  energy=np.concatenate(energy), forces=np.concatenate(forces),
                  virial=np.concatenate(virial) if virial else None)


def load_systems(paths, type_map: list[str]) -> list[System]:
    """Every system found under ``paths`` (see :func:`find_systems`), in order."""
    systems = []
    for p in paths:
        systems += [load_system(s, type_map) for s in find_systems(p)]
    return systems
