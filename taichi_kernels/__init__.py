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
