"""Reference-potential kernels: Lennard-Jones pairs on the engine's neighbour list, and
harmonic springs tethering atoms to sites (the Einstein crystal).

Both write one float64 output buffer ``out`` [N + n_blocks + 1, 10] whose rows 0..N-1
hold, per atom i, (F_x, F_y, F_z, e_i, W_xx, W_yy, W_zz, W_xy, W_xz, W_yz) — force
(eV/Å), atomic energy (eV) and atomic virial (eV) — and whose LAST row receives the sums
of columns 3..9 (energy and virial), reduced in a fixed order (two stages, blocks of
``BLOCK`` rows) so that the result does not depend on the thread count.

Virial convention (dpengine.potential): W = −Σ_pairs r_ij ⊗ ∂E/∂r_ij.
"""
import taichi as ti

from taichi_kernels.launch import fast_launch

# No ``from __future__ import annotations`` here: Taichi reads the annotations as objects.
_F1 = ti.types.ndarray(dtype=ti.f64, ndim=1)
_F2 = ti.types.ndarray(dtype=ti.f64, ndim=2)
_I1 = ti.types.ndarray(dtype=ti.i32, ndim=1)
_I2 = ti.types.ndarray(dtype=ti.i32, ndim=2)
_I3 = ti.types.ndarray(dtype=ti.i32, ndim=3)

BLOCK = 64
N_COLS = 10
#: layout of the LJ ``table``: box (9, row-major), periodic flag, number of types, then
#: per type pair (a, b) at LJ_PAIRS + 4·(a·n_types + b): c12 = 4εσ¹², c6 = 4εσ⁶, r_c², shift
LJ_BOX, LJ_PERIODIC, LJ_NTYPES, LJ_PAIRS = 0, 9, 10, 11
#: layout of the springs ``table``: box − box₀ (9), then the spring constant of each type
SP_DBOX, SP_K = 0, 9


def out_rows(n_atoms: int) -> int:
    return n_atoms + (n_atoms + BLOCK - 1) // BLOCK + 1


@ti.func
def _reduce(out: ti.template(), n):
    """Columns 3..9 of out[0:n] summed (fixed order) into the last row."""
    nb = (n + BLOCK - 1) // BLOCK
    last = out.shape[0] - 1
    for b in range(nb):
        for c in ti.static(range(3, N_COLS)):
            acc = 0.0
            for i in range(b * BLOCK, ti.min(n, (b + 1) * BLOCK)):
                acc += out[i, c]
            out[n + b, c] = acc
    for _ in range(1):
        for c in ti.static(range(3, N_COLS)):
            acc = 0.0
            for b in range(nb):
                acc += out[n + b, c]
            out[last, c] = acc
        for c in ti.static(range(3)):
            out[last, c] = 0.0


@ti.func
def _pair_key(j, n0, n1, n2) -> ti.i64:
    """A total order on (neighbour index, image vector): j · 2²⁴ + packed (n + 128)."""
    return (ti.cast(j, ti.i64) << 24) | (ti.cast(n0 + 128, ti.i64) << 16) \
        | (ti.cast(n1 + 128, ti.i64) << 8) | ti.cast(n2 + 128, ti.i64)


@fast_launch
@ti.kernel
def pair_order(neighbors: _I2, images: _I3, counts: _I1, order: _I2):
    """order[i, :counts[i]] = the slots of row i sorted by (j, image): the canonical order in
    which ``lj_compute`` sums a row, so forces do not depend on where the Verlet list was
    last built (restarts rebuild it elsewhere). Run once per list build (insertion sort)."""
    for i in range(neighbors.shape[0]):
        cnt = counts[i]
        for q in range(cnt):
            order[i, q] = q
        for q in range(1, cnt):
            s = order[i, q]
            key = _pair_key(neighbors[i, s], images[i, s, 0], images[i, s, 1], images[i, s, 2])
            r = q - 1
            while r >= 0:
                t = order[i, r]
                if _pair_key(neighbors[i, t], images[i, t, 0], images[i, t, 1], images[i, t, 2]) <= key:
                    break
                order[i, r + 1] = t
                r -= 1
            order[i, r + 1] = s


