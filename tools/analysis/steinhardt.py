"""Steinhardt bond-orientational order parameters and Lechner–Dellago averages.

For atom i with the N_b(i) neighbours j closer than r_c (Steinhardt, Nelson, Ronchetti,
Phys. Rev. B 28, 784 (1983))::

    q_lm(i) = 1/N_b(i) Σ_j Y_lm(r̂_ij),      Q_l(i) = √( 4π/(2l+1) Σ_{m=−l..l} |q_lm(i)|² )

and the neighbour-averaged version of Lechner & Dellago (J. Chem. Phys. 129, 114707
(2008)), summing over i itself and its neighbours (Ñ_b(i) = N_b(i) + 1)::

    q̄_lm(i) = 1/Ñ_b(i) Σ_{k ∈ {i} ∪ N_b(i)} q_lm(k),
    Q̄_l(i) = √( 4π/(2l+1) Σ_m |q̄_lm(i)|² )

Y_lm are the orthonormal complex spherical harmonics (:func:`spherical_harmonics`); since
|q_l,−m| = |q_lm| only m ≥ 0 is evaluated and m > 0 counts twice. Perfect crystals with the
first shell as neighbours: Q6 = 0.575 (fcc, 12), 0.485 (hcp, 12), 0.511 (bcc, 8 + 6 within
r_c between the second and third shells); Q4 = 0.191, 0.097, 0.036. Atoms without
neighbours have no Q (counted in ``isolated``, left out of the distributions); an atom
with a single neighbour has Q_l = 1 exactly (a spike at 1 in a sparse liquid).
Neighbours are found with the engine's cell-list Verlet list (any triclinic cell).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .pairs import bonds, nlist_frames
from .trajectory import Trajectory

__all__ = ["SteinhardtResult", "order_parameters", "spherical_harmonics", "steinhardt"]


@dataclass
class SteinhardtResult:
    """Per-atom distributions accumulated over frames.

    degrees      the l values
    edges        [n_bins + 1] histogram edges on [0, 1]
    q, qbar      {l: [n_bins]} probability densities of Q_l and Q̄_l (∫ P dQ = 1)
    mean, mean_bar, std, std_bar  {l: float} over all atoms and frames
    neighbours   mean N_b;  isolated: atom-frames without neighbours;  n_frames, n_atoms
    """

    degrees: tuple[int, ...]
    edges: np.ndarray
    q: dict
    qbar: dict
    mean: dict
    mean_bar: dict
    std: dict
    std_bar: dict
    neighbours: float
    isolated: int
    n_frames: int
    n_atoms: int
    cutoff: float


def spherical_harmonics(l: int, cos_theta, phi) -> np.ndarray:
    """Y_lm(θ, φ) for m = 0..l, complex [P, l + 1], orthonormal on the sphere, WITHOUT the
    Condon–Shortley phase (−1)^m (a per-m sign that cancels in |q_lm|² and in q̄_lm).

    Y_lm = √((2l+1)/(4π) (l−m)!/(l+m)!) P_l^m(cos θ) e^{imφ}, with P_l^m from the upward
    recurrences P_m^m = (2m−1)!! sin^m θ, P_{m+1}^m = (2m+1) x P_m^m,
    (l−m) P_l^m = (2l−1) x P_{l−1}^m − (l+m−1) P_{l−2}^m (x = cos θ); float64 is exact
    enough for l ≲ 20."""
    from math import factorial, pi, sqrt

    x = np.asarray(cos_theta, dtype=np.float64)
    sin = np.sqrt(np.clip(1.0 - x * x, 0.0, None))
    out = np.empty(x.shape + (l + 1,), dtype=np.complex128)
    pmm = np.ones_like(x)
    for m in range(l + 1):
        if m > 0:
            pmm = pmm * (2 * m - 1) * sin
        p_prev, p = pmm, pmm
        if l > m:
            p_prev, p = pmm, (2 * m + 1) * x * pmm
            for ll in range(m + 2, l + 1):
                p_prev, p = p, ((2 * ll - 1) * x * p - (ll + m - 1) * p_prev) / (ll - m)
        norm = sqrt((2 * l + 1) / (4 * pi) * factorial(l - m) / factorial(l + m))
        out[..., m] = norm * p * np.exp(1j * m * np.asarray(phi))
    return out


def _scatter_rows(index, values, n: int) -> np.ndarray:
    """Σ of complex rows ``values`` [P, K] into ``n`` rows by ``index`` [P] (bincount)."""
    out = np.empty((n, values.shape[1]), dtype=np.complex128)
    for k in range(values.shape[1]):
        out[:, k] = (np.bincount(index, values[:, k].real, minlength=n)
                     + 1j * np.bincount(index, values[:, k].imag, minlength=n))
    return out


def order_parameters(vectors, centre, neighbour, n_atoms: int, degrees=(4, 6)):
    """Q_l and Q̄_l of every atom from its bond vectors.

    vectors   float [P, 3]  r_ij = x_j − x_i of every (centre, neighbour) bond, Å
    centre    int [P]       i of each bond;  neighbour: int [P], j of each bond
    n_atoms   number of atoms M (indices < M)
    Returns ``(q, qbar, n_b)``: {l: float64 [M]} (NaN for atoms without neighbours) twice
    and the neighbour counts int [M]."""
    vectors = np.asarray(vectors, dtype=np.float64).reshape(-1, 3)
    centre, neighbour = np.asarray(centre, np.int64), np.asarray(neighbour, np.int64)
    n_b = np.bincount(centre, minlength=n_atoms)
    r = np.linalg.norm(vectors, axis=1)
    if np.any(r == 0):
        raise ValueError("two atoms at the same position: a bond of length 0 has no direction")
    cos = np.clip(vectors[:, 2] / np.where(r > 0, r, 1.0), -1.0, 1.0)
    phi = np.arctan2(vectors[:, 1], vectors[:, 0])
    inv_nb = np.where(n_b > 0, 1.0 / np.maximum(n_b, 1), 0.0)
    q_out, qbar_out = {}, {}
    for l in degrees:
        m = np.arange(l + 1)
        qlm = _scatter_rows(centre, spherical_harmonics(l, cos, phi), n_atoms) * inv_nb[:, None]
        qbar = (qlm + _scatter_rows(centre, qlm[neighbour], n_atoms)) / (n_b + 1.0)[:, None]
        weight = np.where(m == 0, 1.0, 2.0)                               # ±m
        pref = 4.0 * np.pi / (2 * l + 1)
        for out, arr in ((q_out, qlm), (qbar_out, qbar)):
            val = np.sqrt(pref * ((arr.real ** 2 + arr.imag ** 2) @ weight))
            out[l] = np.where(n_b > 0, val, np.nan)
    return q_out, qbar_out, n_b


def steinhardt(traj: Trajectory, frames, atoms, cutoff: float, degrees=(4, 6),
               bins: int = 100, show_progress: bool = True) -> SteinhardtResult:
    """Distributions of Q_l and Q̄_l of ``atoms`` (index array), neighbours = the other
    selected atoms closer than ``cutoff`` (Å), over ``frames``."""
    degrees = tuple(int(l) for l in degrees)
    if not cutoff > 0:
        raise ValueError(f"--cutoff must be > 0 Å, got {cutoff}")
    if not degrees or min(degrees) < 0:
        raise ValueError(f"degrees l must be >= 0, got {degrees}")
    atoms = np.asarray(atoms, np.int64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    hist = {key: np.zeros(bins) for key in [(l, b) for l in degrees for b in (0, 1)]}
    s1 = {key: 0.0 for key in hist}
    s2 = {key: 0.0 for key in hist}
    n_frames, n_valid, isolated, nb_sum = 0, 0, 0, 0
    for _, _, pos, box, nl in nlist_frames(traj, frames, atoms, cutoff, show_progress,
                                           "Steinhardt"):
        centre, vec, nbr = bonds(pos.numpy(), box.numpy(), nl, cutoff)
        q, qbar, n_b = order_parameters(vec, centre, nbr, len(atoms), degrees)
        ok = n_b > 0
        isolated += int((~ok).sum())
        n_valid += int(ok.sum())
        nb_sum += int(n_b.sum())
        n_frames += 1
        for l in degrees:
            for b, arr in ((0, q[l][ok]), (1, qbar[l][ok])):
                hist[(l, b)] += np.histogram(np.clip(arr, 0.0, 1.0), bins=edges)[0]
                s1[(l, b)] += float(arr.sum())
                s2[(l, b)] += float((arr ** 2).sum())
    width = np.diff(edges)
    n = max(n_valid, 1)

    def dens(key):
        return hist[key] / (n * width) if n_valid else np.zeros(bins)

    def mean(key):
        return s1[key] / n if n_valid else float("nan")

    def std(key):
        return float(np.sqrt(max(s2[key] / n - mean(key) ** 2, 0.0))) if n_valid else float("nan")

    return SteinhardtResult(
        degrees=degrees, edges=edges,
        q={l: dens((l, 0)) for l in degrees}, qbar={l: dens((l, 1)) for l in degrees},
        mean={l: mean((l, 0)) for l in degrees}, mean_bar={l: mean((l, 1)) for l in degrees},
        std={l: std((l, 0)) for l in degrees}, std_bar={l: std((l, 1)) for l in degrees},
        neighbours=nb_sum / max(n_frames * len(atoms), 1), isolated=isolated,
        n_frames=n_frames, n_atoms=len(atoms), cutoff=float(cutoff))
