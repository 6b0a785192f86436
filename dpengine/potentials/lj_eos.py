"""The Lennard-Jones fluid equation of state of Kolafa & Nezbeda (Fluid Phase Equilibria 100,
1–34 (1994)), in reduced units (ε = σ = k_B = 1), for validating LJ simulations.

The Helmholtz energy per particle is built from the hard-sphere term at the hybrid
Barker–Henderson diameter d(T), a second-virial correction and a fitted polynomial:

    A_res/N = T [β a_HS(η) + ρ ΔB₂(T) e^{−γρ²}] + Σ_ij C_ij T^{i/2} ρ^j,   η = πρd³/6,

with the Carnahan–Starling-type β a_HS(η) = (5/3) ln(1 − η) + η(34 − 33η + 4η²)/(6(1 − η)²)
used by Kolafa & Nezbeda. Pressure P = ρT + ρ² ∂(A_res/N)/∂ρ. The coefficients are the
published ones (Table 2 of the paper). The check values circulated with the widely used
Fortran version (SklogWiki), P(T = 1.3, ρ = 0.2) = 0.1214794 and P(1.3, 0.4) = 0.1125333,
are reproduced to 5·10⁻⁶ relative (that code's literals are single precision);
``tests/physics/test_lj_potential.py`` checks this and P = ρT + ρ² ∂(A_res/N)/∂ρ.
"""
from __future__ import annotations

import math

GAMMA = 1.92907278
# d_hBH(T) = Σ_i C_i T^{i/2} + C_ln ln T
_D = {-2: 0.011117524, -1: -0.076383859, 0: 1.080142248, 1: 0.000693129}
_D_LN = -0.063920968
# ΔB2,hBH(T) = Σ_i C_i T^{i/2}
_B2 = {-7: -0.58544978, -6: 0.43102052, -5: 0.87361369, -4: -4.13749995, -3: 2.90616279,
       -2: -7.02181962, 0: 0.02459877}
# C_ij: (i, j) → coefficient of T^{i/2} ρ^j
_C = {(0, 2): 2.01546797, (0, 3): -28.17881636, (0, 4): 28.28313847, (0, 5): -10.42402873,
      (-1, 2): -19.58371655, (-1, 3): 75.62340289, (-1, 4): -120.70586598,
      (-1, 5): 93.92740328, (-1, 6): -27.37737354,
      (-2, 2): 29.34470520, (-2, 3): -112.35356937, (-2, 4): 170.64908980,
      (-2, 5): -123.06669187, (-2, 6): 34.42288969,
      (-4, 2): -13.37031968, (-4, 3): 65.38059570, (-4, 4): -115.09233113,
      (-4, 5): 88.91973082, (-4, 6): -25.62099890}


def diameter(t: float) -> float:
    """Hybrid Barker–Henderson diameter d(T)."""
    return sum(c * t ** (i / 2) for i, c in _D.items()) + _D_LN * math.log(t)


def delta_b2(t: float) -> float:
    return sum(c * t ** (i / 2) for i, c in _B2.items())


def _z_hs(eta: float) -> float:
    return (1 + eta + eta ** 2 - 2.0 / 3.0 * eta ** 3 * (1 + eta)) / (1 - eta) ** 3


def pressure(t: float, rho: float) -> float:
    """Reduced pressure P* at temperature T* and density ρ*."""
    eta = math.pi / 6.0 * rho * diameter(t) ** 3
    poly = sum(c * j * t ** (i / 2) * rho ** (j + 1) for (i, j), c in _C.items())
    b = delta_b2(t) * math.exp(-GAMMA * rho ** 2)
    return rho * t * _z_hs(eta) + rho ** 2 * t * b * (1 - 2 * GAMMA * rho ** 2) + poly


def free_energy_residual(t: float, rho: float) -> float:
    """Residual Helmholtz energy per particle A_res/N (reduced)."""
    eta = math.pi / 6.0 * rho * diameter(t) ** 3
    a_hs = 5.0 / 3.0 * math.log(1 - eta) + eta * (34 - 33 * eta + 4 * eta ** 2) / (6 * (1 - eta) ** 2)
    poly = sum(c * t ** (i / 2) * rho ** j for (i, j), c in _C.items())
    return t * (a_hs + rho * delta_b2(t) * math.exp(-GAMMA * rho ** 2)) + poly


def dp_drho(t: float, rho: float, h: float = 1e-5) -> float:
    """∂P*/∂ρ* at constant T* (central difference; P is a smooth function of ρ)."""
    return (pressure(t, rho + h) - pressure(t, rho - h)) / (2 * h)


def compressibility(t: float, rho: float) -> float:
    """Reduced isothermal compressibility κ_T* = 1 / (ρ* ∂P*/∂ρ*)."""
    return 1.0 / (rho * dp_drho(t, rho))


def density(t: float, p: float, lo: float = 1e-4, hi: float = 1.2) -> float:
    """The fluid density ρ* at which P*(T*, ρ*) = p (bisection; supercritical T* only)."""
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if pressure(t, mid) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)
