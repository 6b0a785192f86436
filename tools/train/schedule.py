"""Learning rate, loss prefactors, the loss itself and the frame sampler (DeePMD-kit semantics).

Learning rate (DeePMD-kit ``LearningRateExp``, stepped):
    lr(t) = max(lr₀ · r^⌊t/s⌋, lr_stop),   r = (lr_stop/lr₀)^(s/T)
T = number of steps, s = decay_steps (replaced by 100, or T//100 + 1 for short runs, when
s ≥ T, as DeePMD-kit does).

Loss (DeePMD-kit ``EnergyStdLoss``, ``intensive_ener_virial = false``), for a batch of B
frames of N atoms and prefactors p(t) = p_limit + (p_start − p_limit)·lr(t)/lr₀:
    L = p_e·⟨ΔE²⟩/N + p_f·⟨ΔF²⟩ + p_v·⟨ΔW²⟩/N
⟨ΔE²⟩ over frames (eV²), ⟨ΔF²⟩ over all 3NB components (eV²/Å²), ⟨ΔW²⟩ over 9B components
(eV²). Reported: rmse = √L, rmse_e = √⟨ΔE²⟩/N (eV/atom), rmse_f = √⟨ΔF²⟩ (eV/Å),
rmse_v = √⟨ΔW²⟩/N (eV/atom). A term is used when either of its prefactors is non-zero
(and, for the virial, when the system has virial data).
"""
from __future__ import annotations

import math

import numpy as np


class LearningRate:
    """DeePMD-kit's stepped exponential decay (see the module docstring)."""

    def __init__(self, start_lr: float, stop_lr: float, decay_steps: int, num_steps: int):
        self.start_lr, self.stop_lr = float(start_lr), float(stop_lr)
        self.decay_steps = int(decay_steps)
        if self.decay_steps >= num_steps:
            self.decay_steps = 100 if num_steps // 10 > 100 else num_steps // 100 + 1
        self.decay_rate = math.exp(math.log(max(self.stop_lr, 1e-10) / self.start_lr)
                                   / (num_steps / self.decay_steps)) if num_steps > 0 else 1.0

    def value(self, step: int) -> float:
        return max(self.start_lr * self.decay_rate ** (step // self.decay_steps), self.stop_lr)


def prefactor(start: float, limit: float, lr: float, lr0: float) -> float:
    """p(t) = p_limit + (p_start − p_limit)·lr(t)/lr₀."""
    return limit + (start - limit) * lr / lr0


def batch_size_for(spec, n_atoms: int, n_frames: int) -> int:
    """Frames per batch: an integer, ``"auto"`` (= ``"auto:32"``) or ``"auto:N"`` → ⌈N/atoms⌉.

    Never more than the system's frames.
    """
    if isinstance(spec, int):
        bs = spec
    else:
        target = int(spec.split(":")[1]) if ":" in spec else 32
        bs = max(1, -(-target // n_atoms))
    return max(1, min(bs, n_frames))


def energy_force_loss(pred: dict, batch, lr: float, cfg_loss: dict, lr0: float,
                      use_virial: bool):
    """(loss, metrics) for one batch; metrics are floats (rmse, rmse_e, rmse_f[, rmse_v])."""
    import torch

    n = batch.n_atoms
    pe = prefactor(cfg_loss["start_pref_e"], cfg_loss["limit_pref_e"], lr, lr0)
    pf = prefactor(cfg_loss["start_pref_f"], cfg_loss["limit_pref_f"], lr, lr0)
    pv = prefactor(cfg_loss["start_pref_v"], cfg_loss["limit_pref_v"], lr, lr0)
    loss = torch.zeros((), dtype=pred["energy"].dtype, device=pred["energy"].device)
    parts = {}
    if has_term(cfg_loss, "e"):
        l2 = torch.mean(torch.square(pred["energy"] - batch.energy))
        loss = loss + pe * l2 / n
        parts["rmse_e"] = l2.detach().sqrt() / n
    if has_term(cfg_loss, "f"):
        l2 = torch.mean(torch.square(pred["force"] - batch.force))
        loss = loss + pf * l2
        parts["rmse_f"] = l2.detach().sqrt()
    if use_virial and batch.virial is not None:
        l2 = torch.mean(torch.square(pred["virial"] - batch.virial))
        loss = loss + pv * l2 / n
        parts["rmse_v"] = l2.detach().sqrt() / n
    parts["rmse"] = loss.detach().sqrt()
    return loss, parts


def has_term(cfg_loss: dict, key: str) -> bool:
    """Whether the e/f/v term is in the loss (either of its prefactors non-zero)."""
    return cfg_loss[f"start_pref_{key}"] != 0.0 or cfg_loss[f"limit_pref_{key}"] != 0.0


class Sampler:
    """Chooses the system of each batch (probability ∝ its frames) and walks a shuffled frame
    order per system, reshuffled at the end of each pass. Restartable: :meth:`state` /
    :meth:`load_state` hold the generator and the per-system orders and positions."""

    def __init__(self, n_frames: list[int], batch_sizes: list[int], seed: int):
        self.n_frames, self.batch_sizes = list(n_frames), list(batch_sizes)
        weights = np.asarray(n_frames, dtype=np.float64)
        self.prob = weights / weights.sum()
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.order = [self.rng.permutation(n) for n in n_frames]
        self.pos = [0] * len(n_frames)

    def next(self) -> tuple[int, list[int]]:
        """(system index, frame indices) of the next batch."""
        k = int(self.rng.choice(len(self.n_frames), p=self.prob)) if len(self.n_frames) > 1 else 0
        bs = self.batch_sizes[k]
        if self.pos[k] + bs > self.n_frames[k]:
            self.order[k] = self.rng.permutation(self.n_frames[k])
            self.pos[k] = 0
        frames = self.order[k][self.pos[k]:self.pos[k] + bs].tolist()
        self.pos[k] += bs
        return k, frames

    def state(self) -> dict:
        return dict(rng=self.rng.bit_generator.state, order=[o.tolist() for o in self.order],
                    pos=list(self.pos))

    def load_state(self, state: dict) -> None:
        if len(state["order"]) != len(self.n_frames) or any(
                len(o) != n for o, n in zip(state["order"], self.n_frames)):
            raise ValueError("the checkpoint was made with other training data (system or frame "
                             "counts differ)")
        self.rng.bit_generator.state = state["rng"]
        self.order = [np.asarray(o, dtype=np.int64) for o in state["order"]]
        self.pos = list(state["pos"])
