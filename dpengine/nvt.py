"""Canonical (NVT) integrators: Langevin BAOAB, stochastic velocity rescaling, Nosé–Hoover
chains, and Berendsen (not canonical).

Units: temperature K, friction 1/ps, time constants fs. Each method's ``invariant`` is the
energy of its extended system (Nosé–Hoover chains) or the effective energy (total energy
plus the heat accumulated by the bath), which stays constant up to integration error.

Splittings (one step of length dt):

* Langevin: B A O A B (BAOAB, Leimkuhler & Matthews, Appl. Math. Res. Express 2013, 34):
  O is the exact Ornstein–Uhlenbeck step v ← c₁v + √((1 − c₁²)k_BT/m) ξ, c₁ = e^{−γ dt}.
  Samples 3N degrees of freedom (the noise moves the centre of mass).
* Global velocity-scaling thermostats T (CSVR, NHC, Berendsen): T(dt/2) B A B T(dt/2),
  each T a rescaling of all velocities by α computed from the kinetic energy K.
  - CSVR (Bussi, Donadio & Parrinello, J. Chem. Phys. 126, 014101 (2007), eq. A7):
    K' = K + (1 − c)[K̄ (R₁² + Σ_{i=2}^{N_f} R_i²)/N_f − K] + 2R₁ √(c(1 − c) K K̄/N_f),
    c = e^{−Δt/τ}, K̄ = N_f k_BT/2, α = √(K'/K). Σ R_i² is drawn as 2·Gamma((N_f − 1)/2).
  - Nosé–Hoover chains (Martyna, Klein & Tuckerman 1992; integrator of Martyna, Tuckerman,
    Tobias & Klein, Mol. Phys. 87, 1117 (1996)): masses Q₁ = N_f k_BT τ², Q_k = k_BT τ²;
    the chain is propagated with ``chain_steps`` sub-steps and Suzuki–Yoshida weights of
    order 1, 3, 5 or 7. Invariant: H + Σ p_k²/2Q_k + N_f k_BT ξ₁ + k_BT Σ_{k≥2} ξ_k.
  - Berendsen (J. Chem. Phys. 81, 3684 (1984)): α² = 1 + (Δt/τ)(T₀/T − 1), clamped to
    [0.8², 1.25²]. It does NOT sample the canonical ensemble (it suppresses the kinetic
    energy fluctuations); use it to equilibrate only.

The kinetic energy a step starts from is kept in ``state.ensemble["kinetic"]`` (the value
the last reduction gave, times α²), so a restarted run uses bit-identical numbers.
"""
from __future__ import annotations

import math

import numpy as np

from dpengine import units
from dpengine.integrators import Integrator, check_time_constant, kinetic_energy
from dpengine.rng import STREAMS, HostStream

#: Suzuki–Yoshida weights (Yoshida, Phys. Lett. A 150, 262 (1990)) by order.
_W3 = 1.0 / (2.0 - 2.0 ** (1.0 / 3.0))
_W5 = 1.0 / (4.0 - 4.0 ** (1.0 / 3.0))
_Y7 = (0.784513610477560, 0.235573213359357, -1.17767998417887)
YOSHIDA = {
    1: (1.0,),
    3: (_W3, 1.0 - 2.0 * _W3, _W3),
    5: (_W5, _W5, 1.0 - 4.0 * _W5, _W5, _W5),
    7: _Y7 + (1.0 - 2.0 * sum(_Y7),) + _Y7[::-1],
}


