"""Energy minimisation: FIRE and L-BFGS, for positions and, with a target pressure, the cell.

Both are step objects with the integrator protocol (``dpengine.integrators``), so
``dpengine run`` with ``[md] ensemble = "minimize"`` drives them, writes the trajectory,
thermo log and restart as for MD, and stops when converged:

    max_i |F_i| < force_tolerance (eV/Å)   and, with a cell,   max_ab |P_ab − P₀ δ_ab| < stress_tolerance (bar)

where P = W/V is the static (virial) pressure tensor. ``[md] steps`` bounds the number of
iterations.

Variable cell (``pressure`` given): generalised coordinates in the manner of ASE's
UnitCellFilter. With the deformation D (box = box_ref @ D, x = X @ D, row vectors) the
enthalpy H = U + P₀V has the generalised forces

    −∂H/∂X = F @ Dᵀ,        −∂H/∂D = D⁻ᵀ (W − P₀ V I)

and the cell coordinate is N·D (so its force is −∂H/∂D / N, comparable to an atom's).
The cell force is projected on the allowed deformations: "isotropic" (a multiple of I),
"anisotropic" (diagonal), "triclinic" (symmetric: no rotation).

FIRE (Bitzek et al., Phys. Rev. Lett. 97, 170201 (2006)) with ASE's parameters (unit
masses of 1 amu, Δt₀ = 1 fs, Δt_max = 10 fs, N_min = 5, f_inc = 1.1, f_dec = 0.5,
α₀ = 0.1, f_α = 0.99, at most 0.2 Å per step). L-BFGS (Nocedal 1980; two-loop
recursion, memory 20, initial inverse Hessian 1/70 Å²/eV, steps capped at 0.2 Å, the
memory reset when a step goes uphill).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from dpengine import units
from dpengine.integrators import Integrator, transform_box, volume

MAX_STEP = 0.2  # Å


class _Minimizer(Integrator):
    """Generalised coordinates (atoms, optional cell) and the convergence test."""

    def __init__(self, timestep: float = 1.0, pressure: float | None = None,
                 coupling: str | None = None, force_tolerance: float = 0.01,
                 stress_tolerance: float = 10.0, fix_com: bool = True):
        super().__init__(timestep if timestep > 0 else 1.0, fix_com)
        if not force_tolerance > 0 or not stress_tolerance > 0:
            raise ValueError("force_tolerance and stress_tolerance must be > 0")
        self.ftol = float(force_tolerance)
        self.stol = float(stress_tolerance)
        self.cell = pressure is not None
        self.p0 = 0.0 if pressure is None else float(pressure) / units.EV_PER_A3_TO_BAR
        self.coupling = coupling or "isotropic"
        if self.coupling not in ("isotropic", "anisotropic", "triclinic"):
            raise ValueError(f"coupling must be isotropic, anisotropic or triclinic, got "
                             f"{self.coupling!r}")
        self.max_force = math.inf
        self.max_stress = 0.0

    def variables(self, state):
        v = {}
        if self.cell:
            v["min_deform"] = ((3, 3), math.nan)
        return v

    def prepare(self, state):
        if self.cell and state.box is None:
            raise ValueError("cell relaxation (a pressure with ensemble \"minimize\") needs a "
                             "periodic box")
        super().prepare(state)
        if self.cell and not np.all(np.isfinite(self._vars["min_deform"])):
            self._vars["min_deform"][...] = np.eye(3)

    def dof(self, state):
        return max(3 * state.n_atoms, 1)

    def invariant(self, state, result):
        """The enthalpy U + P₀V at zero temperature (U alone without a cell), eV."""
        return float(result.energy) + (self.p0 * volume(state.box) if self.cell else 0.0)

    # --- generalised coordinates ---------------------------------------------------
    def _deform(self) -> np.ndarray:
        return self._vars["min_deform"]

    def _project(self, g: np.ndarray) -> np.ndarray:
        if self.coupling == "isotropic":
            return np.eye(3) * (np.trace(g) / 3.0)
        if self.coupling == "anisotropic":
            return np.diag(np.diag(g))
        return 0.5 * (g + g.T)

    def gradient(self, state, result) -> tuple[torch.Tensor, np.ndarray | None]:
        """Generalised forces (atoms [N, 3] tensor, cell [3, 3] or None); also updates the
        convergence measures."""
        f = result.forces
        self.max_force = float(torch.linalg.vector_norm(f, dim=1).amax()) if f.numel() else 0.0
        if not self.cell:
            return f, None
        d = self._deform()
        virial = np.array(result.virial.tolist())
        vol = volume(state.box)
        dev = virial - self.p0 * vol * np.eye(3)
        allowed = self._project(dev)
        self.max_stress = float(np.abs(allowed).max() / vol * units.EV_PER_A3_TO_BAR)
        dt_ = torch.as_tensor(d.T, dtype=f.dtype, device=f.device)
        fx = f[:, 0:1] * dt_[0] + f[:, 1:2] * dt_[1] + f[:, 2:3] * dt_[2]
        gc = self._project(np.linalg.inv(d).T @ dev) / max(state.n_atoms, 1)
        return fx, gc

    def check(self) -> bool:
        self.converged = self.max_force < self.ftol and (not self.cell or self.max_stress < self.stol)
        return self.converged

    def displace(self, state, dx: torch.Tensor, dc: np.ndarray | None) -> None:
        """X += dx (reference-cell coordinates), N·D += dc."""
        if not self.cell:
            state.positions.add_(dx)
            return
        d = self._deform()
        d_new = d + dc / max(state.n_atoms, 1)
        m = torch.as_tensor(np.linalg.inv(d) @ d_new, dtype=state.positions.dtype,
                            device=state.positions.device)
        dd = torch.as_tensor(d_new, dtype=m.dtype, device=m.device)
        # x = X @ D: the new positions are (X + dx) @ D_new = x @ D⁻¹ D_new + dx @ D_new
        x = state.positions
        new = (x[:, 0:1] * m[0] + x[:, 1:2] * m[1] + x[:, 2:3] * m[2]
               + dx[:, 0:1] * dd[0] + dx[:, 1:2] * dd[1] + dx[:, 2:3] * dd[2])
        state.positions.copy_(new)
        transform_box(state, np.linalg.inv(d) @ d_new)
        d[...] = d_new

    def init(self, state, result):
        super().init(state, result)
        self.gradient(state, result)
        self.check()

    def _cap(self, dx: torch.Tensor, dc: np.ndarray | None):
        norm2 = float((dx * dx).sum()) + (0.0 if dc is None else float((dc * dc).sum()))
        norm = math.sqrt(norm2)
        if norm > MAX_STEP:
            dx = dx * (MAX_STEP / norm)
            dc = None if dc is None else dc * (MAX_STEP / norm)
        return dx, dc


class FIRE(_Minimizer):
    """Fast inertial relaxation engine; the FIRE velocities are the state's velocities
    (zeroed when converged) and the cell's in ``state.ensemble``."""

    name = "fire"
    N_MIN, F_INC, F_DEC, A_START, F_A, DT_MAX = 5, 1.1, 0.5, 0.1, 0.99, 10.0

    def variables(self, state):
        v = {**super().variables(state), "fire_dt": ((), 1.0), "fire_alpha": ((), self.A_START),
             "fire_n": ((), 0.0)}
        if self.cell:
            v["fire_cell_v"] = ((3, 3), 0.0)
        return v

    def init(self, state, result):
        super().init(state, result)
        if state.step == 0 and "fire_started" not in self.__dict__:
            state.velocities.zero_()
        self.fire_started = True

    def step(self, state, result, compute):
        fx, gc = self.gradient(state, result)
        v = state.velocities
        vc = self._vars["fire_cell_v"] if self.cell else None
        power = float((fx * v).sum()) + (float((gc * vc).sum()) if self.cell else 0.0)
        dt, alpha, n = self.get("fire_dt"), self.get("fire_alpha"), self.get("fire_n")
        if power > 0.0:
            vnorm = math.sqrt(float((v * v).sum()) + (float((vc * vc).sum()) if self.cell else 0.0))
            fnorm = math.sqrt(float((fx * fx).sum()) + (float((gc * gc).sum()) if self.cell else 0.0))
            mix = alpha * vnorm / max(fnorm, 1e-300)
            v.mul_(1.0 - alpha).add_(fx, alpha=mix)
            if self.cell:
                vc[...] = (1.0 - alpha) * vc + mix * gc
            if n > self.N_MIN:
                dt = min(dt * self.F_INC, self.DT_MAX)
                alpha *= self.F_A
            n += 1
        else:
            v.zero_()
            if self.cell:
                vc[...] = 0.0
            alpha, dt, n = self.A_START, dt * self.F_DEC, 0
        self.put("fire_dt", dt)
        self.put("fire_alpha", alpha)
        self.put("fire_n", n)
        v.add_(fx, alpha=dt * units.ACCEL)
        if self.cell:
            vc += dt * units.ACCEL * gc
        dx, dc = self._cap(dt * v, dt * vc if self.cell else None)
        self.displace(state, dx, dc)
        result = compute(state)
        state.step += 1
        self.gradient(state, result)
        if self.check():
            v.zero_()
        return result


