"""Integrators as small ``init``/``step`` objects chosen by name.

Every integrator exposes ``invariant(state, result)``: the quantity its exact flow
conserves (eV), which the thermo log writes in its ``conserved`` column and the tests
check for drift.
"""
from typing import Callable

import torch

from dpengine import units
from dpengine.potential import PotentialResult
from dpengine.state import State

ForceFn = Callable[[State], PotentialResult]


def kinetic_energy(state: State) -> torch.Tensor:
    """K = ½ Σ m v² (eV), a float64 0-d tensor."""
    return 0.5 * units.KE_TO_EV * (state.masses[:, None] * state.velocities ** 2).sum()


def degrees_of_freedom(state: State) -> int:
    """3N − 3: the centre-of-mass momentum is removed at start and conserved."""
    return max(3 * state.n_atoms - 3, 1)


def temperature(state: State, kinetic: torch.Tensor | float | None = None) -> float:
    """T = 2K / (N_dof k_B), K."""
    k = kinetic_energy(state) if kinetic is None else kinetic
    return float(2.0 * k / (degrees_of_freedom(state) * units.KB))


def pressure(state: State, result: PotentialResult, kinetic: torch.Tensor | float) -> float:
    """P = (2K + tr W) / (3V), bar (nan for open boundaries)."""
    if state.box is None:
        return float("nan")
    return float((2.0 * kinetic + torch.trace(result.virial)) / (3.0 * state.volume())
                 * units.EV_PER_A3_TO_BAR)


class NVE:
    """Velocity Verlet: v += dt/2·a; x += dt·v; F(x); v += dt/2·a. Invariant: K + U."""

    name = "nve"

    def __init__(self, timestep: float):
        self.dt = float(timestep)

    def init(self, state: State, result: PotentialResult) -> None:
        from dpengine.backend import init_taichi
        init_taichi(state.device.type)

    def step(self, state: State, result: PotentialResult, compute: ForceFn) -> PotentialResult:
        from taichi_kernels.integrate import kick, kick_drift
        kick_drift(state.positions, state.velocities, result.forces, state.masses, self.dt,
                   units.ACCEL)
        result = compute(state)
        kick(state.velocities, result.forces, state.masses, self.dt, units.ACCEL)
        state.step += 1
        return result

    def invariant(self, state: State, result: PotentialResult) -> float:
        return float(kinetic_energy(state) + result.energy)


INTEGRATORS = {"nve": NVE}


def make_integrator(ensemble: str, timestep: float, **options):
    """The integrator called ``ensemble`` (see ``INTEGRATORS``)."""
    try:
        cls = INTEGRATORS[ensemble]
    except KeyError:
        raise ValueError(f"unknown ensemble {ensemble!r}; available: {sorted(INTEGRATORS)}") from None
    return cls(timestep, **options)