class NHChain:
    """A Nosé–Hoover chain of ``length`` thermostats acting on momenta with ``dof``
    degrees of freedom (particles, or barostat momenta). Positions ξ and momenta p_ξ
    (eV·fs) live in numpy arrays bound by :meth:`bind` (views of ``state.ensemble``).

    ``propagate(kin2, delta)`` applies exp(iL_NHC δ) to the chain given kin2 = Σ p²/m of
    the thermostatted momenta (twice their kinetic energy) and returns the factor by which
    those momenta are scaled (MTTK 1996, with ``steps`` × Suzuki–Yoshida sub-steps).
    """

    def __init__(self, length: int, dof: int, kT: float, tau: float, steps: int = 1,
                 order: int = 3):
        if length < 1 or steps < 1 or order not in YOSHIDA:
            raise ValueError(f"need chain length >= 1, steps >= 1, Yoshida order in "
                             f"{sorted(YOSHIDA)}; got {length}, {steps}, {order}")
        self.length, self.dof, self.kT = int(length), int(dof), float(kT)
        self.Q = np.full(self.length, self.kT * tau * tau)
        self.Q[0] *= self.dof
        self.steps = int(steps)
        self.weights = YOSHIDA[order]
        self.xi = np.zeros(self.length)
        self.p = np.zeros(self.length)

    def bind(self, xi: np.ndarray, p: np.ndarray) -> None:
        self.xi, self.p = xi, p

    def _g(self, j: int, kin2: float) -> float:
        if j == 0:
            return kin2 - self.dof * self.kT
        return self.p[j - 1] ** 2 / self.Q[j - 1] - self.kT

    def _kick(self, j: int, kin2: float, d2: float, d4: float) -> None:
        p, Q, last = self.p, self.Q, self.length - 1
        if j < last:
            p[j] *= math.exp(-d4 * p[j + 1] / Q[j + 1])
        p[j] += d2 * self._g(j, kin2)
        if j < last:
            p[j] *= math.exp(-d4 * p[j + 1] / Q[j + 1])

    def propagate(self, kin2: float, delta: float) -> float:
        scale = 1.0
        for _ in range(self.steps):
            for w in self.weights:
                d = w * delta / self.steps
                d2, d4 = 0.5 * d, 0.25 * d
                for j in reversed(range(self.length)):
                    self._kick(j, kin2 * scale * scale, d2, d4)
                self.xi += d * self.p / self.Q
                scale *= math.exp(-d * self.p[0] / self.Q[0])
                for j in range(self.length):
                    self._kick(j, kin2 * scale * scale, d2, d4)
        return scale

    def energy(self) -> float:
        """Σ p²/2Q + dof·k_BT ξ₁ + k_BT Σ_{k≥2} ξ_k (eV)."""
        return float(np.sum(0.5 * self.p ** 2 / self.Q) + self.dof * self.kT * self.xi[0]
                     + self.kT * np.sum(self.xi[1:]))


def csvr_factor(K: float, dof: int, kT: float, tau: float, dt: float,
                stream: HostStream) -> tuple[float, float]:
    """(α, K') of a stochastic velocity rescaling over ``dt`` (Bussi et al. 2007, eq. A7)."""
    if K <= 0.0:
        return 1.0, K
    kbar = 0.5 * dof * kT
    c = math.exp(-dt / tau)
    r1 = stream.normal()
    rest = stream.chi_squared(dof - 1)
    k_new = (K + (1.0 - c) * (kbar * (r1 * r1 + rest) / dof - K)
             + 2.0 * r1 * math.sqrt(c * (1.0 - c) * K * kbar / dof))
    return math.sqrt(k_new / K), k_new


def berendsen_factor(K: float, dof: int, kT: float, tau: float, dt: float) -> float:
    """Berendsen's α = √(1 + (dt/τ)(T₀/T − 1)), clamped to [0.8, 1.25]."""
    if K <= 0.0:
        return 1.0
    t_ratio = 0.5 * dof * kT / K
    return math.sqrt(min(max(1.0 + dt / tau * (t_ratio - 1.0), 0.64), 1.5625))


class Langevin(Integrator):
    """Langevin dynamics, BAOAB splitting; ``friction`` γ in 1/ps, ``temperature`` K.

    Invariant: K + U + heat, heat = Σ over O steps of ½Σm(v² − v'²) (energy given to the
    bath). Degrees of freedom 3N (the noise does not conserve the total momentum).
    """

    name = "langevin"
    stochastic = True

    def __init__(self, timestep: float, temperature: float, friction: float = 1.0,
                 fix_com: bool = False):
        super().__init__(timestep, fix_com=False)
        if not temperature > 0:
            raise ValueError(f"Langevin needs a temperature > 0 K, got {temperature}")
        self.kT = units.KB * float(temperature)
        self.gamma = check_time_constant("friction", friction) * 1e-3  # 1/ps → 1/fs

    def variables(self, state):
        return {"heat": ((), 0.0)}

    def step(self, state, result, compute):
        from taichi_kernels import integrate as k
        p, work = self._buffers(state)
        a = p.array
        a[k.KICK] = 0.5 * self.dt * units.ACCEL
        a[k.DT_HALF] = 0.5 * self.dt
        a[k.C1] = math.exp(-self.gamma * self.dt)
        a[k.KT_ACCEL] = self.kT * units.ACCEL
        p.key(state.seed, state.step, STREAMS["langevin"])
        k.baoab_first(state.positions, state.velocities, result.forces, p.sync(), work)
        heat = float(work[-1, k.HEAT])
        result = compute(state)
        k.kick(state.velocities, result.forces, state.masses, self.dt, units.ACCEL)
        self.put("heat", self.get("heat") + heat)
        state.step += 1
        return result

    def invariant(self, state, result):
        return float(kinetic_energy(state) + result.energy) + self.get("heat")