@fast_launch
@ti.kernel
def lj_compute(pos: _F2, types: _I1, neighbors: _I2, images: _I3, counts: _I1, order: _I2,
               table: _F1, out: _F2):
    """Lennard-Jones u(r) = c12/r¹² − c6/r⁶ − shift for r < r_c over the FULL neighbour list
    (both i→j and j→i stored, images included; r_ij = x_j − x_i + n @ box).

    Per atom, every pair contributes half of its energy and virial:
        F_i = Σ_j u'(r) r̂_ij,   e_i = ½ Σ_j u(r),   W_i = −½ Σ_j (u'(r)/r) r_ij ⊗ r_ij.
    One thread per atom; each row is summed in the canonical (j, image) order given by
    ``order`` (``pair_order``), so the forces are bit-reproducible.
    """
    n = pos.shape[0]
    nt = ti.cast(table[LJ_NTYPES], ti.i32)
    for i in range(n):
        xi = ti.Vector([pos[i, 0], pos[i, 1], pos[i, 2]])
        h = ti.Matrix([[table[LJ_BOX + 0], table[LJ_BOX + 1], table[LJ_BOX + 2]],
                       [table[LJ_BOX + 3], table[LJ_BOX + 4], table[LJ_BOX + 5]],
                       [table[LJ_BOX + 6], table[LJ_BOX + 7], table[LJ_BOX + 8]]])
        periodic = table[LJ_PERIODIC] > 0.5
        row = LJ_PAIRS + 4 * nt * types[i]
        f = ti.Vector([0.0, 0.0, 0.0])
        e = 0.0
        w = ti.Vector([0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
        for qq in range(counts[i]):
            q = order[i, qq]
            j = neighbors[i, q]
            r = ti.Vector([pos[j, 0], pos[j, 1], pos[j, 2]]) - xi
            if periodic:
                img = ti.Vector([ti.cast(images[i, q, 0], ti.f64), ti.cast(images[i, q, 1], ti.f64),
                                 ti.cast(images[i, q, 2], ti.f64)])
                r += img @ h
            r2 = r.dot(r)
            base = row + 4 * types[j]
            if r2 < table[base + 2]:
                c12 = table[base]
                c6 = table[base + 1]
                ir2 = 1.0 / r2
                ir6 = ir2 * ir2 * ir2
                e += 0.5 * ((c12 * ir6 - c6) * ir6 - table[base + 3])
                fr = (12.0 * c12 * ir6 - 6.0 * c6) * ir6 * ir2   # −u'(r)/r
                f -= fr * r
                hf = 0.5 * fr
                w += hf * ti.Vector([r[0] * r[0], r[1] * r[1], r[2] * r[2],
                                     r[0] * r[1], r[0] * r[2], r[1] * r[2]])
        out[i, 0] = f[0]
        out[i, 1] = f[1]
        out[i, 2] = f[2]
        out[i, 3] = e
        for c in ti.static(range(6)):
            out[i, 4 + c] = w[c]
    _reduce(out, n)


@fast_launch
@ti.kernel
def springs_compute(pos: _F2, types: _I1, sites: _F2, table: _F1, out: _F2):
    """Harmonic tethers U = Σ_i ½ k_{t_i} |x_i − s_i|², sites s_i = r0_i + f0_i @ (box − box₀)
    (``sites`` [N, 6] = reference position r0 and its fractional coordinates f0 in the
    reference box, so the sites follow the cell affinely and equal r0 exactly while the box
    is unchanged). F_i = −k Δ_i, e_i = ½ k Δ_i², W_i = Δ_i ⊗ F_i."""
    n = pos.shape[0]
    for i in range(n):
        k = table[SP_K + types[i]]
        d = ti.Vector([0.0, 0.0, 0.0])
        for a in ti.static(range(3)):
            site = (sites[i, a] + sites[i, 3] * table[SP_DBOX + a] + sites[i, 4] * table[SP_DBOX + 3 + a]
                    + sites[i, 5] * table[SP_DBOX + 6 + a])
            d[a] = pos[i, a] - site
        f = -k * d
        out[i, 0] = f[0]
        out[i, 1] = f[1]
        out[i, 2] = f[2]
        out[i, 3] = 0.5 * k * d.dot(d)
        out[i, 4] = d[0] * f[0]
        out[i, 5] = d[1] * f[1]
        out[i, 6] = d[2] * f[2]
        out[i, 7] = d[0] * f[1]
        out[i, 8] = d[0] * f[2]
        out[i, 9] = d[1] * f[2]
    _reduce(out, n)
