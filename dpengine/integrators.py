"""Integrators as small ``init``/``step`` objects chosen by name.

Every integrator exposes ``invariant(state, result)``: the quantity its exact flow
conserves (eV), which the thermo log writes in its ``conserved`` column and the tests
check for drift. For stochastic methods it is the "effective energy": the total energy
minus the heat given to the bath, accumulated step by step (Bussi et al. 2007), whose
drift measures the integration error alone.

The protocol (``Integrator``):

* ``prepare(state)`` — create or check the extended variables the method owns in
  ``state.ensemble`` (thermostat chains, barostat momenta, accumulated heat, ...), which
  the run loop saves in restart files (``ensemble_<name>``); a restart whose variables do
  not fit (e.g. another chain length) is a ``ValueError``. Variables of other methods are
  dropped, so a restart never carries stale ones.
* ``init(state, result)`` — once, with the forces at the starting positions.
* ``step(state, result, compute) -> result`` — one time step; ``compute(state)`` gives
  the forces at the new positions; ``state.step`` is incremented.
* ``invariant(state, result)`` and ``dof(state)`` (degrees of freedom of the thermo
  temperature and of the thermostats).

Names (``INTEGRATORS``): "nve"; NVT "langevin", "csvr", "nose-hoover-chain",
"berendsen" (dpengine.nvt); NPT "mtk", "c-rescale", "berendsen-npt" (dpengine.npt);
minimisers "fire", "lbfgs" (dpengine.minimize). ``from_config`` maps the ``[md]`` table to
one of them.

Randomness: stochastic methods draw from the counter-based Philox stream keyed by
(seed, step, atom, stream) (``dpengine.rng``), so runs are reproducible, independent of
the thread count, and continue exactly from a restart.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from dpengine import units
from dpengine.potential import PotentialResult
from dpengine.state import State

ForceFn = Callable[[State], PotentialResult]


def kinetic_energy(state: State) -> torch.Tensor:
    """K = ½ Σ m v² (eV), a float64 0-d tensor."""
    return 0.5 * units.KE_TO_EV * (state.masses[:, None] * state.velocities ** 2).sum()


def degrees_of_freedom(state: State, fix_com: bool = True) -> int:
    """3N − 3 when the centre-of-mass momentum is removed at start and conserved
    (``fix_com``), else 3N (Langevin noise, external fields such as springs)."""
    return max(3 * state.n_atoms - (3 if fix_com else 0), 1)


def temperature(state: State, kinetic: torch.Tensor | float | None = None,
                dof: int | None = None) -> float:
    """T = 2K / (N_dof k_B), K."""
    k = kinetic_energy(state) if kinetic is None else kinetic
    n = degrees_of_freedom(state) if dof is None else dof
    return float(2.0 * k / (n * units.KB))


def pressure(state: State, result: PotentialResult, kinetic: torch.Tensor | float) -> float:
    """P = (2K + tr W) / (3V), bar (nan for open boundaries)."""
    if state.box is None:
        return float("nan")
    return float((2.0 * kinetic + torch.trace(result.virial)) / (3.0 * state.volume())
                 * units.EV_PER_A3_TO_BAR)


def volume(box: torch.Tensor) -> float:
    """|det(box)| (Å³) on the host (torch's det of a 3×3 costs ~0.1 ms)."""
    return abs(float(np.linalg.det(np.array(box.tolist()))))


def transform_box(state: State, m: np.ndarray) -> None:
    """state.box ← state.box @ m, computed on the host (no BLAS thread pool involved)."""
    new = np.array(state.box.tolist()) @ np.asarray(m, dtype=float)
    state.box = torch.tensor(new, dtype=state.box.dtype, device=state.box.device)


def sym(t) -> np.ndarray:
    """Kinetic tensor (xx, yy, zz, xy, xz, yz) → symmetric 3×3 numpy matrix."""
    return np.array([[t[0], t[3], t[4]], [t[3], t[1], t[5]], [t[4], t[5], t[2]]], dtype=float)


class Params:
    """The ``params`` tensor of ``taichi_kernels.integrate``: coefficients then masses.

    On the CPU ``array`` is a numpy view of the tensor (writes are free); on CUDA it is
    a host copy sent with :meth:`sync` before a launch.
    """

    def __init__(self, masses: torch.Tensor):
        from taichi_kernels import integrate as k
        self.k = k
        n = masses.shape[0]
        self.tensor = torch.zeros(k.COEF_SIZE + n, dtype=torch.float64, device=masses.device)
        self.tensor[k.COEF_SIZE:] = masses
        self._cpu = masses.device.type == "cpu"
        self.array = self.tensor.numpy() if self._cpu else np.zeros(k.COEF_SIZE)
        self.array[k.KE_FACTOR] = units.KE_TO_EV
        self.reset()

    def reset(self) -> None:
        """Identity propagators: α = 1, no kick, E = Φ = A = C = I, B = 0."""
        k, a = self.k, self.array
        a[k.ALPHA] = 1.0
        a[k.KICK] = 0.0
        a[k.KICK_AFTER] = 0.0
        for off in (k.MAT_E, k.MAT_PHI, k.MAT_A, k.MAT_C):
            self.matrix(off, np.eye(3))
        self.matrix(k.MAT_B, np.zeros((3, 3)))

    def matrix(self, offset: int, m) -> None:
        self.array[offset:offset + 9] = np.asarray(m, dtype=float).reshape(9)

    def key(self, seed: int, step: int, stream: int) -> None:
        from dpengine.rng import key_words
        self.array[self.k.KEY:self.k.KEY + 4] = key_words(seed, step)
        self.array[self.k.KEY + 4] = stream

    def sync(self) -> torch.Tensor:
        if not self._cpu:
            self.tensor[:self.k.COEF_SIZE].copy_(torch.from_numpy(self.array))
        return self.tensor


class Integrator:
    """Base class: see the module docstring for the protocol."""

    name = ""
    #: whether the method draws random numbers (documentation, tests)
    stochastic = False

    def __init__(self, timestep: float, fix_com: bool = True):
        if not timestep > 0:
            raise ValueError(f"timestep must be > 0 fs, got {timestep}")
        self.dt = float(timestep)
        self.fix_com = bool(fix_com)
        self.converged = False
        self._vars: dict[str, np.ndarray] = {}
        self._params: Params | None = None
        self._work: torch.Tensor | None = None

    # ------------------------------------------------------------------ variables
    def variables(self, state: State) -> dict[str, tuple[tuple[int, ...], float]]:
        """Extended variables owned: name → (shape, initial value)."""
        return {}

    def prepare(self, state: State) -> None:
        """Create the owned ``state.ensemble`` variables, or check restored ones."""
        owned = self.variables(state)
        kept: dict[str, torch.Tensor] = {}
        for name, (shape, initial) in owned.items():
            old = state.ensemble.get(name)
            if old is not None:
                old = torch.as_tensor(old).detach().to("cpu", torch.float64)
                if tuple(old.shape) != tuple(shape):
                    raise ValueError(f"the restart file holds the {self.name} variable "
                                     f"'{name}' with shape {tuple(old.shape)}, this run needs "
                                     f"{tuple(shape)} (chain length or cell coupling changed?)")
                t = old.clone().contiguous()
            else:
                t = torch.full(shape, float(initial), dtype=torch.float64)
            kept[name] = t
            self._vars[name] = t.numpy()
        state.ensemble = kept

    def get(self, name: str) -> float:
        return float(self._vars[name])

    def put(self, name: str, value: float) -> None:
        self._vars[name][()] = value

    # ------------------------------------------------------------------ protocol
    def dof(self, state: State) -> int:
        return degrees_of_freedom(state, self.fix_com)

    def init(self, state: State, result: PotentialResult) -> None:
        from dpengine.backend import init_taichi
        init_taichi(state.device.type)

    def step(self, state: State, result: PotentialResult, compute: ForceFn) -> PotentialResult:
        raise NotImplementedError

    def invariant(self, state: State, result: PotentialResult) -> float:
        return float(kinetic_energy(state) + result.energy)

    # ------------------------------------------------------------------ helpers
    def _buffers(self, state: State) -> tuple[Params, torch.Tensor]:
        from taichi_kernels.integrate import N_SUMS, work_rows
        n = state.n_atoms
        if self._params is None or self._params.tensor.shape[0] != self._params.k.COEF_SIZE + n:
            self._params = Params(state.masses)
            self._work = torch.zeros((work_rows(n), N_SUMS), dtype=torch.float64,
                                     device=state.device)
        return self._params, self._work

    def _kinetic_tensor(self, state: State) -> list[float]:
        """½ Σ m v_a v_b (xx, yy, zz, xy, xz, yz), eV, by the deterministic reduction."""
        from taichi_kernels.integrate import velocity_update_reduce
        p, work = self._buffers(state)
        p.reset()
        velocity_update_reduce(state.velocities, state.velocities, p.sync(), work)
        return work[-1].tolist()[:6]


class NVE(Integrator):
    """Velocity Verlet: v += dt/2·a; x += dt·v; F(x); v += dt/2·a. Invariant: K + U."""

    name = "nve"

    def step(self, state: State, result: PotentialResult, compute: ForceFn) -> PotentialResult:
        from taichi_kernels.integrate import kick, kick_drift
        kick_drift(state.positions, state.velocities, result.forces, state.masses, self.dt,
                   units.ACCEL)
        result = compute(state)
        kick(state.velocities, result.forces, state.masses, self.dt, units.ACCEL)
        state.step += 1
        return result


def _registry() -> dict[str, type]:
    from dpengine import minimize, npt, nvt
    return {"nve": NVE, "langevin": nvt.Langevin, "csvr": nvt.CSVR,
            "nose-hoover-chain": nvt.NoseHooverChain, "berendsen": nvt.Berendsen,
            "mtk": npt.MTK, "c-rescale": npt.CRescale, "berendsen-npt": npt.BerendsenNPT,
            "fire": minimize.FIRE, "lbfgs": minimize.LBFGS}


class _Registry(dict):
    """``INTEGRATORS``: name → class (filled on first use, the modules import this one)."""

    def _fill(self):
        if not dict.__len__(self):
            self.update(_registry())

    def __getitem__(self, key):
        self._fill()
        return dict.__getitem__(self, key)

    def __iter__(self):
        self._fill()
        return dict.__iter__(self)

    def __len__(self):
        self._fill()
        return dict.__len__(self)

    def __contains__(self, key):
        self._fill()
        return dict.__contains__(self, key)

    def keys(self):
        self._fill()
        return dict.keys(self)


INTEGRATORS = _Registry()


def make_integrator(ensemble: str, timestep: float, **options):
    """The integrator called ``ensemble`` (see ``INTEGRATORS``)."""
    try:
        cls = INTEGRATORS[ensemble]
    except KeyError:
        raise ValueError(f"unknown ensemble {ensemble!r}; available: {sorted(INTEGRATORS)}") from None
    return cls(timestep, **options)


def from_config(md, fix_com: bool = True) -> Integrator:
    """The integrator described by a validated ``[md]`` table (``dpengine.config``).

    ``fix_com``: the potential conserves momentum (no external field), so global
    thermostats and NVE keep the centre of mass at rest (3N − 3 degrees of freedom).
    """
    ens = md.ensemble
    if ens == "nve":
        return NVE(md.timestep, fix_com=fix_com)
    thermo = dict(temperature=md.temperature, fix_com=fix_com)
    if ens == "nvt":
        name = md.thermostat
        if name == "langevin":
            return make_integrator(name, md.timestep, temperature=md.temperature,
                                   friction=md.langevin_friction)
        if name == "nose-hoover-chain":
            return make_integrator(name, md.timestep, tau=md.tau_t, chain_length=md.chain_length,
                                   chain_steps=md.chain_steps, yoshida_order=md.yoshida_order,
                                   **thermo)
        return make_integrator(name, md.timestep, tau=md.tau_t, **thermo)
    if ens == "npt":
        if md.barostat == "mtk":
            return make_integrator("mtk", md.timestep, pressure=md.pressure, tau_t=md.tau_t,
                                   tau_p=md.tau_p, coupling=md.coupling,
                                   chain_length=md.chain_length, chain_steps=md.chain_steps,
                                   yoshida_order=md.yoshida_order,
                                   barostat_chain_length=md.barostat_chain_length, **thermo)
        name = "c-rescale" if md.barostat == "c-rescale" else "berendsen-npt"
        return make_integrator(name, md.timestep, pressure=md.pressure, tau_p=md.tau_p,
                               compressibility=md.compressibility, coupling=md.coupling,
                               thermostat=md.thermostat, tau_t=md.tau_t, friction=md.langevin_friction,
                               **thermo)
    if ens == "minimize":
        return make_integrator(md.minimizer, md.timestep, pressure=md.pressure,
                               coupling=md.coupling if md.pressure is not None else None,
                               force_tolerance=md.force_tolerance,
                               stress_tolerance=md.stress_tolerance)
    raise ValueError(f"unknown ensemble {ens!r}")


def check_time_constant(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value}")
    return value
