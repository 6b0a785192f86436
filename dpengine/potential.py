"""The ``Potential`` protocol: what the integrators and the run loop call.

A potential takes positions, box and types plus the engine's neighbour list (built
for the largest cutoff + skin among the potentials in use) and returns energy, forces,
virial and, on request, per-atom energies. Potentials compose: ``SumPotential`` adds
any number of them.
"""
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass
class PotentialResult:
    """energy: float64 0-d tensor (eV); forces float64 [N, 3] (eV/Å);
    virial float64 [3, 3] (eV), W = −Σ_pairs r_ij ⊗ ∂E/∂r_ij (positive when repulsive);
    atom_energy float64 [N] (eV) or None."""

    energy: torch.Tensor
    forces: torch.Tensor
    virial: torch.Tensor
    atom_energy: torch.Tensor | None = None


@runtime_checkable
class Potential(Protocol):
    #: interaction range, Å
    cutoff: float

    def compute(self, positions: torch.Tensor, box: torch.Tensor | None, types: torch.Tensor,
                nlist, atom_energy: bool = False) -> PotentialResult:
        """positions float64 [N, 3] Å, box [3, 3] (rows = cell vectors) or None,
        types int32 [N]; ``nlist`` a ``dpengine.neighbor.NeighborList`` already updated."""
        ...


class SumPotential:
    """U = Σ_k U_k; forces, virials and atomic energies add."""

    def __init__(self, *terms: Potential):
        if not terms:
            raise ValueError("SumPotential needs at least one term")
        self.terms = list(terms)
        self.cutoff = max(t.cutoff for t in terms)

    def compute(self, positions, box, types, nlist, atom_energy: bool = False) -> PotentialResult:
        parts = [t.compute(positions, box, types, nlist, atom_energy) for t in self.terms]
        out = PotentialResult(sum(p.energy for p in parts), sum(p.forces for p in parts),
                              sum(p.virial for p in parts))
        if atom_energy:
            out.atom_energy = sum(p.atom_energy for p in parts)
        return out
