"""Mean-squared displacement (diffusion) and velocity autocorrelation (power spectrum).

Both are time correlations over a window of lags τ = 0..L frames, averaged over time
origins taken every ``origin_every`` frames and over the selected atoms. Only the origins
inside the window are stored (a ring of ⌈L / origin_every⌉ + 1 frames of the selected
atoms), so memory does not grow with the trajectory length.

MSD(τ) = ⟨|u_i(t + τ) − u_i(t)|²⟩ (Å²) of unwrapped positions u, from the stored
(possibly wrapped) positions x by the toroidal unwrapping of von Bülow, Bullerjahn and
Hummer (J. Chem. Phys. 153, 021101 (2020)), valid for cells that change (NPT)::

    u_t = u_{t−1} + Δ_t − round(Δ_t H_t⁻¹) H_t,   Δ_t = x_t − x_{t−1}

(rows of H_t are the cell vectors; needs every atom to move less than half a cell between
frames). The centre-of-mass drift of the whole system is removed by default. Einstein
relation in the linear (diffusive) regime: MSD(τ) = 6 D τ + b, fitted by least squares on
the lag window [t₀, t₁] (ps); D in Å²/ps (1 Å²/ps = 10⁻⁴ cm²/s). Uncertainty: the
trajectory is cut into B segments, D_b is fitted to each segment's MSD (origin and end in
the segment), and σ_D = std(D_b) / √B. The local exponent α = d ln MSD / d ln τ on the fit
window (≈ 1 when the regime is diffusive) is reported as a check.

VACF C(τ) = ⟨v_i(t) · v_i(t + τ)⟩ ((Å/ps)²). Its spectrum (vibrational density of states,
Å²/ps) S(ν) = ∫ C(τ) w(τ) e^{−2πiντ} dτ over −τ_max..τ_max with the Hann window
w = cos²(πτ / 2τ_max); S(0) = 6 D (Green–Kubo, D = ⅓ ∫₀^∞ C dτ, also reported).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .trajectory import Trajectory, progress

__all__ = ["LagCorrelator", "MSDResult", "VACFResult", "msd", "vacf", "fit_diffusion",
           "A2_PER_PS_TO_CM2_PER_S"]

#: 1 Å²/ps in cm²/s.
A2_PER_PS_TO_CM2_PER_S = 1e-4
#: Default number of stored time origins in the lag window.
ORIGINS = 250
#: 1 THz in cm⁻¹ (1e12 / c, c = 2.99792458e10 cm/s).
THZ_TO_CM1 = 1e12 / 2.99792458e10


class LagCorrelator:
    """Streaming ⟨φ(x_o, x_{o+τ})⟩ for τ = 0..max_lag frames.

    ``kind`` "msd": φ = mean_i |x_i' − x_i|²;  "dot": φ = mean_i x_i · x_i'. Frames are
    passed in order with :meth:`add` (frame number k = 0..n_total − 1 of the selection).
    Every pair (origin o, frame k) adds to ``total[τ]``; when o and k lie in the same of
    ``n_blocks`` equal segments of the selection it also adds to ``block[b, τ]``.
    """

    def __init__(self, kind: str, max_lag: int, n_total: int, origin_every: int = 1,
                 n_blocks: int = 1):
        self.kind, self.max_lag, self.n_total = kind, int(max_lag), int(n_total)
        self.every, self.n_blocks = max(1, int(origin_every)), max(1, int(n_blocks))
        self.total = np.zeros(self.max_lag + 1)
        self.count = np.zeros(self.max_lag + 1)
        self.block = np.zeros((self.n_blocks, self.max_lag + 1))
        self.block_count = np.zeros((self.n_blocks, self.max_lag + 1))
        self._cap = self.max_lag // self.every + 1
        self._ring = None
        self._origin = np.full(self._cap, -1, dtype=np.int64)

    def segment(self, k):
        return np.minimum(np.asarray(k) * self.n_blocks // self.n_total, self.n_blocks - 1)

    def add(self, k: int, x: np.ndarray) -> None:
        """Frame number ``k`` with per-atom vectors ``x`` [N, 3]."""
        flat = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
        if self._ring is None:
            self._ring = np.zeros((self._cap, flat.size))
            self._norm2 = np.zeros(self._cap)
            self._n_atoms = max(1, len(x))
        norm2 = float(flat @ flat)
        if k % self.every == 0:
            slot = (k // self.every) % self._cap
            self._ring[slot], self._norm2[slot], self._origin[slot] = flat, norm2, k
        live = (self._origin >= 0) & (k - self._origin <= self.max_lag)
        idx = np.flatnonzero(live)
        if idx.size == 0:
            return
        dots = (self._ring @ flat)[idx]              # Σ_i x_i(o) · x_i(k), one GEMV
        if self.kind == "msd":                   # Σ |a − b|² = Σ a² + Σ b² − 2 Σ a·b
            val = np.maximum(self._norm2[idx] + norm2 - 2.0 * dots, 0.0) / self._n_atoms
        else:
            val = dots / self._n_atoms
        lag = k - self._origin[idx]
        np.add.at(self.total, lag, val)
        np.add.at(self.count, lag, 1.0)
        same = self.segment(self._origin[idx]) == self.segment(k)
        b = int(self.segment(k))
        np.add.at(self.block[b], lag[same], val[same])
        np.add.at(self.block_count[b], lag[same], 1.0)

    def mean(self) -> np.ndarray:
        """⟨φ⟩ per lag [max_lag + 1] (NaN where no pair was seen)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.total / self.count

    def block_means(self) -> np.ndarray:
        """⟨φ⟩ per segment and lag [n_blocks, max_lag + 1] (NaN where empty)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.block / self.block_count


def fit_diffusion(t, msd_values, window) -> tuple[float, float, float]:
    """Least-squares MSD = 6 D t + b on ``window`` = (t₀, t₁) ps; returns (D Å²/ps, b Å²,
    α = d ln MSD / d ln t there). ``ValueError`` when fewer than 3 lags lie in the window."""
    t, y = np.asarray(t, float), np.asarray(msd_values, float)
    sel = (t >= window[0] - 1e-9) & (t <= window[1] + 1e-9) & np.isfinite(y)
    if sel.sum() < 3:
        raise ValueError(f"the MSD fit window {window[0]:g}-{window[1]:g} ps holds "
                         f"{int(sel.sum())} "
                         "lags (need >= 3); widen --fit or use more frames")
    slope, intercept = np.polyfit(t[sel], y[sel], 1)
    pos = sel & (t > 0) & (y > 0)
    alpha = float("nan")
    if pos.sum() >= 2:
        alpha = float(np.polyfit(np.log(t[pos]), np.log(y[pos]), 1)[0])
    return float(slope / 6.0), float(intercept), alpha


@dataclass
class MSDResult:
    """t [L + 1] lag times (ps); msd [L + 1] (Å²); D, D_err (Å²/ps); fit window (ps);
    intercept (Å²); alpha; block_d [B] (Å²/ps); n_frames, n_atoms, dt (ps)."""

    t: np.ndarray
    msd: np.ndarray
    D: float
    D_err: float
    fit: tuple
    intercept: float
    alpha: float
    block_d: np.ndarray
    n_frames: int
    n_atoms: int
    dt: float
    notes: list = field(default_factory=list)


def _window(traj: Trajectory, frames, max_lag, origins, n_blocks):
    dt = traj.frame_spacing(frames)
    n = len(frames)
    lag = n // 2 if max_lag is None else int(round(max_lag / dt))
    if not 1 <= lag <= n - 1:
        raise ValueError(f"--max-lag must be between {dt:g} and {(n - 1) * dt:g} ps for "
                         f"{n} frames {dt:g} ps apart, got {max_lag}")
    every = max(1, -(-lag // max(1, int(origins))))
    return dt, lag, every


def msd(traj: Trajectory, frames, atoms, masses=None, fit=None, max_lag=None, blocks: int = 5,
        origins: int = ORIGINS, remove_drift: bool = True, show_progress: bool = True) -> MSDResult:
    """MSD of ``atoms`` (index array) and the diffusion coefficient (module docstring).

    masses : float [N_all] amu, weights of the centre of mass (equal weights if None).
    fit : (t₀, t₁) ps; default 20 %–80 % of one segment (length n_frames / blocks).
    max_lag : ps, default half the selection. blocks : B segments for σ_D."""
    frames = np.asarray(frames)
    dt, lag, every = _window(traj, frames, max_lag, origins, blocks)
    n = len(frames)
    if blocks < 1:
        raise ValueError(f"--blocks must be >= 1, got {blocks}")
    if fit is None:
        span = min((n // blocks - 1) * dt, lag * dt)
        fit = (0.2 * span, 0.8 * span)
    fit = (float(fit[0]), float(fit[1]))
    if not 0 <= fit[0] < fit[1] <= lag * dt + 1e-9:
        raise ValueError(f"--fit {fit[0]:g} {fit[1]:g} must satisfy 0 <= start < end <= max lag "
                         f"{lag * dt:g} ps")
    notes = []
    n_blocks = int(blocks)   # segments of n // B frames must each hold the fit window
    while n_blocks > 1 and (n // n_blocks - 1) * dt < fit[1] - 1e-9:
        n_blocks -= 1
    if n_blocks < blocks:
        notes.append(f"{n_blocks} segment(s) instead of {blocks}: a segment must hold the "
                     f"{fit[1]:g} ps fit window")
    corr = LagCorrelator("msd", lag, n, every, n_blocks)
    atoms = np.asarray(atoms)
    w = None if masses is None else np.asarray(masses, float) / float(np.sum(masses))
    prev = unwrapped = com0 = None
    k = 0
    for chunk in progress(traj.chunks(frames), n, "MSD", show_progress):
        for f in range(len(chunk)):
            x = chunk.positions[f]
            if prev is None:
                unwrapped = x.copy()
            else:
                delta = x - prev
                if chunk.boxes is not None:
                    h = chunk.boxes[f]
                    delta -= np.round(delta @ np.linalg.inv(h)) @ h
                unwrapped += delta
            prev = x
            u = unwrapped[atoms]
            if remove_drift:
                com = unwrapped.mean(axis=0) if w is None else w @ unwrapped
                com0 = com if com0 is None else com0
                u = u - (com - com0)
            corr.add(k, u)
            k += 1
    t = np.arange(lag + 1) * dt
    curve = corr.mean()
    d, b, alpha = fit_diffusion(t, curve, fit)
    block_d = np.array([fit_diffusion(t, m, fit)[0] for m in corr.block_means()[:n_blocks]]) \
        if n_blocks >= 2 else np.array([])
    d_err = float("nan")
    if len(block_d) >= 2:
        d_err = float(np.std(block_d, ddof=1) / np.sqrt(len(block_d)))
    if not np.isfinite(d_err):
        notes.append("no uncertainty: fewer than 2 segments (use a longer trajectory or a "
                     "shorter --fit window)")
    if not abs(alpha - 1.0) <= 0.2:
        notes.append(f"warning: MSD ~ t^{alpha:.2f} on the fit window, not diffusive (t^1): "
                     "D is not reliable; fit a later window (--fit) of a longer trajectory")
    return MSDResult(t=t, msd=curve, D=d, D_err=d_err, fit=fit, intercept=b, alpha=alpha,
                     block_d=block_d, n_frames=n, n_atoms=len(atoms), dt=dt, notes=notes)


@dataclass
class VACFResult:
    """t [L + 1] (ps); c [L + 1] ((Å/ps)²); freq [K] (THz); spectrum [K] (Å²/ps);
    D_gk (Å²/ps) = ⅓ ∫₀^τmax C dτ; n_frames, n_atoms, dt (ps)."""

    t: np.ndarray
    c: np.ndarray
    freq: np.ndarray
    spectrum: np.ndarray
    D_gk: float
    n_frames: int
    n_atoms: int
    dt: float


def power_spectrum(c, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """(ν THz, S(ν) Å²/ps): Hann-windowed cosine transform of C(τ), τ = 0..L frames apart
    by ``dt`` ps (module docstring)."""
    c = np.asarray(c, float)
    lags = len(c) - 1
    window = np.cos(0.5 * np.pi * np.arange(lags + 1) / max(lags, 1)) ** 2
    cw = c * window
    sym = np.concatenate([cw, cw[-2:0:-1]])             # C(−τ) = C(τ)
    spec = np.fft.rfft(sym).real * dt
    return np.fft.rfftfreq(len(sym), dt), spec


def vacf(traj: Trajectory, frames, atoms, max_lag=None, origins: int = ORIGINS,
         show_progress: bool = True) -> VACFResult:
    """Velocity autocorrelation of ``atoms`` and its spectrum (module docstring); needs a
    trajectory with velocities. max_lag : ps, default half the selection."""
    frames = np.asarray(frames)
    if not traj.has_velocities:
        raise ValueError(f"{traj.path}: trajectory has no velocities (dpengine run: set "
                         "[output] velocities = true)")
    dt, lag, every = _window(traj, frames, max_lag, origins, 1)
    corr = LagCorrelator("dot", lag, len(frames), every)
    atoms = np.asarray(atoms)
    k = 0
    for chunk in progress(traj.chunks(frames, velocities=True, positions=False), len(frames),
                          "VACF", show_progress):
        for f in range(len(chunk)):
            corr.add(k, chunk.velocities[f, atoms])
            k += 1
    t = np.arange(lag + 1) * dt
    c = corr.mean()
    freq, spec = power_spectrum(c, dt)
    d_gk = float(np.trapezoid(c, t) / 3.0)
    return VACFResult(t=t, c=c, freq=freq, spectrum=spec, D_gk=d_gk, n_frames=len(frames),
                      n_atoms=len(atoms), dt=dt)