class _ScalingThermostat(Integrator):
    """T(dt/2) B A B T(dt/2) with a global velocity scaling T (see the module docstring).

    Launches per step: one fused kernel (scale, kick, drift), the force call, one fused
    kernel (kick + deterministic kinetic-energy reduction); the closing scaling by one
    scalar is a single torch multiply (a Taichi launch would cost ~20x more).
    """

    def __init__(self, timestep: float, temperature: float, tau: float = 100.0,
                 fix_com: bool = True):
        super().__init__(timestep, fix_com)
        if not temperature > 0:
            raise ValueError(f"{self.name} needs a temperature > 0 K, got {temperature}")
        self.kT = units.KB * float(temperature)
        self.tau = check_time_constant("tau_t", tau)

    def variables(self, state):
        return {"kinetic": ((), math.nan)}

    def init(self, state, result):
        super().init(state, result)
        k_red = sum(self._kinetic_tensor(state)[:3])
        cached = self.get("kinetic")
        # a restart carries the kinetic energy of the last step bit for bit; any other
        # source of velocities (or velocities edited since) uses the reduction
        if not (math.isfinite(cached) and abs(cached - k_red) <= 1e-9 * max(abs(k_red), 1e-300)):
            self.put("kinetic", k_red)

    def scale(self, state, K: float, which: int) -> float:
        """α for the thermostat half step ``which`` (0: first, 1: second) from K."""
        raise NotImplementedError

    def step(self, state, result, compute):
        from taichi_kernels import integrate as k
        p, work = self._buffers(state)
        a = p.array
        alpha = self.scale(state, self.get("kinetic"), 0)
        a[k.ALPHA] = alpha
        a[k.KICK] = 0.5 * self.dt * units.ACCEL
        p.matrix(k.MAT_B, self.dt * np.eye(3))
        k.velocity_position_update(state.positions, state.velocities, result.forces, p.sync())
        result = compute(state)
        a[k.ALPHA] = 1.0
        k.velocity_update_reduce(state.velocities, result.forces, p.sync(), work)
        kin = sum(work[-1].tolist()[:3])
        alpha = self.scale(state, kin, 1)
        state.velocities.mul_(alpha)
        self.put("kinetic", alpha * alpha * kin)
        state.step += 1
        return result


class CSVR(_ScalingThermostat):
    """Stochastic velocity rescaling (Bussi–Donadio–Parrinello); ``tau`` in fs.
    Invariant: K + U + heat (the energy the rescalings removed)."""

    name = "csvr"
    stochastic = True

    def variables(self, state):
        return {**super().variables(state), "heat": ((), 0.0)}

    def scale(self, state, K, which):
        stream = HostStream(state.seed, state.step,
                            STREAMS["csvr_first" if which == 0 else "csvr_second"])
        alpha, k_new = csvr_factor(K, self.dof(state), self.kT, self.tau, 0.5 * self.dt, stream)
        self.put("heat", self.get("heat") + K - k_new)
        return alpha

    def invariant(self, state, result):
        return float(kinetic_energy(state) + result.energy) + self.get("heat")


class Berendsen(_ScalingThermostat):
    """Berendsen weak coupling; ``tau`` in fs. NOT canonical (kinetic-energy fluctuations
    are suppressed). Reported invariant: K + U + heat (the energy the rescalings removed)."""

    name = "berendsen"

    def variables(self, state):
        return {**super().variables(state), "heat": ((), 0.0)}

    def scale(self, state, K, which):
        alpha = berendsen_factor(K, self.dof(state), self.kT, self.tau, 0.5 * self.dt)
        self.put("heat", self.get("heat") + K * (1.0 - alpha * alpha))
        return alpha

    def invariant(self, state, result):
        return float(kinetic_energy(state) + result.energy) + self.get("heat")


class NoseHooverChain(_ScalingThermostat):
    """Nosé–Hoover chains; ``tau`` in fs, ``chain_length`` M, ``chain_steps`` n_c,
    ``yoshida_order`` 1/3/5/7. Invariant: K + U + chain energy."""

    name = "nose-hoover-chain"

    def __init__(self, timestep: float, temperature: float, tau: float = 100.0,
                 chain_length: int = 3, chain_steps: int = 1, yoshida_order: int = 3,
                 fix_com: bool = True):
        super().__init__(timestep, temperature, tau, fix_com)
        self.chain_length, self.chain_steps, self.order = chain_length, chain_steps, yoshida_order
        self.chain: NHChain | None = None

    def variables(self, state):
        m = (int(self.chain_length),)
        return {**super().variables(state), "nhc_xi": (m, 0.0), "nhc_p": (m, 0.0)}

    def prepare(self, state):
        super().prepare(state)
        self.chain = NHChain(self.chain_length, self.dof(state), self.kT, self.tau,
                             self.chain_steps, self.order)
        self.chain.bind(self._vars["nhc_xi"], self._vars["nhc_p"])

    def scale(self, state, K, which):
        return self.chain.propagate(2.0 * K, 0.5 * self.dt)

    def invariant(self, state, result):
        return float(kinetic_energy(state) + result.energy) + self.chain.energy()
