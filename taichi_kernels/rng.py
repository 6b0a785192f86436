"""Counter-based random numbers: Philox-4x32-10 (Salmon et al., SC'11) as Taichi functions.

A draw is a pure function of (key, counter): no generator state, so a kernel gives the
same numbers whatever the thread count or launch order, and a restarted run continues
the stream exactly. The engine's convention (see ``dpengine.rng`` for the host twin):

* key     = (seed & 0xffffffff, seed >> 32)
* counter = (atom, stream, step & 0xffffffff, step >> 32)
* the four 32-bit output words are the "components": uniforms u_k = (w_k + 0.5) / 2^32 in
  (0, 1); Box–Muller turns (u_0, u_1) and (u_2, u_3) into four standard normals, of which
  the integrators use the first three as the x, y, z noise of one atom.

``stream`` separates the independent uses inside one step (see ``dpengine.rng.STREAMS``).
Verified against the Random123 known-answer vectors (tests/physics/test_rng.py).
"""
import math

import taichi as ti

from taichi_kernels.launch import fast_launch

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
TWO_PI = 2.0 * math.pi
INV_2_32 = 1.0 / 4294967296.0


@ti.func
def _mulhilo(a, b):
    """(high, low) 32-bit words of the 64-bit product a·b of two u32."""
    p = ti.cast(a, ti.u64) * ti.cast(b, ti.u64)
    return ti.cast(p >> ti.u64(32), ti.u32), ti.cast(p & ti.u64(0xFFFFFFFF), ti.u32)


@ti.func
def philox4x32(c0, c1, c2, c3, k0, k1):
    """Philox-4x32 with 10 rounds: four u32 counter words and two u32 key words → 4 u32."""
    for _ in ti.static(range(10)):
        hi0, lo0 = _mulhilo(ti.u32(PHILOX_M0), c0)
        hi1, lo1 = _mulhilo(ti.u32(PHILOX_M1), c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = k0 + ti.u32(PHILOX_W0)
        k1 = k1 + ti.u32(PHILOX_W1)
    return c0, c1, c2, c3


@ti.func
def _uniform(w):
    """u32 → float64 uniform in the open interval (0, 1)."""
    return (ti.cast(w, ti.f64) + 0.5) * INV_2_32


@ti.func
def normal4(s0, s1, t0, t1, atom, stream):
    """Four standard normals for key (s0, s1) = seed words and counter
    (atom, stream, t0, t1) with (t0, t1) = step words; all arguments u32-convertible.
    Returns a ti.Vector of 4 float64."""
    w0, w1, w2, w3 = philox4x32(ti.cast(atom, ti.u32), ti.cast(stream, ti.u32),
                                ti.cast(t0, ti.u32), ti.cast(t1, ti.u32),
                                ti.cast(s0, ti.u32), ti.cast(s1, ti.u32))
    r0 = ti.sqrt(-2.0 * ti.log(_uniform(w0)))
    r1 = ti.sqrt(-2.0 * ti.log(_uniform(w2)))
    a0 = TWO_PI * _uniform(w1)
    a1 = TWO_PI * _uniform(w3)
    return ti.Vector([r0 * ti.cos(a0), r0 * ti.sin(a0), r1 * ti.cos(a1), r1 * ti.sin(a1)])


@fast_launch
@ti.kernel
def philox_words(counters: ti.types.ndarray(dtype=ti.i64, ndim=2),
                 out: ti.types.ndarray(dtype=ti.i64, ndim=2)):
    """Raw Philox words (for tests): counters int64 [n, 6] = (c0, c1, c2, c3, k0, k1),
    out int64 [n, 4]."""
    for r in range(counters.shape[0]):
        w0, w1, w2, w3 = philox4x32(ti.cast(counters[r, 0], ti.u32), ti.cast(counters[r, 1], ti.u32),
                                    ti.cast(counters[r, 2], ti.u32), ti.cast(counters[r, 3], ti.u32),
                                    ti.cast(counters[r, 4], ti.u32), ti.cast(counters[r, 5], ti.u32))
        out[r, 0] = ti.cast(w0, ti.i64)
        out[r, 1] = ti.cast(w1, ti.i64)
        out[r, 2] = ti.cast(w2, ti.i64)
        out[r, 3] = ti.cast(w3, ti.i64)


@fast_launch
@ti.kernel
def atom_normals(key: ti.types.ndarray(dtype=ti.i64, ndim=1), stream: ti.i32,
                 out: ti.types.ndarray(dtype=ti.f64, ndim=2)):
    """The four normals of every atom i < out.shape[0] for (key, stream) (for tests)."""
    for i in range(out.shape[0]):
        g = normal4(key[0], key[1], key[2], key[3], i, stream)
        for c in ti.static(range(4)):
            out[i, c] = g[c]