class LBFGS(_Minimizer):
    """Limited-memory BFGS on the generalised coordinates (memory ``MEMORY``). Its history is
    not saved in restart files: a restarted minimisation starts with an empty memory (the
    minimum it reaches is the same; FIRE restarts exactly)."""

    name = "lbfgs"
    MEMORY = 20
    H0 = 1.0 / 70.0  # Å²/eV

    def init(self, state, result):
        super().init(state, result)
        self._s: list[np.ndarray] = []
        self._y: list[np.ndarray] = []
        self._rho: list[float] = []
        self._prev = None

    def _flat(self, fx, gc) -> np.ndarray:
        parts = [fx.detach().cpu().numpy().reshape(-1)]
        if gc is not None:
            parts.append(gc.reshape(-1))
        return np.concatenate(parts)

    def step(self, state, result, compute):
        fx, gc = self.gradient(state, result)
        g = -self._flat(fx, gc)                      # gradient of H
        energy = self.invariant(state, result)
        if self._prev is not None:
            s, g_old, e_old = self._prev
            y = g - g_old
            sy = float(s @ y)
            if energy > e_old + 1e-12 * abs(e_old) or sy <= 0:
                self._s, self._y, self._rho = [], [], []   # uphill or not convex: reset
            else:
                self._s.append(s)
                self._y.append(y)
                self._rho.append(1.0 / sy)
                if len(self._s) > self.MEMORY:
                    self._s.pop(0), self._y.pop(0), self._rho.pop(0)
        q = g.copy()
        a = []
        for s, y, rho in zip(reversed(self._s), reversed(self._y), reversed(self._rho)):
            ai = rho * float(s @ q)
            a.append(ai)
            q -= ai * y
        q *= self.H0
        for (s, y, rho), ai in zip(zip(self._s, self._y, self._rho), reversed(a)):
            b = rho * float(y @ q)
            q += s * (ai - b)
        step = -q
        n3 = 3 * state.n_atoms
        dx = torch.as_tensor(step[:n3].reshape(-1, 3), dtype=state.positions.dtype,
                             device=state.positions.device)
        dc = step[n3:].reshape(3, 3) if self.cell else None
        if dc is not None:
            dc = self._project(dc)
        dx, dc = self._cap(dx, dc)
        taken = self._flat(dx, dc)
        self.displace(state, dx, dc)
        self._prev = (taken, g, energy)
        result = compute(state)
        state.step += 1
        self.gradient(state, result)
        self.check()
        return result
