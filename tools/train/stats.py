"""Data statistics of se_e2_a training, as DeePMD-kit computes them.

Environment statistics (DeePMD-kit's ``EnvMatStatSe``): over the sampled frames, for
every centre type t, take all ``nnei = Σ sel`` slots of all atoms of type t — empty
slots included, as zero rows — and accumulate

    r_t:  n = count,    Σ R[:, 0],     Σ R[:, 0]²
    a_t:  n = 3·count,  Σ R[:, 1:4],   Σ R[:, 1:4]²

then davg[t, k] = (⟨r_t⟩, 0, 0, 0) and dstd[t, k] = (σ(r_t), σ(a_t), σ(a_t), σ(a_t)) for
every slot k, σ = sqrt(max(⟨x²⟩ − ⟨x⟩², 0)), replaced by 1e-2 when below 1e-2 (the
protection) and by 0.1 when the type has no atoms; ⟨·⟩ of an absent type is 0. With
``set_davg_zero`` davg stays 0 (σ still subtracts the mean).

Energy bias (DeePMD-kit's ``compute_stats_from_redu``): the least-squares solution
(``numpy.linalg.lstsq``, minimum norm when the type counts are collinear) of
E_f ≈ Σ_t c_{f,t} b_t over the sampled frames f, c_{f,t} = number of atoms of type t.
"""
from __future__ import annotations

import math

import numpy as np

#: DeePMD-kit's floor for a standard deviation, and its value for a type with no data.
STD_PROTECTION = 1e-2
STD_DEFAULT = 0.1


class EnvStat:
    """Running (count, sum, sum of squares) of the radial and angular env columns per type."""

    def __init__(self, ntypes: int):
        self.ntypes = ntypes
        self.number = np.zeros((ntypes, 2))
        self.sum = np.zeros((ntypes, 2))
        self.sqsum = np.zeros((ntypes, 2))

    def add(self, env: np.ndarray, types: np.ndarray, nnei: int) -> None:
        """Accumulate raw environment rows ``env`` [N, S, 4] of atoms of ``types`` [N].

        ``S`` may be less than ``nnei``: the slots left out are empty (zero rows) and only
        count. Column 0 goes to r, columns 1–3 to a.
        """
        env = np.asarray(env, dtype=np.float64)
        for t in range(self.ntypes):
            rows = env[types == t]
            n_atoms = rows.shape[0]
            self.number[t] += (n_atoms * nnei, 3 * n_atoms * nnei)
            self.sum[t] += (rows[..., 0].sum(), rows[..., 1:].sum())
            self.sqsum[t] += (np.square(rows[..., 0]).sum(), np.square(rows[..., 1:]).sum())

    def mean(self) -> np.ndarray:
        """⟨x⟩ [ntypes, 2] (r, a); 0 where there was no data."""
        return np.divide(self.sum, self.number, out=np.zeros_like(self.sum), where=self.number > 0)

    def std(self) -> np.ndarray:
        """σ [ntypes, 2] with DeePMD-kit's protection and default."""
        out = np.full_like(self.sum, STD_DEFAULT)
        for t in range(self.ntypes):
            for c in range(2):
                n = self.number[t, c]
                if n == 0:
                    continue
                m = self.sum[t, c] / n
                val = math.sqrt(max(self.sqsum[t, c] / n - m * m, 0.0))
                out[t, c] = STD_PROTECTION if abs(val) < STD_PROTECTION else val
        return out

    def davg_dstd(self, nnei: int, set_davg_zero: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """davg, dstd float64 [ntypes, nnei, 4] (the same row for every slot)."""
        mean, std = self.mean(), self.std()
        davg = np.zeros((self.ntypes, nnei, 4))
        if not set_davg_zero:
            davg[:, :, 0] = mean[:, :1]
        dstd = np.empty((self.ntypes, nnei, 4))
        dstd[:, :, 0] = std[:, :1]
        dstd[:, :, 1:] = std[:, 1:2, None]
        return davg, dstd


def energy_bias(energies: np.ndarray, type_counts: np.ndarray, rcond: float | None = None) -> np.ndarray:
    """Per-type energy bias b [ntypes] (eV): least squares of E_f [F] on counts c [F, ntypes]."""
    energies = np.asarray(energies, dtype=np.float64).reshape(-1, 1)
    counts = np.asarray(type_counts, dtype=np.float64)
    bias, *_ = np.linalg.lstsq(counts, energies, rcond=rcond)
    return bias[:, 0]


def auto_sel(max_counts, ratio: float = 1.1) -> list[int]:
    """DeePMD-kit's ``sel = "auto:ratio"``: ceil(max neighbours × ratio) rounded up to a multiple of 4."""
    return [int(4 * math.ceil(math.ceil(c * ratio) / 4)) for c in max_counts]


def neighbor_statistics(systems, rcut: float, ntypes: int,
                        device: str = "cpu") -> tuple[np.ndarray, float]:
    """(largest number of neighbours of each type within ``rcut`` of any atom, int64
    [ntypes]; closest distance between two atoms, Å), over all frames of ``systems``.

    Uses the engine's cell-list ``NeighborList`` (Taichi).
    """
    import torch

    from dpengine.neighbor import NeighborList

    nlist = NeighborList(rcut, skin=0.0, device=device)
    best = np.zeros(ntypes, dtype=np.int64)
    closest = np.inf
    for system in systems:
        types = torch.as_tensor(system.types, device=device)
        for f in range(system.n_frames):
            pos = torch.as_tensor(system.coords[f], device=device)
            box = None if system.boxes is None else torch.as_tensor(system.boxes[f], device=device)
            nlist.update(pos, box, force=True)
            r = torch.linalg.vector_norm(nlist.displacements(pos, box), dim=-1)
            inside = (nlist.neighbors >= 0) & (r < rcut)
            if bool(inside.any()):
                closest = min(closest, float(r[inside].min()))
            j_types = types[nlist.neighbors.long().clamp_min(0)]
            for t in range(ntypes):
                best[t] = max(best[t], int((inside & (j_types == t)).sum(1).max()))
    return best, closest
