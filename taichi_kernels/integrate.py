"""Integrator kernels: velocity Verlet half steps, thermostat and barostat propagators.

Units: positions Å, velocities Å/fs, forces eV/Å, masses amu, dt fs;
``accel`` = 1 eV/(Å·amu) in Å/fs² (dpengine.units.ACCEL).

A Python → Taichi call costs ~0.1 ms on the CPU (more than the arithmetic of a few
thousand atoms), so each kernel fuses everything one point of a splitting needs, and
the small per-step numbers (scale factors, 3×3 propagator matrices, Langevin
coefficients, the random-stream key) travel in ONE float64 tensor ``params`` together
with the masses; its layout is given by the offsets below (filled by
``dpengine.integrators.Params``). Each tensor argument costs ~25 µs of call overhead.

Matrices act on row vectors (positions and velocities are rows, as the box's cell
vectors are): ``(v @ E)_b = Σ_a v_a E_ab``.

Reductions (kinetic-energy tensor, Langevin heat) are deterministic: per-atom values go
to ``work`` rows 0..N-1, fixed blocks of ``BLOCK`` rows are summed in parallel into rows
N.., then one thread sums the block totals in order. The result is therefore the same
for any thread count, which keeps runs and restarts bit-reproducible on the CPU.
"""
import taichi as ti

from taichi_kernels.launch import fast_launch
from taichi_kernels.rng import normal4

# No ``from __future__ import annotations`` here: Taichi reads the annotations as objects.
_F1 = ti.types.ndarray(dtype=ti.f64, ndim=1)
_F2 = ti.types.ndarray(dtype=ti.f64, ndim=2)

#: rows summed by one thread in the first reduction stage
BLOCK = 64
#: columns of ``work``: kinetic tensor ½Σm v_a v_b (xx, yy, zz, xy, xz, yz), heat
N_SUMS = 7
HEAT = 6

# --- layout of ``params`` (float64 [COEF_SIZE + N]): coefficients, then the masses -------
ALPHA = 0       # scalar velocity pre-scale α (thermostat)
KICK = 1        # kick factor: v += KICK · F/m  (= dt/2 · accel for a half kick)
MAT_E = 2       # 3×3: v ← α v @ E + KICK · (F/m) @ PHI
MAT_PHI = 11    # 3×3
MAT_A = 20      # 3×3: x ← x @ A + v @ B
MAT_B = 29      # 3×3 (includes dt)
MAT_C = 38      # 3×3: v ← v @ C after the position update
KE_FACTOR = 47  # ½ m v² [amu Å²/fs²] → eV (dpengine.units.KE_TO_EV)
DT_HALF = 48    # dt/2 (BAOAB drifts)
C1 = 49         # Langevin exp(-γ Δt)
KT_ACCEL = 50   # k_B T · accel: k_B T/m in (Å/fs)² is KT_ACCEL / m
KICK_AFTER = 51  # langevin_o: kick applied after the O step
KEY = 52        # 5 words (seed_lo, seed_hi, step_lo, step_hi, stream), exact in float64
COEF_SIZE = 64  # masses start here: m_i = params[COEF_SIZE + i]


def work_rows(n_atoms: int) -> int:
    """Rows of the ``work`` buffer for ``n_atoms`` atoms (per-atom rows, block rows, and
    the last row, which receives the sums)."""
    return n_atoms + (n_atoms + BLOCK - 1) // BLOCK + 1


@ti.func
def _reduce(work: ti.template(), n):
    """Deterministic column sums of work[0:n, 0:N_SUMS] into the last row of work."""
    nb = (n + BLOCK - 1) // BLOCK
    last = work.shape[0] - 1
    for b in range(nb):
        for c in ti.static(range(N_SUMS)):
            acc = 0.0
            for i in range(b * BLOCK, ti.min(n, (b + 1) * BLOCK)):
                acc += work[i, c]
            work[n + b, c] = acc
    for _ in range(1):
        for c in ti.static(range(N_SUMS)):
            acc = 0.0
            for b in range(nb):
                acc += work[n + b, c]
            work[last, c] = acc


@ti.func
def _row(a: ti.template(), i):
    return ti.Vector([a[i, 0], a[i, 1], a[i, 2]])


@ti.func
def _mat(p: ti.template(), off: ti.template()):
    """3×3 matrix stored row-major at p[off:off + 9]."""
    return ti.Matrix([[p[off + 0], p[off + 1], p[off + 2]],
                      [p[off + 3], p[off + 4], p[off + 5]],
                      [p[off + 6], p[off + 7], p[off + 8]]])


@ti.func
def _word(p: ti.template(), k):
    return ti.cast(ti.cast(p[KEY + k], ti.i64), ti.u32)


@ti.func
def _noise(p: ti.template(), i):
    """Three standard normals of atom i for the key words stored in params."""
    g = normal4(_word(p, 0), _word(p, 1), _word(p, 2), _word(p, 3), i, _word(p, 4))
    return ti.Vector([g[0], g[1], g[2]])


@ti.func
def _o_step(p: ti.template(), i, m, v):
    """Langevin O step of atom i (mass m): v ← c₁ v + sqrt((1 − c₁²) k_B T/m) ξ.
    Returns (new v, heat given to the bath ½m(v² − v_new²) in eV)."""
    kef = p[KE_FACTOR]
    c1 = p[C1]
    k_before = 0.5 * m * kef * v.dot(v)
    v_new = c1 * v + ti.sqrt((1.0 - c1 * c1) * p[KT_ACCEL] / m) * _noise(p, i)
    return v_new, k_before - 0.5 * m * kef * v_new.dot(v_new)


