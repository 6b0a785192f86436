"""Energy minimisation (FIRE, L-BFGS), with and without the cell, on the Lennard-Jones
crystal whose minimum is known independently (a 1-D scan of the perfect fcc lattice)."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from dpengine import units
from dpengine.integrators import make_integrator, volume

import md_helpers as h


def lattice_energy(a: float) -> float:
    """Energy per atom (eV) of the perfect fcc lattice with constant a (Å)."""
    pos, box = h.fcc(3, a)
    state = h.make_state(pos, box, 0.0)
    return float(h.lj_forcefield(2.5, "shift", skin=0.5)(state).energy) / len(pos)


@pytest.fixture(scope="module")
def a0():
    return minimize_scalar(lattice_energy, bracket=(5.2, 5.28, 5.4), tol=1e-10).x


def relax(name, state, steps=5000, **kw):
    ff = h.lj_forcefield(2.5, "shift", skin=0.5)
    integ = make_integrator(name, 1.0, **kw)
    integ.prepare(state)
    result = ff(state)
    integ.init(state, result)
    while state.step < steps and not integ.converged:
        result = integ.step(state, result, ff)
    return integ, result


@pytest.mark.parametrize("name", ["fire", "lbfgs"])
def test_positions_relax_to_the_lattice(name, a0):
    pos, box = h.fcc(3, a0)
    rng = np.random.default_rng(1)
    state = h.make_state(pos + rng.normal(0, 0.1, pos.shape), box, 0.0)
    integ, result = relax(name, state, force_tolerance=1e-5)
    assert integ.converged, (integ.max_force, state.step)
    assert float(result.energy) / len(pos) == pytest.approx(lattice_energy(a0), abs=1e-9)
    assert float(torch.linalg.vector_norm(result.forces, dim=1).max()) < 1e-5
    print(name, "steps", state.step)


@pytest.mark.parametrize("coupling, start", [("isotropic", "cubic"), ("anisotropic", "cubic"),
                                            ("triclinic", "sheared")])
def test_cell_relaxes_to_the_minimum(a0, coupling, start):
    """At P = 0 the cell relaxes to the scanned lattice constant; a sheared description of the
    same crystal relaxes to the same energy per atom."""
    pos, box = h.fcc(3, 5.45)
    if start == "sheared":
        box = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1]], dtype=float) @ box
    rng = np.random.default_rng(2)
    state = h.make_state(pos + rng.normal(0, 0.05, pos.shape), box, 0.0)
    integ, result = relax("fire", state, pressure=0.0, coupling=coupling,
                          force_tolerance=1e-4, stress_tolerance=1.0)
    assert integ.converged, (integ.max_force, integ.max_stress, state.step)
    a = (volume(state.box) / 27 / 4 * 4) ** (1.0 / 3.0)   # 27 conventional cells
    print(coupling, "steps", state.step, "a", a, "a0", a0)
    assert a == pytest.approx(a0, abs=2e-4)
    assert float(result.energy) / len(pos) == pytest.approx(lattice_energy(a0), abs=1e-7)


def test_cell_relaxes_to_a_target_pressure(a0):
    """Under P₀ = 2 kbar the relaxed static pressure W/3V equals P₀ (within the tolerance)
    and the crystal is denser than at P = 0."""
    pos, box = h.fcc(3, a0)
    state = h.make_state(pos, box, 0.0)
    integ, result = relax("fire", state, pressure=2000.0, force_tolerance=1e-4,
                          stress_tolerance=1.0)
    assert integ.converged
    p = float(torch.trace(result.virial)) / (3 * volume(state.box)) * units.EV_PER_A3_TO_BAR
    assert p == pytest.approx(2000.0, abs=1.0)
    assert volume(state.box) < 27 * a0 ** 3
