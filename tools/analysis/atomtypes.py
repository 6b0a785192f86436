"""Element names of a trajectory's atoms, and selections by name.

An AMBER NetCDF trajectory stores no atom names, so they come from one of:

* ``--input run.toml`` — the ``dpengine run`` input: its ``[system] structure`` read with its
  ``type_map`` (or the model's type map when the file gives none);
* ``--types-file FILE`` — a structure file that :func:`dpengine.structure.read_structure`
  reads (LAMMPS data with ``--type-map``, extended XYZ, POSCAR, a deepmd/npy folder), or a
  plain text file with one element name per atom and line (``#`` comments and blank lines
  ignored), or one 0-based type index per line (DeePMD-kit's ``type.raw``) with
  ``--type-map`` naming index 0, 1, ...
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["resolve_symbols", "select", "symbols_from_text"]


def _is_structure_file(path: Path) -> bool:
    from dpengine.structure import StructureError, guess_format
    try:
        guess_format(path)
        return True
    except StructureError:
        return False


def symbols_from_text(path: Path, type_map=None) -> list[str]:
    """Element names from a text file: one name, or one 0-based index into ``type_map``,
    per line (``#`` comments and blank lines are skipped)."""
    words = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            body = line.partition("#")[0].split()
            if len(body) > 1:
                raise ValueError(f"{path}: expected one element name per line, got "
                                 f"{line.strip()!r}")
            words.extend(body)
    if not words:
        raise ValueError(f"{path}: no atom types in the file")
    if all(w.lstrip("-").isdigit() for w in words):
        if not type_map:
            raise ValueError(f"{path}: holds numeric types; give --type-map NAME ... "
                             "(index 0 first)")
        index = np.array([int(w) for w in words])
        bad = index[(index < 0) | (index >= len(type_map))]
        if bad.size:
            raise ValueError(f"{path}: type index {int(bad[0])} outside --type-map "
                             f"{' '.join(type_map)} (0-based)")
        return [str(type_map[k]) for k in index]
    return words


def _symbols_from_config(path: Path) -> list[str]:
    from dpengine.config import ConfigError, load_config
    from dpengine.structure import read_structure

    try:
        cfg = load_config(path)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    system = cfg.system
    type_map = list(system.type_map) if system.type_map else None
    if type_map is None:
        from dpengine.model.io import read_metadata
        type_map = list(read_metadata(cfg.potential.model)["type_map"])
    structure = read_structure(system.structure, format=system.format, frame=system.frame,
                               type_map=type_map)
    return structure.symbols


def resolve_symbols(n_atoms: int, input_toml=None, types_file=None, type_map=None,
                    required: bool = True, trajectory: str = "trajectory") -> list[str] | None:
    """Element name of every atom [n_atoms], from the sources described in the module
    docstring; None when no source is given and ``required`` is False.

    ``ValueError`` when no source is given but ``required``, or when the source's atom count
    differs from ``n_atoms`` (naming both)."""
    from dpengine.structure import read_structure

    if input_toml is not None and types_file is not None:
        raise ValueError("give either --input or --types-file, not both")
    if input_toml is not None:
        source = Path(input_toml)
        symbols = _symbols_from_config(source)
    elif types_file is not None:
        source = Path(types_file)
        if not source.exists():
            raise FileNotFoundError(f"types file {source} does not exist")
        if _is_structure_file(source):
            symbols = read_structure(source, type_map=type_map).symbols
        else:
            symbols = symbols_from_text(source, type_map)
    elif type_map:
        raise ValueError("--type-map needs --types-file (a structure file or type.raw with "
                         "numeric types)")
    else:
        if required:
            raise ValueError(f"{trajectory}: AMBER trajectories carry no atom names; give "
                             "--input RUN.toml or --types-file FILE")
        return None
    if len(symbols) != n_atoms:
        raise ValueError(f"{source}: {len(symbols)} atoms, but {trajectory} has {n_atoms}")
    return list(symbols)


def select(symbols: list[str] | None, name: str, source: str = "the type source") -> np.ndarray:
    """Indices (int64, ascending) of the atoms named ``name``; ``ValueError`` naming the type
    and the names present when there is none. ``name == 'all'`` selects every atom."""
    if symbols is None:
        raise ValueError(f"type {name!r} cannot be selected: no atom types given (--input or "
                         "--types-file)")
    if name == "all":
        return np.arange(len(symbols))
    sym = np.asarray(symbols)
    idx = np.flatnonzero(sym == name)
    if idx.size == 0:
        present = ", ".join(dict.fromkeys(symbols))
        raise ValueError(f"type {name!r} is not present in {source} (types: {present})")
    return idx
