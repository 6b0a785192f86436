"""Taichi kernels of dpengine. Nothing here calls ti.init; callers do (dpengine.backend)."""
import taichi as ti

#: Taichi 1.7 runs a top-level range-for of fewer than 1,024 iterations on one CPU thread
#: (measured: 512 iterations of equal work serial, 1,024 on both threads, whatever
#: block_dim or parallelize say). Per-atom loops of small boxes are stretched to this many.
MIN_PARALLEL_ITERATIONS = 2048


@ti.func
def spread(n: ti.i32) -> ti.i32:
    """Stride s ≥ 1 such that a loop over n·s iterations, doing atom i = idx // s's work
    when idx % s == 0, has at least MIN_PARALLEL_ITERATIONS iterations (s = 1 for n ≥ that)."""
    return ti.max(1, (MIN_PARALLEL_ITERATIONS + n - 1) // ti.max(n, 1))


@ti.func
def filled_end(type_counts: ti.template(), sec: ti.template(), i: ti.i32, t: ti.i32) -> ti.i32:
    """One past the last filled slot of block t (slots sec[t] … sec[t+1]−1) of atom i: its
    neighbours of type t, at most the block's sel, are stored first."""
    return sec[t] + ti.min(type_counts[i, t], sec[t + 1] - sec[t])
