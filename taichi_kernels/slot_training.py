"""Slot sums of training's fast path (tools/train/fastpath.py), read straight from the rows.

Embedding net k runs once per distinct input; its rows hold G [U, M] and G' = dG/dŝ [U, M]
(``store`` = [G; G'] flattened from [2, U, M]) and slot p = (atom a, column w) of the net's
block reads row index[a, w]. With r̂ [A, W, 4] the slots' environment rows and
Q = ∂E/∂T [A, 4, M]:

    T[a, c, m]  = Σ_w r̂[a, w, c] G[row, m]                                  (slot_tensor)
    g[a, w, c]  = Σ_m Q[a, c, m] G[row, m] + δ_c0 Σ_m (Σ_c' r̂[a, w, c'] Q[a, c', m]) G'[row, m]
                                                                             (slot_gradient)
and the adjoints, with ḡ = ∂L/∂g and T̄ = ∂L/∂T:

    Q̄[a, c, m]  = Σ_w (ḡ[a, w, c] G[row, m] + ḡ[a, w, 0] r̂[a, w, c] G'[row, m])
                                                              (slot_tensor, tangent=True)
    Ḡ[r, m]     = Σ_{slots of r} Σ_c (ḡ[a, w, c] Q[a, c, m] + r̂[a, w, c] T̄[a, c, m])
    Ḡ'[r, m]    = Σ_{slots of r} ḡ[a, w, 0] Σ_c r̂[a, w, c] Q[a, c, m]      (row_adjoint)

These replace a gather of G and G' to the slots ([A, W, M] each), batched products with
N = 4 and a scatter back — memory-bound passes over slot-sized arrays. Here every kernel
reads the rows in place: one thread per atom (or per row), the channel loop innermost over
contiguous values in thread-local accumulators, which the CPU compiler vectorises (the
arrays are passed flat and indexed as base + m for that reason; see taichi_kernels.tabulate;
``row_adjoint``, whose four loads per channel the compiler left scalar that way, reads
vectors of channels instead).
The rows' adjoint visits each row's slots through a row → slots list (``row_start``
[U + 1], ``row_slots`` [A·W] flat slot numbers a·W + w sorted by row): no atomics. CPU
kernels (one thread holds M-long accumulators); training on a GPU keeps the torch path.
Sums in the precision ``real`` of the arrays.
"""
import functools

import taichi as ti

from taichi_kernels import spread
from taichi_kernels.launch import fast_launch


@fast_launch
@ti.kernel
def slot_tensor(coef: ti.types.ndarray(ndim=3), rhat: ti.types.ndarray(ndim=3), col0: ti.i32,
                index: ti.types.ndarray(ndim=2), store: ti.types.ndarray(ndim=1),
                n_rows: ti.i32, out: ti.types.ndarray(ndim=3), per_atom: ti.template(),
                real: ti.template(), tangent: ti.template()):
    """out [A, 4, M] = Σ_w r̂[a, col0 + w, c] G[index[a, w], m] (T; ``coef`` unused) or, with
    ``tangent``, Σ_w coef[a, w, c] G[index[a, w], m] + coef[a, w, 0] r̂[a, col0 + w, c]
    G'[index[a, w], m] (Q̄, coef = ḡ [A, W, 4]; slots with ḡ = 0 skipped). r̂ [A, ≥ col0 + W,
    4]: the net's block starts at column col0; store: flat [2, n_rows, M]; per_atom = M."""
    stride = spread(index.shape[0])
    for idx in range(index.shape[0] * stride):
        if idx % stride == 0:
            a = idx // stride
            acc = [ti.Vector.zero(real, per_atom) for _ in ti.static(range(4))]
            for w in range(index.shape[1]):
                base = ti.cast(index[a, w], ti.i32) * per_atom
                if ti.static(tangent):      # one loop over m for G and G'
                    x = [ti.cast(coef[a, w, c], real) for c in ti.static(range(4))]
                    if x[0] != 0 or x[1] != 0 or x[2] != 0 or x[3] != 0:   # ḡ = 0: empty
                        y = [x[0] * ti.cast(rhat[a, col0 + w, c], real)
                             for c in ti.static(range(4))]
                        tan = n_rows * per_atom + base
                        for m in range(per_atom):
                            g = store[base + m]
                            dg = store[tan + m]
                            for c in ti.static(range(4)):
                                acc[c][m] += x[c] * g + y[c] * dg
                else:
                    x = [ti.cast(rhat[a, col0 + w, c], real) for c in ti.static(range(4))]
                    for m in range(per_atom):
                        g = store[base + m]
                        for c in ti.static(range(4)):
                            acc[c][m] += x[c] * g
            for m in range(per_atom):
                for c in ti.static(range(4)):
                    out[a, c, m] = acc[c][m]


@fast_launch
@ti.kernel
def slot_gradient(q: ti.types.ndarray(ndim=1), rhat: ti.types.ndarray(ndim=3), col0: ti.i32,
                  index: ti.types.ndarray(ndim=2), store: ti.types.ndarray(ndim=1),
                  n_rows: ti.i32, n_channels: ti.i32, g: ti.types.ndarray(ndim=3),
                  real: ti.template()):
    """g [A, W, 4] = Q Gᵀ + ê₀ (r̂ᵀ Q G'ᵀ) per slot (r̂ from column col0 on, as in
    :func:`slot_tensor`); q: flat [A, 4, M], store flat [2, U, M]."""
    for a, w in ti.ndrange(index.shape[0], index.shape[1]):
        base = ti.cast(index[a, w], ti.i32) * n_channels
        tan = n_rows * n_channels + base
        qa = a * 4 * n_channels
        r = [ti.cast(rhat[a, col0 + w, c], real) for c in ti.static(range(4))]
        acc = ti.Vector.zero(real, 4)
        acc_t = ti.cast(0.0, real)
        for m in range(n_channels):
            qm = [q[qa + c * n_channels + m] for c in ti.static(range(4))]
            gm = store[base + m]
            for c in ti.static(range(4)):
                acc[c] += qm[c] * gm
            acc_t += (qm[0] * r[0] + qm[1] * r[1] + qm[2] * r[2] + qm[3] * r[3]) * store[tan + m]
        acc[0] += acc_t
        for c in ti.static(range(4)):
            g[a, w, c] = acc[c]


