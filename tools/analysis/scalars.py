"""Scalar time series: mass density of a trajectory, and the columns of a thermo log.

Mass density ρ(t) = Σ_i m_i / V(t) · 1.66053906660 (g/cm³ per amu/Å³), V = |det H| (Å³).
Averages carry a block standard error: the series is cut into B equal blocks and
σ = std(block means) / √B, which accounts for time correlation when blocks are longer
than the correlation time.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .trajectory import Trajectory, progress

__all__ = ["AMU_PER_A3_TO_G_PER_CM3", "DensityResult", "density", "block_error",
           "read_thermo_log", "summarize"]

#: 1 amu/Å³ in g/cm³ (1.66053906660e-24 g / 1e-24 cm³).
AMU_PER_A3_TO_G_PER_CM3 = 1.66053906660


def block_error(x, blocks: int = 5) -> float:
    """Standard error of the mean of the series ``x`` from ``blocks`` block means (NaN
    when fewer than 2 blocks of at least one value fit)."""
    x = np.asarray(x, dtype=np.float64)
    blocks = min(int(blocks), len(x))
    if blocks < 2:
        return float("nan")
    n = len(x) // blocks
    means = x[:n * blocks].reshape(blocks, n).mean(axis=1)
    return float(np.std(means, ddof=1) / np.sqrt(blocks))


@dataclass
class DensityResult:
    """time [F] ps; volume [F] Å³; density [F] g/cm³; mass amu; mean, std, sem g/cm³."""

    time: np.ndarray
    volume: np.ndarray
    density: np.ndarray
    mass: float
    mean: float
    std: float
    sem: float


def density(traj: Trajectory, frames, masses, blocks: int = 5,
            show_progress: bool = True) -> DensityResult:
    """Mass density of every selected frame (needs a cell) from per-atom ``masses`` (amu)."""
    if not traj.periodic:
        raise ValueError(f"{traj.path}: no cell (cell_lengths/cell_angles): density needs a "
                         "periodic trajectory")
    mass = float(np.sum(masses))
    times, volumes = [], []
    for chunk in progress(traj.chunks(frames, positions=False), len(frames), "density",
                          show_progress):
        times.append(chunk.time)
        volumes.append(np.abs(np.linalg.det(chunk.boxes)))
    time, volume = np.concatenate(times), np.concatenate(volumes)
    rho = mass / volume * AMU_PER_A3_TO_G_PER_CM3
    return DensityResult(time=time, volume=volume, density=rho, mass=mass,
                         mean=float(rho.mean()), std=float(rho.std()),
                         sem=block_error(rho, blocks))


_HEADER = re.compile(r"^([^\[\]]+?)(?:\[(.*)\])?$")


def read_thermo_log(path) -> tuple[list[str], list[str], np.ndarray]:
    """(names, units, data [rows, columns]) of a thermo log: one ``#`` header line of
    ``name[unit]`` tokens (dpengine's ``thermo.log``) followed by numeric rows. A header
    without units gives empty units; ``ValueError`` naming the file for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"thermo log {path} does not exist")
    header = None
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("#"):
                header = line[1:].split()
            elif line.strip():
                break
    if not header:
        raise ValueError(f"{path}: no '# name[unit] ...' header line (not a thermo log?)")
    try:
        data = np.loadtxt(path, comments="#", ndmin=2)
    except ValueError as exc:
        raise ValueError(f"{path}: not a numeric table ({str(exc).splitlines()[0]})") from None
    if data.size == 0:
        raise ValueError(f"{path}: thermo log has no data rows")
    if data.shape[1] != len(header):
        raise ValueError(f"{path}: {len(header)} header names but {data.shape[1]} columns")
    names, units = [], []
    for token in header:
        m = _HEADER.match(token)
        names.append(m.group(1) if m else token)
        units.append((m.group(2) or "") if m else "")
    return names, units, data


def summarize(data: np.ndarray, blocks: int = 5) -> list[dict]:
    """Per column: mean, std, block standard error, min, max."""
    return [dict(mean=float(col.mean()), std=float(col.std()), sem=block_error(col, blocks),
                 min=float(col.min()), max=float(col.max())) for col in np.asarray(data).T]
