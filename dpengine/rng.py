"""The engine's counter-based random stream on the host (numpy twin of ``taichi_kernels.rng``).

Every random number of a run is a pure function of (seed, step, atom, stream, component):
Philox-4x32-10 with key = seed (64 bit) and counter = (atom, stream, step_lo, step_hi).
Per-atom noise (Langevin) is drawn inside Taichi kernels; the few global numbers of a
step (stochastic velocity rescaling, stochastic cell rescaling) are drawn here with
``atom`` = the index of the draw inside the step, so a restart that knows the step
continues the streams exactly and nothing depends on the thread count.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["STREAMS", "philox4x32", "key_tensor", "HostStream"]

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
_MASK = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)

#: Stream numbers (the second counter word) of each use; host streams have bit 31 set.
STREAMS = {
    "langevin": 1,          # BAOAB O step (per atom)
    "langevin_first": 2,    # OBABO first O half step (per atom)
    "langevin_second": 3,   # OBABO second O half step (per atom)
    "csvr_first": 0x80000001,
    "csvr_second": 0x80000002,
    "crescale": 0x80000010,
}


def philox4x32(c0, c1, c2, c3, k0, k1) -> np.ndarray:
    """Philox-4x32-10 on numpy arrays of counters/keys (broadcast); returns uint64 [..., 4]
    holding the four 32-bit output words."""
    c = [np.asarray(x, dtype=np.uint64) & _MASK for x in (c0, c1, c2, c3)]
    k0 = np.asarray(k0, dtype=np.uint64) & _MASK
    k1 = np.asarray(k1, dtype=np.uint64) & _MASK
    for _ in range(10):
        p0 = _M0 * c[0]
        p1 = _M1 * c[2]
        hi0, lo0 = p0 >> _SHIFT, p0 & _MASK
        hi1, lo1 = p1 >> _SHIFT, p1 & _MASK
        c = [hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0]
        k0 = (k0 + _W0) & _MASK
        k1 = (k1 + _W1) & _MASK
    return np.stack(np.broadcast_arrays(*c), axis=-1)


def _philox_scalar(c0: int, c1: int, c2: int, c3: int, k0: int, k1: int) -> tuple[int, ...]:
    """Philox-4x32-10 on Python integers (a few µs; numpy scalars are ~20x slower)."""
    m = 0xFFFFFFFF
    for _ in range(10):
        p0 = 0xD2511F53 * c0
        p1 = 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & m, (p0 >> 32) ^ c3 ^ k1, p0 & m
        k0 = (k0 + 0x9E3779B9) & m
        k1 = (k1 + 0xBB67AE85) & m
    return c0, c1, c2, c3


def key_words(seed: int, step: int) -> tuple[int, int, int, int]:
    """(seed_lo, seed_hi, step_lo, step_hi) as the Taichi kernels read them."""
    seed, step = int(seed), int(step)
    if seed < 0 or step < 0:
        raise ValueError(f"seed and step must be >= 0, got {seed}, {step}")
    return seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, step & 0xFFFFFFFF, (step >> 32) & 0xFFFFFFFF


def key_tensor(seed: int, step: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """int64 [4] tensor (seed_lo, seed_hi, step_lo, step_hi) for ``taichi_kernels.rng.normal4``."""
    words = key_words(seed, step)
    if out is None:
        return torch.tensor(words, dtype=torch.int64)
    for i, w in enumerate(words):
        out[i] = w
    return out


def uniforms(words: np.ndarray) -> np.ndarray:
    """uint64 words < 2^32 → float64 uniforms in (0, 1): (w + 0.5) / 2^32."""
    return (words.astype(np.float64) + 0.5) * (1.0 / 4294967296.0)


def normals(words: np.ndarray) -> np.ndarray:
    """Box–Muller on [..., 4] words → [..., 4] standard normals (the kernels' formula)."""
    u = uniforms(words)
    r0 = np.sqrt(-2.0 * np.log(u[..., 0]))
    r1 = np.sqrt(-2.0 * np.log(u[..., 2]))
    a0 = 2.0 * math.pi * u[..., 1]
    a1 = 2.0 * math.pi * u[..., 3]
    return np.stack([r0 * np.cos(a0), r0 * np.sin(a0), r1 * np.cos(a1), r1 * np.sin(a1)], -1)


def atom_normals(seed: int, step: int, stream: int, n_atoms: int) -> np.ndarray:
    """[n_atoms, 4] normals for (seed, step, atom, stream), as the kernels draw them."""
    s0, s1, t0, t1 = key_words(seed, step)
    words = philox4x32(np.arange(n_atoms, dtype=np.uint64), stream, t0, t1, s0, s1)
    return normals(words)


class HostStream:
    """Sequential draws for one (seed, step, stream): draw k uses counter atom = k // 4."""

    def __init__(self, seed: int, step: int, stream: int):
        self._words = key_words(seed, step)
        self._stream = int(stream)
        self._block = 0
        self._buffer: list[float] = []
        self._ubuffer: list[float] = []

    def _next_words(self) -> tuple[int, ...]:
        s0, s1, t0, t1 = self._words
        w = _philox_scalar(self._block, self._stream, t0, t1, s0, s1)
        self._block += 1
        return w

    def normal(self) -> float:
        """Standard normals, four per counter block, by the kernels' Box–Muller formula."""
        if not self._buffer:
            w = self._next_words()
            u = [(x + 0.5) * (1.0 / 4294967296.0) for x in w]
            r0 = math.sqrt(-2.0 * math.log(u[0]))
            r1 = math.sqrt(-2.0 * math.log(u[2]))
            a0, a1 = 2.0 * math.pi * u[1], 2.0 * math.pi * u[3]
            self._buffer = [r1 * math.sin(a1), r1 * math.cos(a1), r0 * math.sin(a0),
                            r0 * math.cos(a0)]
        return self._buffer.pop()

    def uniform(self) -> float:
        """Uniforms in (0, 1), four per counter block."""
        if not self._ubuffer:
            self._ubuffer = [(x + 0.5) * (1.0 / 4294967296.0) for x in self._next_words()[::-1]]
        return self._ubuffer.pop()

    def gamma(self, shape: float) -> float:
        """Gamma(shape, 1) by Marsaglia & Tsang (2000); shape > 0."""
        if shape <= 0:
            raise ValueError(f"gamma shape must be > 0, got {shape}")
        if shape < 1.0:  # G(a) = G(a + 1) · U^(1/a)
            return self.gamma(shape + 1.0) * self.uniform() ** (1.0 / shape)
        d = shape - 1.0 / 3.0
        c = 1.0 / math.sqrt(9.0 * d)
        while True:
            x = self.normal()
            v = 1.0 + c * x
            if v <= 0.0:
                continue
            v = v * v * v
            u = self.uniform()
            if math.log(u) < 0.5 * x * x + d - d * v + d * math.log(v):
                return d * v

    def chi_squared(self, dof: int) -> float:
        """Sum of ``dof`` squared standard normals (2·Gamma(dof/2)); 0 for dof = 0."""
        if dof <= 0:
            return 0.0
        if dof == 1:
            x = self.normal()
            return x * x
        return 2.0 * self.gamma(0.5 * dof)
