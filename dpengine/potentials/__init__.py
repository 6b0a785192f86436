"""Reference potentials (Lennard-Jones, harmonic springs) and the force field the
integrators call: a ``Potential`` (or a sum of them) with the engine's neighbour list.

``ForceField(potential, skin)(state)`` updates the neighbour list and returns the
potential's ``PotentialResult``. Under a barostat the box changes every step; the
engine's ``NeighborList`` rebuilds whenever the box changes at all, so
:class:`BoxAwareNeighborList` keeps a list valid across cell changes instead (criterion
in its docstring) and rebuilds only when needed.
"""
from __future__ import annotations

import numpy as np
import torch

from dpengine.potential import PotentialResult, SumPotential
from dpengine.potentials.lj import LennardJones
from dpengine.potentials.springs import HarmonicSprings

__all__ = ["LennardJones", "HarmonicSprings", "SumPotential", "ForceField",
           "BoxAwareNeighborList", "conserves_momentum"]


def conserves_momentum(potential) -> bool:
    """False if the potential (or a term of a sum) is an external field, e.g. springs."""
    terms = getattr(potential, "terms", [potential])
    return all(getattr(t, "conserves_momentum", True) for t in terms)


class BoxAwareNeighborList:
    """The engine's Verlet list, kept valid while the cell changes (barostats).

    With the list built at box h₀ and positions x₀ for radius r_c + δ, and now box h and
    positions x, let M = h₀⁻¹ h (row vectors: every pair vector is r = r′ M, where r′ is the
    same pair in the positions mapped back to the old cell, x′ = x M⁻¹). Then
    |r| ≥ σ_min(M) |r′| and |r′ − r′₀| ≤ 2 max_i |x′_i − x₀,i|, so every pair now within r_c
    was within r_c/σ_min + 2d of each other at the build, and the list still holds all
    of them while

        r_c / σ_min(M) + 2 max_i |x′_i − x₀,i| ≤ r_c + δ.

    When the box has not changed (M = I) this is the engine's own criterion. Between
    builds the potentials use the stored (j, image) pairs with the current positions and
    box, exactly as they do between builds at constant volume.
    """

    def __init__(self, cutoff: float, skin: float, device="cpu"):
        from dpengine.neighbor import NeighborList
        self.list = NeighborList(cutoff, skin, device=device)
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self._box0: torch.Tensor | None = None
        self._inv_box0: np.ndarray | None = None
        self.n_checks = 0

    @property
    def n_builds(self) -> int:
        return self.list.n_builds

    def update(self, positions: torch.Tensor, box: torch.Tensor | None) -> bool:
        """Rebuild if needed; True when rebuilt."""
        if box is None or self._box0 is None or torch.equal(box, self._box0):
            rebuilt = self.list.update(positions, box)
        else:
            self.n_checks += 1
            m = self._inv_box0 @ np.array(box.tolist())
            smin = float(np.linalg.svd(m, compute_uv=False)[-1])
            mi = torch.as_tensor(np.linalg.inv(m), dtype=positions.dtype, device=positions.device)
            # x @ M⁻¹ by broadcasting: a torch matmul of this size can wait milliseconds for
            # the BLAS thread pool when Taichi's threads hold the cores
            mapped = (positions[:, 0:1] * mi[0] + positions[:, 1:2] * mi[1]
                      + positions[:, 2:3] * mi[2])
            d = self.list.max_displacement(mapped)
            rebuilt = (not smin > 0) or self.cutoff / smin + 2.0 * d > self.cutoff + self.skin
            if rebuilt:
                self.list.update(positions, box, force=True)
        if rebuilt and box is not None:
            self._box0 = box.clone()
            self._inv_box0 = np.linalg.inv(np.array(box.tolist()))
        elif box is None:
            self._box0 = None
        return rebuilt


class ForceField:
    """``potential`` evaluated with a neighbour list of radius cutoff + ``skin`` (none when
    the potential has no pair terms, e.g. springs alone); ``cutoff`` raises the list's
    cutoff (e.g. for a model-deviation committee that reads the same list). Call with a
    ``State``."""

    def __init__(self, potential, skin: float, device="cpu", cutoff: float = 0.0):
        self.potential = potential
        cutoff = max(float(getattr(potential, "cutoff", 0.0)), float(cutoff))
        self.neighbors = BoxAwareNeighborList(cutoff, skin, device) if cutoff > 0 else None
        self.n_calls = 0

    @property
    def nlist(self):
        """The engine ``NeighborList`` the potentials read (None without pair terms)."""
        return None if self.neighbors is None else self.neighbors.list

    def __call__(self, state, atom_energy: bool = False) -> PotentialResult:
        self.n_calls += 1
        if self.neighbors is not None:
            self.neighbors.update(state.positions, state.box)
        return self.potential.compute(state.positions, state.box, state.types, self.nlist,
                                      atom_energy)
