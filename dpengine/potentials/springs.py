"""Harmonic springs tethering every atom to a site: the Einstein crystal.

U = Σ_i ½ k_{t_i} |x_i − s_i|²,  F_i = −k Δ_i,  W = Σ_i Δ_i ⊗ F_i  (Δ_i = x_i − s_i).

The sites are the reference positions r0 (by default the starting structure) carried
affinely by the cell: s_i = r0_i + f0_i @ (h − h0), with f0 = r0 @ h0⁻¹ the fractional
coordinates in the reference box h0 — so s = r0 exactly while the box is unchanged, and
the springs follow a barostat's cell. Positions are the engine's unwrapped ones, so no
minimum image is needed. The springs are an external field: they do not conserve the
total momentum (``conserves_momentum = False``: all 3N degrees of freedom count).

Exact canonical averages (classical, N atoms, any k): ⟨U⟩ = (3N/2) k_B T and
Var(U) = (3N/2) (k_B T)²; configurational free energy −(3N/2) k_B T ln(2π k_B T/k).
Units: k eV/Å², positions Å.
"""
from __future__ import annotations

import numpy as np
import torch

from dpengine.backend import init_taichi
from dpengine.potential import PotentialResult


class HarmonicSprings:
    """Springs ``Potential``: ``spring_constant`` a float (eV/Å²) or ``{element: k}``;
    ``reference`` float64 [N, 3] sites (Å); ``reference_box`` [3, 3] or None (open)."""

    conserves_momentum = False
    cutoff = 0.0

    def __init__(self, type_map, spring_constant, reference, reference_box=None, device="cpu"):
        self.type_map = list(type_map)
        self.device = torch.device(device)
        nt = len(self.type_map)
        if isinstance(spring_constant, (int, float)):
            k = np.full(nt, float(spring_constant))
        else:
            k = np.full(nt, np.nan)
            for element, value in dict(spring_constant).items():
                if element not in self.type_map:
                    raise ValueError(f"spring_constant: element {element!r} is not in the type "
                                     f"map {self.type_map}")
                k[self.type_map.index(element)] = float(value)
        if np.any(k[~np.isnan(k)] < 0):
            raise ValueError("spring_constant must be >= 0 (eV/Å²)")
        self.k = k
        r0 = np.asarray(reference, dtype=np.float64).reshape(-1, 3)
        f0 = np.zeros_like(r0)
        if reference_box is not None:
            f0 = r0 @ np.linalg.inv(np.asarray(reference_box, dtype=np.float64))
            self.reference_box = torch.tensor(np.asarray(reference_box, dtype=np.float64),
                                              device=self.device)
        else:
            self.reference_box = None
        self._sites = torch.tensor(np.concatenate([r0, f0], axis=1), dtype=torch.float64,
                                   device=self.device)
        from taichi_kernels.pair import SP_K
        table = np.zeros(SP_K + nt)
        table[SP_K:] = np.nan_to_num(k, nan=0.0)
        self._table = torch.tensor(table, dtype=torch.float64, device=self.device)
        self._out = None

    def check_types(self, types) -> None:
        """ValueError if an element present in ``types`` has no spring constant."""
        for t in sorted(set(np.asarray(types).tolist())):
            if np.isnan(self.k[t]):
                raise ValueError(f"spring_constant: no value for element {self.type_map[t]} "
                                 "(it is in the system)")

    def compute(self, positions, box, types, nlist=None, atom_energy: bool = False) -> PotentialResult:
        from taichi_kernels.pair import SP_DBOX, out_rows, springs_compute
        init_taichi(self.device.type)
        n = positions.shape[0]
        if n != self._sites.shape[0]:
            raise ValueError(f"springs have {self._sites.shape[0]} sites, got {n} atoms")
        if self._out is None or self._out.shape[0] != out_rows(n):
            self._out = torch.zeros((out_rows(n), 10), dtype=torch.float64, device=self.device)
        if box is not None and self.reference_box is not None:
            self._table[SP_DBOX:SP_DBOX + 9].copy_((box - self.reference_box).reshape(9))
        springs_compute(positions, types, self._sites, self._table, self._out)
        sums = self._out[-1].tolist()
        w = sums[4:10]
        f64 = dict(dtype=torch.float64, device=self.device)
        virial = torch.tensor([[w[0], w[3], w[4]], [w[3], w[1], w[5]], [w[4], w[5], w[2]]], **f64)
        return PotentialResult(torch.tensor(sums[3], **f64), self._out[:n, 0:3].clone(), virial,
                               self._out[:n, 3].clone() if atom_energy else None)
