"""Isothermal–isobaric (NPT) integrators: Martyna–Tobias–Klein with Nosé–Hoover chains,
stochastic cell rescaling (Bernetti & Bussi 2020), and Berendsen (not isobaric).

Units: pressure bar (converted to eV/Å³ inside), time constants fs, compressibility
1/bar, temperature K. The internal pressure tensor is P = (2 K_t + W)/V with K_t the
kinetic tensor ½Σm v⊗v and W the virial of the potential (the DP virial of the engine
core, plus tail corrections for Lennard-Jones). Cell vectors are the rows of the box;
positions and velocities are rows, so a cell deformation acts as x ← x @ M.

Cell couplings: "isotropic" (one volume variable), "anisotropic" (the three Cartesian
axes independently; the box keeps its off-diagonal shape factors scaled along), and
"triclinic" (MTK and Berendsen: a symmetric 3×3 cell velocity, six degrees of freedom,
rotation-free).

MTK (Martyna, Tobias & Klein, J. Chem. Phys. 101, 4177 (1994); the measure-preserving
Trotter factorisation of Tuckerman et al., J. Phys. A 39, 5629 (2006)):

    ẋ = v + v_g x,   v̇ = F/m − (v_g + Tr(v_g)/N_f) v − (p_ξ₁/Q₁) v,   ḣ = v_g h
    ṗ_g = V (P − P₀ I) + (2K/N_f) I − (p_η₁/R₁) p_g,   v_g = p_g/W

(isotropic: p_g = p_ε I with ṗ_ε = 3V(P − P₀) + 6K/N_f and W = (N_f + 3) k_BT τ_p²;
otherwise W = (N_f + 3) k_BT τ_p²/3). Step: baro-NHC(dt/2) NHC(dt/2) p_g(dt/2) v(dt/2)
x(dt) h(dt) F v(dt/2) p_g(dt/2) NHC(dt/2) baro-NHC(dt/2), where the v, x and h flows are
solved exactly in the eigenbasis of v_g. Conserved:
    H = K + U + Tr(p_gᵀp_g)/2W + P₀V + E_NHC(particles) + E_NHC(barostat).

Stochastic cell rescaling (Bernetti & Bussi, J. Chem. Phys. 153, 114107 (2020)), with the
time-reversible "T" scheme of their reference implementation: the isotropic volume moves by
an overdamped Langevin equation in λ = √V, whose diffusion D = k_BT β_T/(4τ_p) is constant,

    dλ = (D/k_BT) f dt + √(2D dt) ξ,   f = −2λ (P₀ − P − k_BT/(2V)),

placed inside the drift of velocity Verlet (x ← s x + ((s + 1/s)/2) v dt, v ← v/s, h ← s h,
s = (V'/V)^{1/3}). The effective energy adds, per move, ΔX + Q with X = −(k_BT/2) ln V and
Q = k_BT ln[P(λ→λ')/P(λ'→λ)] = ½ dλ (f + f') + (D/4k_BT) dt (f'² − f²), which vanishes
on average only if the move samples exp(−β(H + P₀V)) exactly: its drift measures the
integration error. Anisotropic: each Cartesian axis a with length L_a = h_aa (the box must
be lower triangular, as LAMMPS writes it) moves in y_a = L_a^{3/2} with constant
D = 3k_BTβ_T/(4τ_p), f_a = (2V/(3y_a)) (P_aa − P₀ − k_BT/(2V)) and X = +(k_BT/2) ln V
(the measure dL_x dL_y dL_z); for a cube this is the isotropic mobility per axis. The
thermostat ("csvr", "langevin" or "berendsen") acts in half steps before and after.

Berendsen (J. Chem. Phys. 81, 3684 (1984)): x ← μ x, h ← μ h with
μ = [1 − (β_T dt/τ_p)(P₀ − P)]^{1/3} (anisotropic: per axis; triclinic:
μ = I − (β_T dt/3τ_p)(P₀ I − P)). It relaxes the pressure but does NOT sample the NPT
ensemble (volume fluctuations are wrong); the reported "conserved" quantity
K + U + P₀V + heat is not conserved.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import exprel

from dpengine import units
from dpengine.integrators import (Integrator, check_time_constant, kinetic_energy, sym,
                                  transform_box, volume)
from dpengine.nvt import NHChain, berendsen_factor, csvr_factor
from dpengine.rng import STREAMS, HostStream

COUPLINGS = ("isotropic", "anisotropic", "triclinic")


def _box_np(state) -> np.ndarray:
    return np.array(state.box.tolist())


def _kin(t) -> float:
    return t[0] + t[1] + t[2]


class _BarostatBase(Integrator):
    """Shared set-up: temperature, pressure (bar → eV/Å³), coupling, periodic box."""

    couplings = COUPLINGS

    def __init__(self, timestep, temperature, pressure, tau_p=1000.0, coupling="isotropic",
                 fix_com=True):
        super().__init__(timestep, fix_com)
        if not temperature > 0:
            raise ValueError(f"{self.name} needs a temperature > 0 K, got {temperature}")
        if coupling not in self.couplings:
            raise ValueError(f"{self.name}: coupling must be one of {self.couplings}, "
                             f"got {coupling!r}")
        self.kT = units.KB * float(temperature)
        self.p0 = float(pressure) / units.EV_PER_A3_TO_BAR
        self.tau_p = check_time_constant("tau_p", tau_p)
        self.coupling = coupling

    def prepare(self, state):
        if state.box is None:
            raise ValueError(f"barostat {self.name} needs a periodic box; the structure has "
                             "open boundaries")
        super().prepare(state)


class MTK(_BarostatBase):
    """Martyna–Tobias–Klein NPT with Nosé–Hoover chains on particles and barostat.

    ``tau_t`` / ``tau_p`` fs, ``pressure`` bar, ``coupling`` isotropic / anisotropic /
    triclinic, chain lengths, ``chain_steps`` and ``yoshida_order`` as for NVT chains.
    """

    name = "mtk"

    def __init__(self, timestep, temperature, pressure, tau_t=100.0, tau_p=1000.0,
                 coupling="isotropic", chain_length=3, chain_steps=1, yoshida_order=3,
                 barostat_chain_length=3, fix_com=True):
        super().__init__(timestep, temperature, pressure, tau_p, coupling, fix_com)
        self.tau_t = check_time_constant("tau_t", tau_t)
        self.chain_length, self.chain_steps, self.order = chain_length, chain_steps, yoshida_order
        self.baro_length = barostat_chain_length
        self.cell_dof = {"isotropic": 1, "anisotropic": 3, "triclinic": 6}[coupling]
        self._shape = {"isotropic": (1,), "anisotropic": (3,), "triclinic": (3, 3)}[coupling]

    def variables(self, state):
        m, mb = (int(self.chain_length),), (int(self.baro_length),)
        return {"nhc_xi": (m, 0.0), "nhc_p": (m, 0.0), "baro_nhc_xi": (mb, 0.0),
                "baro_nhc_p": (mb, 0.0), "cell_p": (self._shape, 0.0),
                "kinetic_tensor": ((6,), math.nan)}

    def prepare(self, state):
        super().prepare(state)
        nf = self.dof(state)
        self.nf = nf
        self.W = (nf + 3) * self.kT * self.tau_p ** 2 / (1.0 if self.coupling == "isotropic" else 3.0)
        self.chain = NHChain(self.chain_length, nf, self.kT, self.tau_t, self.chain_steps, self.order)
        self.chain.bind(self._vars["nhc_xi"], self._vars["nhc_p"])
        self.baro = NHChain(self.baro_length, self.cell_dof, self.kT, self.tau_p, self.chain_steps,
                            self.order)
        self.baro.bind(self._vars["baro_nhc_xi"], self._vars["baro_nhc_p"])
        self.cell_p = self._vars["cell_p"]
        if self.coupling == "triclinic":
            self.cell_p[...] = 0.5 * (self.cell_p + self.cell_p.T)

    def init(self, state, result):
        super().init(state, result)
        t = self._kinetic_tensor(state)
        cached = self._vars["kinetic_tensor"]
        if not (np.all(np.isfinite(cached))
                and np.allclose(cached, t, rtol=1e-9, atol=1e-12 * max(_kin(t), 1e-300))):
            cached[:] = t

    # --- barostat pieces ------------------------------------------------------------
    def _cell_kin2(self) -> float:
        """Σ p_g²/W (twice the barostat kinetic energy)."""
        return float(np.sum(self.cell_p ** 2) / self.W)

    def _vg(self) -> np.ndarray:
        p = self.cell_p
        if self.coupling == "isotropic":
            return np.eye(3) * (p[0] / self.W)
        if self.coupling == "anisotropic":
            return np.diag(p / self.W)
        return p / self.W

    def _cell_force(self, kt: np.ndarray, virial: np.ndarray, volume: float):
        kin2 = 2.0 * (kt[0] + kt[1] + kt[2])
        if self.coupling == "isotropic":
            return np.array([kin2 + np.trace(virial) - 3.0 * volume * self.p0
                             + 3.0 * kin2 / self.nf])
        g = 2.0 * sym(kt) + virial - volume * self.p0 * np.eye(3) + (kin2 / self.nf) * np.eye(3)
        if self.coupling == "anisotropic":
            return np.diag(g).copy()
        return 0.5 * (g + g.T)

    def _baro_nhc(self, delta: float) -> None:
        self.cell_p *= self.baro.propagate(self._cell_kin2(), delta)

    def step(self, state, result, compute):
        from taichi_kernels import integrate as k
        p, work = self._buffers(state)
        a = p.array
        dt, half = self.dt, 0.5 * self.dt
        kt = self._vars["kinetic_tensor"]
        # baro-NHC(dt/2), NHC(dt/2), p_g(dt/2)
        self._baro_nhc(half)
        alpha = self.chain.propagate(2.0 * _kin(kt), half)
        kt *= alpha * alpha
        virial = np.array(result.virial.tolist())
        self.cell_p += half * self._cell_force(kt, virial, volume(state.box))
        # v(dt/2), x(dt), h(dt): exact flows in the eigenbasis of v_g
        lam, u = np.linalg.eigh(self._vg())
        kappa = lam + lam.sum() / self.nf
        e = (u * np.exp(-kappa * half)) @ u.T
        phi = (u * exprel(-kappa * half)) @ u.T
        am = (u * np.exp(lam * dt)) @ u.T
        bm = dt * (u * exprel(lam * dt)) @ u.T
        a[k.ALPHA] = alpha
        a[k.KICK] = half * units.ACCEL
        p.matrix(k.MAT_E, e)
        p.matrix(k.MAT_PHI, phi)
        p.matrix(k.MAT_A, am)
        p.matrix(k.MAT_B, bm)
        k.velocity_position_update(state.positions, state.velocities, result.forces, p.sync())
        transform_box(state, am)
        result = compute(state)
        # v(dt/2), p_g(dt/2), NHC(dt/2), baro-NHC(dt/2)
        a[k.ALPHA] = 1.0
        k.velocity_update_reduce(state.velocities, result.forces, p.sync(), work)
        kt[:] = work[-1].tolist()[:6]
        virial = np.array(result.virial.tolist())
        self.cell_p += half * self._cell_force(kt, virial, volume(state.box))
        alpha = self.chain.propagate(2.0 * _kin(kt), half)
        state.velocities.mul_(alpha)
        kt *= alpha * alpha
        self._baro_nhc(half)
        state.step += 1
        return result

    def invariant(self, state, result):
        return float(kinetic_energy(state) + result.energy + 0.5 * self._cell_kin2()
                     + self.p0 * volume(state.box) + self.chain.energy() + self.baro.energy())


class _RescalingNPT(_BarostatBase):
    """Thermostat(dt/2) B [cell move inside A] B Thermostat(dt/2), thermostat "csvr",
    "langevin" or "berendsen". Launches per step: thermostat + kick (reduction), drift
    with the cell scaling, forces, kick (+ Langevin O) with reduction."""

    couplings = ("isotropic", "anisotropic")
    thermostats = ("csvr", "langevin", "berendsen")

    def __init__(self, timestep, temperature, pressure, tau_p=1000.0, compressibility=4.5e-5,
                 coupling="isotropic", thermostat="csvr", tau_t=100.0, friction=1.0,
                 fix_com=True):
        if thermostat not in self.thermostats:
            raise ValueError(f"{self.name}: thermostat must be one of {self.thermostats}, "
                             f"got {thermostat!r}")
        self.thermostat = thermostat
        super().__init__(timestep, temperature, pressure, tau_p, coupling,
                         fix_com and thermostat != "langevin")
        self.beta = check_time_constant("compressibility", compressibility) * units.EV_PER_A3_TO_BAR
        self.tau_t = check_time_constant("tau_t", tau_t)
        self.gamma = check_time_constant("friction", friction) * 1e-3

    def variables(self, state):
        v = {"heat": ((), 0.0), "baro_work": ((), 0.0)}
        if self.thermostat != "langevin":
            v["kinetic"] = ((), math.nan)
        return v

    def init(self, state, result):
        super().init(state, result)
        if self.thermostat != "langevin":
            k_red = _kin(self._kinetic_tensor(state))
            cached = self.get("kinetic")
            if not (math.isfinite(cached) and abs(cached - k_red) <= 1e-9 * max(k_red, 1e-300)):
                self.put("kinetic", k_red)

    def _thermo_scale(self, state, K: float, which: int) -> float:
        if self.thermostat == "csvr":
            stream = HostStream(state.seed, state.step,
                                STREAMS["csvr_first" if which == 0 else "csvr_second"])
            alpha, k_new = csvr_factor(K, self.dof(state), self.kT, self.tau_t, 0.5 * self.dt,
                                       stream)
        else:
            alpha = berendsen_factor(K, self.dof(state), self.kT, self.tau_t, 0.5 * self.dt)
            k_new = alpha * alpha * K
        self.put("heat", self.get("heat") + K - k_new)
        return alpha

    def _langevin(self, state, result, p, work, which: int) -> list[float]:
        from taichi_kernels import integrate as k
        a = p.array
        half_kick = 0.5 * self.dt * units.ACCEL
        a[k.KICK], a[k.KICK_AFTER] = (0.0, half_kick) if which == 0 else (half_kick, 0.0)
        a[k.C1] = math.exp(-self.gamma * 0.5 * self.dt)
        a[k.KT_ACCEL] = self.kT * units.ACCEL
        p.key(state.seed, state.step,
              STREAMS["langevin_first" if which == 0 else "langevin_second"])
        k.langevin_o(state.velocities, result.forces, p.sync(), work)
        sums = work[-1].tolist()
        self.put("heat", self.get("heat") + sums[k.HEAT])
        return sums[:6]

    def move(self, state, kt, virial) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The cell move of this step: matrices (A, B/dt, C) of x ← x@A + v@B, v ← v@C; the
        box becomes box @ A."""
        raise NotImplementedError

    def after(self, state, kt_after, result) -> None:
        """Book-keeping after the forces at the new cell."""

    def step(self, state, result, compute):
        from taichi_kernels import integrate as k
        p, work = self._buffers(state)
        a = p.array
        half_kick = 0.5 * self.dt * units.ACCEL
        p.reset()
        if self.thermostat == "langevin":
            kt = self._langevin(state, result, p, work, 0)
        else:
            a[k.ALPHA] = self._thermo_scale(state, self.get("kinetic"), 0)
            a[k.KICK] = half_kick
            k.velocity_update_reduce(state.velocities, result.forces, p.sync(), work)
            kt = work[-1].tolist()[:6]
        am, bm, cm = self.move(state, kt, np.array(result.virial.tolist()))
        p.reset()
        p.matrix(k.MAT_A, am)
        p.matrix(k.MAT_B, self.dt * bm)
        p.matrix(k.MAT_C, cm)
        k.velocity_position_update(state.positions, state.velocities, result.forces, p.sync())
        transform_box(state, am)
        kt_after = sym(kt)
        kt_after = cm.T @ kt_after @ cm
        result = compute(state)
        self.after(state, kt_after, result)
        p.reset()
        if self.thermostat == "langevin":
            self._langevin(state, result, p, work, 1)
        else:
            a[k.KICK] = half_kick
            k.velocity_update_reduce(state.velocities, result.forces, p.sync(), work)
            kin = _kin(work[-1].tolist())
            alpha = self._thermo_scale(state, kin, 1)
            state.velocities.mul_(alpha)
            self.put("kinetic", alpha * alpha * kin)
        state.step += 1
        return result

    def invariant(self, state, result):
        return float(kinetic_energy(state) + result.energy + self.p0 * volume(state.box)
                     + self.get("heat") + self.get("baro_work"))


