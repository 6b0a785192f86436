"""Shared set-up and statistics for the ensemble tests (not a test module).

Lennard-Jones argon: ε/k_B = 119.8 K, σ = 3.405 Å, m = 39.948 amu (τ = σ√(m/ε) = 2.16 ps);
reduced T* = k_BT/ε, ρ* = ρσ³, P* = Pσ³/ε.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from dpengine import units
from dpengine.integrators import kinetic_energy, make_integrator, volume
from dpengine.potentials import ForceField, HarmonicSprings, LennardJones
from dpengine.state import State
from dpengine.structure import maxwell_boltzmann

EPS = 119.8 * units.KB   # eV
SIGMA = 3.405            # Å
MASS = 39.948            # amu


def temperature_K(t_star: float) -> float:
    return t_star * 119.8


def pressure_bar(p_star: float) -> float:
    return p_star * EPS / SIGMA ** 3 * units.EV_PER_A3_TO_BAR


def rho_star(n_atoms: int, vol: float) -> float:
    return n_atoms / vol * SIGMA ** 3


def fcc(ncell: int, a: float) -> tuple[np.ndarray, np.ndarray]:
    base = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    grid = np.array([[i, j, k] for i in range(ncell) for j in range(ncell) for k in range(ncell)])
    pos = (grid[:, None, :] + base[None]).reshape(-1, 3) * a
    return pos, np.eye(3) * a * ncell


def fcc_at_density(ncell: int, rho: float):
    a = (4.0 / (rho / SIGMA ** 3)) ** (1.0 / 3.0)
    return fcc(ncell, a)


def make_state(positions, box, temperature: float, seed: int = 1, masses=None) -> State:
    n = len(positions)
    m = np.full(n, MASS) if masses is None else np.asarray(masses, float)
    v = maxwell_boltzmann(m, temperature, seed)
    return State(torch.tensor(positions, dtype=torch.float64), torch.tensor(v),
                 None if box is None else torch.tensor(box, dtype=torch.float64),
                 torch.zeros(n, dtype=torch.int32), torch.tensor(m), ["Ar"], seed=seed)


def lj_forcefield(rc_sigma: float = 2.5, truncation: str = "shift", skin: float = 1.0):
    lj = LennardJones(["Ar"], {"Ar-Ar": EPS}, {"Ar-Ar": SIGMA}, rc_sigma * SIGMA, truncation)
    return ForceField(lj, skin)


def springs_forcefield(positions, box, k: float):
    return ForceField(HarmonicSprings(["Ar"], k, positions, box), 1.0)


def run(integrator, state, ff, steps: int, every: int = 1, equilibrate: int = 0):
    """Run ``equilibrate`` + ``steps`` steps; return arrays sampled every ``every`` steps
    after equilibration: kinetic energy, potential energy, volume, invariant, box."""
    integrator.prepare(state)
    result = ff(state)
    integrator.init(state, result)
    for _ in range(equilibrate):
        result = integrator.step(state, result, ff)
    rec = {k: [] for k in ("ke", "pe", "vol", "inv", "box", "time")}
    for i in range(steps):
        result = integrator.step(state, result, ff)
        if (i + 1) % every == 0:
            rec["ke"].append(float(kinetic_energy(state)))
            rec["pe"].append(float(result.energy))
            rec["vol"].append(volume(state.box) if state.box is not None else math.nan)
            rec["inv"].append(integrator.invariant(state, result))
            rec["box"].append(np.array(state.box.tolist()) if state.box is not None else None)
            rec["time"].append(state.step * integrator.dt * 1e-3)
    out = {k: np.array(v) for k, v in rec.items() if k != "box"}
    out["box"] = rec["box"]
    out["result"] = result
    return out


# --------------------------------------------------------------------------- statistics
def autocorr_time(x: np.ndarray, c: float = 5.0) -> float:
    """Integrated autocorrelation time τ_int (in samples, ≥ 0.5) with Sokal's automatic
    window (the smallest W ≥ c·τ_int(W))."""
    x = np.asarray(x, float) - np.mean(x)
    n = len(x)
    f = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(f * np.conj(f))[:n]
    acf /= acf[0]
    tau = 0.5
    for w in range(1, n):
        tau = 0.5 + acf[1:w + 1].sum()
        if w >= c * tau:
            break
    return max(tau, 0.5)


def mean_error(x: np.ndarray) -> tuple[float, float]:
    """Mean and its standard error accounting for autocorrelation: σ √(2τ_int / n)."""
    x = np.asarray(x, float)
    tau = autocorr_time(x)
    return float(x.mean()), float(x.std(ddof=1) * math.sqrt(2.0 * tau / len(x)))


def thin(x: np.ndarray) -> np.ndarray:
    """Every ⌈2τ_int⌉-th sample: an (approximately) independent subsample."""
    stride = max(1, int(math.ceil(2.0 * autocorr_time(x))))
    return np.asarray(x)[::stride]


def variance_error(x: np.ndarray) -> tuple[float, float]:
    """Variance of x and its standard error: the variance is the mean of y = (x − x̄)², whose
    error is σ_y √(2τ_int(y)/n) (autocorrelation-corrected, as for any mean)."""
    x = np.asarray(x, float)
    y = (x - x.mean()) ** 2
    _, err = mean_error(y)
    return float(x.var(ddof=1)), err


def drift_per_atom_ps(time_ps: np.ndarray, inv: np.ndarray, n_atoms: int) -> float:
    """Least-squares slope of the invariant (eV/ps) divided by the number of atoms."""
    slope = np.polyfit(np.asarray(time_ps), np.asarray(inv), 1)[0]
    return float(slope / n_atoms)


def integrator(name: str, dt: float, **kw):
    return make_integrator(name, dt, **kw)
