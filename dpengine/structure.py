"""Starting structures: LAMMPS data, extended XYZ, VASP POSCAR and deepmd/npy systems.

:func:`read_structure` returns a :class:`Structure` in engine units (Å, amu, Å/fs);
:func:`masses_for` gives standard masses by element and :func:`maxwell_boltzmann`
draws initial velocities at an exact temperature.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from dpengine import units

__all__ = ["FORMATS", "Structure", "StructureError", "guess_format", "read_structure",
           "masses_for", "maxwell_boltzmann"]

#: Formats :func:`read_structure` reads.
FORMATS = ("lammps-data", "extxyz", "vasp", "deepmd-npy")

# atom styles whose Atoms lines ASE parses, with the number of fields of a line that
# carries image flags; any other comment after "Atoms" (LAMMPS writes "Atoms # atomic",
# some tools "Atoms # metal") falls back to atomic.
_IMAGE_FIELDS = {"atomic": 8, "charge": 9, "full": 10, "bond": 9, "angle": 9, "molecular": 9}


class StructureError(ValueError):
    """A structure file that cannot be read; the message is one line naming the file."""


@dataclass
class Structure:
    """An atomistic structure in engine units.

    Attributes
    ----------
    positions : np.ndarray, float64 [N, 3], Å
    box : np.ndarray float64 [3, 3] (rows are the cell vectors a, b, c, Å), or None for
        open boundaries
    symbols : list of N element names
    velocities : np.ndarray float64 [N, 3], Å/fs, or None when the file has none
    masses : np.ndarray float64 [N], amu, or None when the file has none
    """

    positions: np.ndarray
    box: np.ndarray | None
    symbols: list[str]
    velocities: np.ndarray | None = None
    masses: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.positions = np.ascontiguousarray(self.positions, dtype=np.float64)
        n = self.positions.shape[0]
        if self.positions.shape != (n, 3):
            raise ValueError(f"positions must have shape [N, 3], got {self.positions.shape}")
        if len(self.symbols) != n:
            raise ValueError(f"{len(self.symbols)} symbols for {n} atoms")
        self.symbols = [str(s) for s in self.symbols]
        if self.box is not None:
            self.box = np.ascontiguousarray(self.box, dtype=np.float64).reshape(3, 3)
        if self.velocities is not None:
            self.velocities = np.ascontiguousarray(self.velocities, dtype=np.float64)
            if self.velocities.shape != (n, 3):
                raise ValueError(f"velocities must have shape [{n}, 3], "
                                 f"got {self.velocities.shape}")
        if self.masses is not None:
            self.masses = np.ascontiguousarray(self.masses, dtype=np.float64)
            if self.masses.shape != (n,):
                raise ValueError(f"masses must have shape [{n}], got {self.masses.shape}")

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])


# --------------------------------------------------------------------------- format guess
def guess_format(path: str | Path) -> str:
    """The format of ``path`` from its name: a folder with ``type.raw`` is
    ``deepmd-npy``; ``*.xyz``/``*.extxyz`` extxyz; ``POSCAR*``/``CONTCAR*``/``*.vasp``/
    ``*.poscar`` vasp; ``*.lmp``/``*.data``/``data.*`` lammps-data."""
    path = Path(path)
    name = path.name.lower()
    suffix = path.suffix.lower()
    if path.is_dir():
        if (path / "type.raw").is_file():
            return "deepmd-npy"
        raise StructureError(f"{path}: folder without type.raw is no deepmd/npy system")
    if suffix in (".xyz", ".extxyz"):
        return "extxyz"
    if name.startswith(("poscar", "contcar")) or suffix in (".vasp", ".poscar"):
        return "vasp"
    if suffix in (".lmp", ".data") or name.startswith("data."):
        return "lammps-data"
    raise StructureError(f"{path}: cannot guess the structure format from the file name; "
                         f"give format = one of {', '.join(FORMATS)}")


def read_structure(path: str | Path, format: str | None = None, frame: int = 0,
                   type_map: Sequence[str] | None = None) -> Structure:
    """Read frame ``frame`` of the structure at ``path``.

    ``format`` is one of :data:`FORMATS` (default: :func:`guess_format`). ``type_map``
    names the elements of LAMMPS types 1..n (required for LAMMPS data) and of the types
    of a deepmd/npy system that has no ``type_map.raw``. Raises :class:`StructureError`.
    """
    path = Path(path)
    if not path.exists():
        raise StructureError(f"{path}: file not found")
    fmt = format or guess_format(path)
    if fmt not in FORMATS:
        raise StructureError(f"{path}: unknown format {fmt!r}; accepted: {', '.join(FORMATS)}")
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or frame < 0:
        raise StructureError(f"{path}: frame must be an integer >= 0, got {frame!r}")
    frame = int(frame)
    type_map = None if type_map is None else [str(t) for t in type_map]
    if fmt == "deepmd-npy":
        return _read_deepmd(path, frame, type_map)
    if path.is_dir():
        raise StructureError(f"{path}: is a folder, not a {fmt} file")
    if fmt == "lammps-data":
        return _read_lammps(path, frame, type_map)
    return _read_ase(path, fmt, frame)


# --------------------------------------------------------------------------- LAMMPS data
def _scan_lammps_header(path: Path) -> tuple[int | None, np.ndarray, str, int]:
    """(number of atom types, box origin [xlo, ylo, zlo] in Å, atom style, number of
    fields of the first line of the Atoms section)."""
    n_types, origin, style, n_fields = None, np.zeros(3), "atomic", 0
    with open(path, errors="replace") as fh:
        next(fh, None)  # the first line is a comment
        for line in fh:
            body, _, comment = line.partition("#")
            words = body.split()
            if not words:
                continue
            if words[0] == "Atoms":
                style = comment.strip() if comment.strip() in _IMAGE_FIELDS else "atomic"
                first = next((ln for ln in fh if ln.partition("#")[0].strip()), "")
                n_fields = len(first.partition("#")[0].split())
                break
            try:
                if words[-2:] == ["atom", "types"]:
                    n_types = int(words[0])
                for i, axis in enumerate("xyz"):
                    if words[-2:] == [f"{axis}lo", f"{axis}hi"]:
                        origin[i] = float(words[0])
            except (ValueError, IndexError):
                raise StructureError(f"{path}: cannot read the header line "
                                     f"{line.strip()!r}") from None
            if words[-2:] == ["abc", "origin"] or words[-1:] in (["avec"], ["bvec"], ["cvec"]):
                raise StructureError(f"{path}: general triclinic boxes (avec/bvec/cvec) are "
                                     "not supported; write the restricted form (xy xz yz)")
    return n_types, origin, style, n_fields


def _read_lammps(path: Path, frame: int, type_map: list[str] | None) -> Structure:
    """LAMMPS data file, metal units: positions Å, velocities Å/ps (→ Å/fs), masses amu.

    Atoms are ordered by atom id; image flags, if any, are applied (unwrapped
    positions); the cell is moved to the origin (positions are shifted by
    −(xlo, ylo, zlo)). Without image flags the positions are the file's numbers exactly.
    """
    import ase.io
    import ase.units

    if frame != 0:
        raise StructureError(f"{path}: frame {frame} requested but {path.name} has 1 frame")
    if not type_map:
        raise StructureError(f"{path}: a LAMMPS data file has no element names; give "
                             "type_map (elements of LAMMPS types 1..n)")
    n_types, origin, atom_style, n_fields = _scan_lammps_header(path)
    # ASE applies image flags through scaled coordinates, which costs an ulp: only then
    images = n_fields == _IMAGE_FIELDS[atom_style]
    try:
        atoms = ase.io.read(path, format="lammps-data", atom_style=atom_style, units="metal",
                            read_image_flags=images)
    except Exception as exc:  # ASE raises many kinds; report its reason on one line
        raise StructureError(f"{path}: cannot read as LAMMPS data ({atom_style} style): "
                             f"{_reason(exc)}") from None
    types = np.asarray(atoms.arrays["type"], dtype=np.int64)
    if np.any(types < 1):
        raise StructureError(f"{path}: atom types must be positive integers (type labels "
                             "are not supported)")
    n_types = max(n_types or 0, int(types.max(initial=0)))
    if n_types > len(type_map):
        raise StructureError(f"{path}: {n_types} atom types but type_map has "
                             f"{len(type_map)} entries ({', '.join(type_map)})")
    velocities = None
    if atoms.has("momenta"):
        velocities = atoms.get_velocities() * ase.units.fs  # ASE units → Å/fs
    masses = atoms.get_masses() if atoms.has("masses") else None
    box = np.array(atoms.cell.array, dtype=np.float64)
    _check_box(path, box)
    return Structure(positions=atoms.positions - origin, box=box,
                     symbols=[type_map[t - 1] for t in types], velocities=velocities,
                     masses=masses)


# --------------------------------------------------------------------------- ASE formats
def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _check_box(path: Path, box: np.ndarray) -> None:
    if not np.all(np.isfinite(box)) or abs(np.linalg.det(box)) < 1e-12:
        raise StructureError(f"{path}: the periodic cell is degenerate (zero volume)")


def _read_ase(path: Path, fmt: str, frame: int) -> Structure:
    """extended XYZ or VASP POSCAR through ase.io.read."""
    import ase.io
    import ase.units

    atoms, count = None, 0
    try:
        if fmt == "extxyz":  # read lazily up to the frame wanted
            for count, candidate in enumerate(ase.io.iread(path, index=":", format="extxyz"),
                                              start=1):
                if count - 1 == frame:
                    atoms = candidate
                    break
        else:  # a POSCAR holds one frame
            candidate, count = ase.io.read(path, format="vasp"), 1
            atoms = candidate if frame == 0 else None
    except Exception as exc:  # ASE raises many kinds; report its reason on one line
        raise StructureError(f"{path}: cannot read as {fmt}: {_reason(exc)}") from None
    if atoms is None:
        raise StructureError(f"{path}: frame {frame} requested but {path.name} has "
                             f"{count} frame{'s' if count != 1 else ''}")
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.all():
        box = np.array(atoms.cell.array, dtype=np.float64)
        _check_box(path, box)
    elif not pbc.any():
        box = None
    else:
        raise StructureError(f"{path}: partial periodicity pbc={pbc.tolist()} is not "
                             "supported; use all-periodic or open boundaries")
    velocities = atoms.get_velocities() * ase.units.fs if atoms.has("momenta") else None
    masses = atoms.get_masses() if atoms.has("masses") else None
    return Structure(positions=np.array(atoms.positions, dtype=np.float64), box=box,
                     symbols=atoms.get_chemical_symbols(), velocities=velocities,
                     masses=masses)


# --------------------------------------------------------------------------- deepmd/npy
def _set_dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.glob("set.*") if p.is_dir())


def _read_deepmd(path: Path, frame: int, type_map: list[str] | None) -> Structure:
    """A deepmd/npy system folder: ``type.raw``, ``type_map.raw`` (optional), ``nopbc``
    (optional), ``set.*/coord.npy`` [nframes, N*3] Å and ``set.*/box.npy`` [nframes, 9] Å.
    Frames are counted across the sets in sorted order."""
    if not path.is_dir():
        raise StructureError(f"{path}: a deepmd/npy system is a folder, not a file")
    if not (path / "type.raw").is_file():
        raise StructureError(f"{path}: no type.raw; not a deepmd/npy system")
    try:
        types = np.loadtxt(path / "type.raw", dtype=np.int64, ndmin=1)
    except ValueError as exc:
        raise StructureError(f"{path}/type.raw: {_reason(exc)}") from None
    if (path / "type_map.raw").is_file():
        type_map = (path / "type_map.raw").read_text().split()
    elif not type_map:
        raise StructureError(f"{path}: no type_map.raw; give type_map (element of each "
                             "deepmd type index)")
    sets = _set_dirs(path)
    if not sets:
        raise StructureError(f"{path}: no set.* folders")
    total = 0
    for set_dir in sets:
        coord_file = set_dir / "coord.npy"
        if not coord_file.is_file():
            raise StructureError(f"{set_dir}: coord.npy not found")
        coords = np.load(coord_file, mmap_mode="r")
        n_frames = coords.shape[0] if coords.ndim > 0 else 0
        if frame < total + n_frames:
            local = frame - total
            break
        total += n_frames
    else:
        raise StructureError(f"{path}: frame {frame} requested but {path.name} has "
                             f"{total} frames")
    n_atoms = types.shape[0]
    positions = np.array(coords[local], dtype=np.float64).reshape(-1)
    if positions.shape[0] != 3 * n_atoms:
        raise StructureError(f"{coord_file}: {positions.shape[0]} coordinates per frame for "
                             f"{n_atoms} atoms in type.raw")
    if (set_dir / "real_atom_types.npy").is_file():  # mixed-type systems
        types = np.load(set_dir / "real_atom_types.npy", mmap_mode="r")[local]
        types = np.asarray(types, dtype=np.int64)
    if types.min(initial=0) < 0 or types.max(initial=0) >= len(type_map):
        raise StructureError(f"{path}: type index {int(types.max())} but type map has "
                             f"{len(type_map)} entries ({', '.join(type_map)})")
    box = None
    if not (path / "nopbc").exists():
        box_file = set_dir / "box.npy"
        if not box_file.is_file():
            raise StructureError(f"{set_dir}: box.npy not found (and no nopbc file)")
        box = np.array(np.load(box_file, mmap_mode="r")[local], dtype=np.float64).reshape(3, 3)
        _check_box(box_file, box)
    return Structure(positions=positions.reshape(n_atoms, 3), box=box,
                     symbols=[type_map[t] for t in types])


# --------------------------------------------------------------------------- masses, MB
def masses_for(symbols: Sequence[str], overrides: dict[str, float] | None = None) -> np.ndarray:
    """Masses (amu) [N] of ``symbols``: ``overrides[element]`` where given, else the
    standard atomic mass of ase.data.atomic_masses. Unknown elements need an override."""
    from ase.data import atomic_masses, atomic_numbers

    overrides = dict(overrides or {})
    for element, mass in overrides.items():
        if not (isinstance(mass, (int, float)) and math.isfinite(mass) and mass > 0):
            raise StructureError(f"mass of {element!r} must be a positive number (amu), "
                                 f"got {mass!r}")
    table: dict[str, float] = {}
    for element in dict.fromkeys(symbols):
        if element in overrides:
            table[element] = float(overrides[element])
        elif element in atomic_numbers and atomic_numbers[element] > 0:
            table[element] = float(atomic_masses[atomic_numbers[element]])
        else:
            raise StructureError(f"no standard mass for element {element!r}; give it in "
                                 "[system] masses (amu)")
    return np.array([table[s] for s in symbols], dtype=np.float64)


def maxwell_boltzmann(masses: np.ndarray, temperature: float, seed: int) -> np.ndarray:
    """Velocities [N, 3] (Å/fs) at kinetic temperature ``temperature`` (K), exactly.

    Components are drawn from N(0, k_B T / m) with ``Generator(Philox(seed))``; the
    centre-of-mass momentum is removed and the velocities are rescaled so that
    T = 2 KE / ((3N − 3) k_B) with KE = ½ Σ m v² (eV). N == 1 or T == 0 gives zeros.
    ``masses`` are in amu [N].
    """
    masses = np.asarray(masses, dtype=np.float64)
    if masses.ndim != 1:
        raise ValueError(f"masses must have shape [N], got {masses.shape}")
    if not np.all(np.isfinite(masses) & (masses > 0)):
        raise ValueError("masses must be positive and finite")
    temperature = float(temperature)
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be >= 0 K, got {temperature}")
    n = masses.shape[0]
    if n <= 1 or temperature == 0.0:
        return np.zeros((n, 3))
    rng = np.random.Generator(np.random.Philox(seed))
    sigma = np.sqrt(units.KB * temperature * units.ACCEL / masses)  # Å/fs
    v = rng.standard_normal((n, 3)) * sigma[:, None]
    v -= (masses[:, None] * v).sum(axis=0) / masses.sum()
    kinetic = 0.5 * float(np.sum(masses[:, None] * v * v)) * units.KE_TO_EV
    current = 2.0 * kinetic / ((3 * n - 3) * units.KB)
    return v * math.sqrt(temperature / current)