class CRescale(_RescalingNPT):
    """Stochastic cell rescaling (Bernetti & Bussi 2020), isotropic or anisotropic;
    ``compressibility`` β_T in 1/bar sets the relaxation (any positive value samples the
    right ensemble; the fluid's own β_T gives a volume relaxation time ≈ τ_p)."""

    name = "c-rescale"
    stochastic = True

    def prepare(self, state):
        super().prepare(state)
        if self.coupling == "anisotropic":
            h = _box_np(state)
            if h[0, 1] != 0 or h[0, 2] != 0 or h[1, 2] != 0:
                raise ValueError("c-rescale anisotropic needs a lower-triangular box (a along "
                                 "x, b in the xy plane, as LAMMPS writes it)")

    def _force(self, state, kt: np.ndarray, virial: np.ndarray, volume: float):
        """Generalised forces on λ (isotropic, [1]) or on y_a (anisotropic, [3])."""
        kT = self.kT
        if self.coupling == "isotropic":
            p_int = (2.0 * np.trace(kt) + np.trace(virial)) / (3.0 * volume)
            lam = math.sqrt(volume)
            return np.array([-2.0 * lam * (self.p0 - p_int - kT / (2.0 * volume))])
        p_aa = (2.0 * np.diag(kt) + np.diag(virial)) / volume
        y = np.abs(np.diag(_box_np(state))) ** 1.5
        return 2.0 * volume / (3.0 * y) * (p_aa - self.p0 - kT / (2.0 * volume))

    def move(self, state, kt, virial):
        kT, dt = self.kT, self.dt
        vol = volume(state.box)
        if self.coupling == "isotropic":
            diff = kT * self.beta / (4.0 * self.tau_p)
            x = np.array([math.sqrt(vol)])
        else:
            diff = 3.0 * kT * self.beta / (4.0 * self.tau_p)
            x = np.abs(np.diag(_box_np(state))) ** 1.5
        f = self._force(state, sym(kt), virial, vol)
        stream = HostStream(state.seed, state.step, STREAMS["crescale"])
        noise = np.array([stream.normal() for _ in range(len(x))])
        dx = diff / kT * f * dt + math.sqrt(2.0 * diff * dt) * noise
        if np.any(x + dx <= 0):
            raise ValueError("c-rescale: the cell collapsed (tau_p too short or pressure "
                             "far from equilibrium)")
        sign = -1.0 if self.coupling == "isotropic" else 1.0
        self._pending = (dx, diff)
        self.put("baro_work", self.get("baro_work") + float(np.sum(0.5 * dx * f - 0.25 * diff / kT
                                                                    * dt * f * f))
                 - sign * 0.5 * kT * math.log(vol))
        if self.coupling == "isotropic":
            s = np.full(3, ((x[0] + dx[0]) / x[0]) ** (2.0 / 3.0))
        else:
            s = ((x + dx) / x) ** (2.0 / 3.0)
        return np.diag(s), np.diag(0.5 * (s + 1.0 / s)), np.diag(1.0 / s)

    def after(self, state, kt_after, result):
        dx, diff = self._pending
        vol = volume(state.box)
        f = self._force(state, kt_after, np.array(result.virial.tolist()), vol)
        sign = -1.0 if self.coupling == "isotropic" else 1.0
        self.put("baro_work", self.get("baro_work") + float(np.sum(0.5 * dx * f + 0.25 * diff
                                                                    / self.kT * self.dt * f * f))
                 + sign * 0.5 * self.kT * math.log(vol))


class BerendsenNPT(_RescalingNPT):
    """Berendsen barostat (isotropic / anisotropic / triclinic) with a thermostat. Relaxes
    the pressure, does NOT sample NPT (use for equilibration only)."""

    name = "berendsen-npt"
    couplings = COUPLINGS

    def move(self, state, kt, virial):
        vol = volume(state.box)
        ptensor = (2.0 * sym(kt) + virial) / vol
        c = self.beta * self.dt / self.tau_p
        if self.coupling == "isotropic":
            mu = np.eye(3) * max(1.0 - c * (self.p0 - np.trace(ptensor) / 3.0), 0.5) ** (1.0 / 3.0)
        elif self.coupling == "anisotropic":
            mu = np.diag(np.maximum(1.0 - c * (self.p0 - np.diag(ptensor)), 0.5) ** (1.0 / 3.0))
        else:
            mu = np.eye(3) - c / 3.0 * (self.p0 * np.eye(3) - ptensor)
            mu = 0.5 * (mu + mu.T)
        return mu, np.eye(3), np.eye(3)
