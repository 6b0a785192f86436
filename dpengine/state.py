"""The MD state: one dataclass of tensors that every part of the engine reads.

The state owns positions, velocities, the box, types and masses; the integrator
advances it, the run loop saves and restores it. Nothing else keeps copies.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class State:
    """Positions, velocities and cell of an atomistic system.

    Attributes
    ----------
    positions : torch.Tensor, float64 [N, 3], Å
    velocities : torch.Tensor, float64 [N, 3], Å/fs
    box : torch.Tensor float64 [3, 3] (rows are the cell vectors a, b, c, Å) or None
        for open boundaries.
    types : torch.Tensor, int32 [N], indices into ``type_map``
    masses : torch.Tensor, float64 [N], amu
    type_map : list of element names, one per type index
    step : MD step counter (the number of completed steps)
    ensemble : named extended-system variables (thermostat chains, barostat
        momenta, ...), each a float64 tensor; saved in restart files.
    seed : seed of the counter-based random stream keyed by (seed, step, atom, component)
    """

    positions: torch.Tensor
    velocities: torch.Tensor
    box: torch.Tensor | None
    types: torch.Tensor
    masses: torch.Tensor
    type_map: list[str]
    step: int = 0
    ensemble: dict[str, torch.Tensor] = field(default_factory=dict)
    seed: int = 0

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])

    @property
    def device(self) -> torch.device:
        return self.positions.device

    @property
    def periodic(self) -> bool:
        return self.box is not None

    def volume(self) -> float:
        """Cell volume |det(box)| in Å³ (nan for open boundaries)."""
        if self.box is None:
            return float("nan")
        return float(torch.linalg.det(self.box).abs())

    def to(self, device: torch.device | str) -> "State":
        """A copy of the state on ``device`` (integers and scalars are kept)."""
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return State(mv(self.positions), mv(self.velocities), mv(self.box), mv(self.types),
                     mv(self.masses), list(self.type_map), self.step,
                     {k: v.to(device) for k, v in self.ensemble.items()}, self.seed)