def _lanes(channels: int) -> int:
    """Channels per vector read: 4, else 2 or 1, whichever divides ``channels``."""
    return 4 if channels % 4 == 0 else 2 if channels % 2 == 0 else 1


def row_adjoint(rhat, col0: int, row_start, row_slots, n_rows: int, width: int, out,
                per_row: int, real, tbar=None, coef=None, q=None) -> None:
    """The rows' adjoint in out flat [2, U, M] (slots a·width + w of each row r listed by
    row_start/row_slots; per_row = M), one pass over each row's slots for both terms:

        Ḡ[r]  = Σ_{slots of r} (Σ_c r̂[a, col0 + w, c] T̄[a, c, :] + Σ_c ḡ[a, w, c] Q[a, c, :])
        Ḡ'[r] = Σ_{slots of r} ḡ[a, w, 0] Σ_c r̂[a, col0 + w, c] Q[a, c, :]

    with T̄ = ``tbar`` and ḡ, Q = ``coef``, ``q`` (flat [A, 4, M]; either term is left out
    when its arrays are None). Every row is written (0 for rows without slots). In the Q
    term, slots with ḡ = 0 (empty ones: ∂r̂/∂r = 0) are skipped.

    T̄ and Q are read as vectors of ``lanes`` channels (4, else 2 or 1, whichever divides
    M): the compiler turns the four loads of a vector into one wide load, which it does not
    for scalar loads at four computed offsets (those stay scalar; 2× slower here)."""
    lanes = _lanes(per_row)
    if tbar is None and q is None:
        raise ValueError("row_adjoint needs tbar, or coef and q")
    q_vec = None if q is None else q.view(-1, lanes)
    t_vec = None if tbar is None else tbar.view(-1, lanes)
    # a left-out term's arrays are not read: the other term's stand in for them
    _row_adjoint_kernel(lanes, real)(
        rhat if coef is None else coef, rhat, col0, t_vec if q_vec is None else q_vec,
        q_vec if t_vec is None else t_vec, row_start, row_slots, n_rows, width,
        out.view(-1, lanes), per_row // lanes, q is not None, tbar is not None)


@ti.func
def _combination(x: ti.template(), y: ti.template()):
    """Σ_c x[c] y[c] of four scalars x and four vectors y."""
    return x[0] * y[0] + x[1] * y[1] + x[2] * y[2] + x[3] * y[3]


@functools.cache
def _row_adjoint_kernel(lanes: int, real):
    """:func:`row_adjoint` for vectors of ``lanes`` channels of type ``real``."""
    channels = ti.types.vector(lanes, real)

    @fast_launch
    @ti.kernel
    def kernel(coef: ti.types.ndarray(ndim=3), rhat: ti.types.ndarray(ndim=3), col0: ti.i32,
               q: ti.types.ndarray(dtype=channels, ndim=1),
               tbar: ti.types.ndarray(dtype=channels, ndim=1),
               row_start: ti.types.ndarray(ndim=1), row_slots: ti.types.ndarray(ndim=1),
               n_rows: ti.i32, width: ti.i32, out: ti.types.ndarray(dtype=channels, ndim=1),
               groups: ti.template(), with_q: ti.template(), with_t: ti.template()):
        for r in range(n_rows):
            base = r * groups
            tan = n_rows * groups + base
            acc = ti.Matrix.zero(real, groups, lanes)
            acc_t = ti.Matrix.zero(real, groups, lanes)
            for k in range(row_start[r], row_start[r + 1]):
                p = ti.cast(row_slots[k], ti.i32)
                a = p // width
                w = p - a * width
                ya = a * 4 * groups
                rh = [ti.cast(rhat[a, col0 + w, c], real) for c in ti.static(range(4))]
                x = ti.Vector.zero(real, 4)                  # ḡ of the slot
                if ti.static(with_q):
                    for c in ti.static(range(4)):
                        x[c] = ti.cast(coef[a, w, c], real)
                if x[0] != 0 or x[1] != 0 or x[2] != 0 or x[3] != 0:   # ḡ ≠ 0: both terms
                    u = [x[0] * rh[c] for c in ti.static(range(4))]
                    for g in range(groups):     # one loop over the channels for Ḡ and Ḡ'
                        qg = [q[ya + c * groups + g] for c in ti.static(range(4))]
                        acc[g, :] += _combination(x, qg)
                        acc_t[g, :] += _combination(u, qg)
                        if ti.static(with_t):
                            acc[g, :] += _combination(
                                rh, [tbar[ya + c * groups + g] for c in ti.static(range(4))])
                elif ti.static(with_t):
                    for g in range(groups):
                        acc[g, :] += _combination(
                            rh, [tbar[ya + c * groups + g] for c in ti.static(range(4))])
            for g in range(groups):
                out[base + g] = acc[g, :]
                out[tan + g] = acc_t[g, :]

    return kernel