@ti.func
def _store_kinetic(work: ti.template(), i, m, v, kef):
    h = 0.5 * m * kef
    work[i, 0] = h * v[0] * v[0]
    work[i, 1] = h * v[1] * v[1]
    work[i, 2] = h * v[2] * v[2]
    work[i, 3] = h * v[0] * v[1]
    work[i, 4] = h * v[0] * v[2]
    work[i, 5] = h * v[1] * v[2]


@fast_launch
@ti.kernel
def kick_drift(positions: _F2, velocities: _F2, forces: _F2, masses: _F1, dt: ti.f64,
               accel: ti.f64):
    """v ← v + (dt/2)·F/m;  x ← x + dt·v   (the first half of velocity Verlet)."""
    for i, a in positions:
        v = velocities[i, a] + 0.5 * dt * accel * forces[i, a] / masses[i]
        velocities[i, a] = v
        positions[i, a] += dt * v


@fast_launch
@ti.kernel
def kick(velocities: _F2, forces: _F2, masses: _F1, dt: ti.f64, accel: ti.f64):
    """v ← v + (dt/2)·F/m   (the second half of velocity Verlet)."""
    for i, a in velocities:
        velocities[i, a] += 0.5 * dt * accel * forces[i, a] / masses[i]


@fast_launch
@ti.kernel
def velocity_position_update(positions: _F2, velocities: _F2, forces: _F2, params: _F1):
    """One fused stretch of a splitting, per atom (no reduction):

        v ← α · v @ E + KICK · (F/m) @ Φ        (thermostat scaling, kick / MTK p-propagator)
        x ← x @ A + v @ B                       (drift / MTK r-propagator / cell rescaling)
        v ← v @ C                               (barostat velocity scaling)
    """
    for i in range(positions.shape[0]):
        e = _mat(params, MAT_E)
        phi = _mat(params, MAT_PHI)
        am = _mat(params, MAT_A)
        bm = _mat(params, MAT_B)
        cm = _mat(params, MAT_C)
        inv_m = 1.0 / params[COEF_SIZE + i]
        v = params[ALPHA] * (_row(velocities, i) @ e) + (params[KICK] * inv_m) * (_row(forces, i) @ phi)
        x = _row(positions, i) @ am + v @ bm
        v = v @ cm
        for a in ti.static(range(3)):
            positions[i, a] = x[a]
            velocities[i, a] = v[a]


@fast_launch
@ti.kernel
def velocity_update_reduce(velocities: _F2, forces: _F2, params: _F1, work: _F2):
    """v ← α · v @ E + KICK · (F/m) @ Φ; the last row of ``work`` receives the kinetic
    tensor ½ Σ m v_a v_b (eV) of the new v (xx, yy, zz, xy, xz, yz) and heat 0."""
    n = velocities.shape[0]
    for i in range(n):
        e = _mat(params, MAT_E)
        phi = _mat(params, MAT_PHI)
        m = params[COEF_SIZE + i]
        v = params[ALPHA] * (_row(velocities, i) @ e) + (params[KICK] / m) * (_row(forces, i) @ phi)
        for a in ti.static(range(3)):
            velocities[i, a] = v[a]
        _store_kinetic(work, i, m, v, params[KE_FACTOR])
        work[i, HEAT] = 0.0
    _reduce(work, n)


@fast_launch
@ti.kernel
def baoab_first(positions: _F2, velocities: _F2, forces: _F2, params: _F1, work: _F2):
    """B A O A of Langevin BAOAB (Leimkuhler & Matthews 2013); the closing B is ``kick``.

        v ← v + KICK·F/m;  x ← x + (dt/2) v;
        v ← c₁ v + sqrt((1 − c₁²) k_B T/m) ξ,   ξ ~ N(0, 1) from (seed, step, atom, stream);
        x ← x + (dt/2) v.

    Last row of ``work``: kinetic tensor after the O step, and (column 6) the heat given
    to the bath, Σ ½m(v_before² − v_after²) of the O step (eV).
    """
    n = positions.shape[0]
    for i in range(n):
        m = params[COEF_SIZE + i]
        v = _row(velocities, i) + (params[KICK] / m) * _row(forces, i)
        x = _row(positions, i) + params[DT_HALF] * v
        v, heat = _o_step(params, i, m, v)
        x = x + params[DT_HALF] * v
        for a in ti.static(range(3)):
            positions[i, a] = x[a]
            velocities[i, a] = v[a]
        _store_kinetic(work, i, m, v, params[KE_FACTOR])
        work[i, HEAT] = heat
    _reduce(work, n)


@fast_launch
@ti.kernel
def langevin_o(velocities: _F2, forces: _F2, params: _F1, work: _F2):
    """Kick, Langevin O step, kick (OBABO-type splittings, used with barostats):

        v ← v + KICK·F/m;  v ← c₁ v + sqrt((1 − c₁²) k_B T/m) ξ;  v ← v + KICK_AFTER·F/m

    Last row of ``work``: kinetic tensor of the final v; column 6 the heat of the O step.
    """
    n = velocities.shape[0]
    for i in range(n):
        m = params[COEF_SIZE + i]
        f = _row(forces, i)
        v = _row(velocities, i) + (params[KICK] / m) * f
        v, heat = _o_step(params, i, m, v)
        v = v + (params[KICK_AFTER] / m) * f
        for a in ti.static(range(3)):
            velocities[i, a] = v[a]
        _store_kinetic(work, i, m, v, params[KE_FACTOR])
        work[i, HEAT] = heat
    _reduce(work, n)
