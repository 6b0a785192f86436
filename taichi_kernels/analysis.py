"""Taichi kernels of the trajectory analyses (owner: ``dpengine_tools.analysis``).

Three histogram kernels, each ONE launch per call:

* :func:`pair_histogram_frames` — radial pair histogram of a chunk of F frames by direct
  enumeration of all A–B pairs (O(N_A N_B) per frame, no neighbour list). For frame f with
  cell rows ``H_f`` (Å) and fractional coordinates ``s = x H_f⁻¹``, the pair vector of
  ``(i, j)`` through image ``n`` is ``r = (s_j − s_i + n) H_f``. Its component along the
  unit normal of cell face d is ``(s_j − s_i + n)_d w_d`` with ``w_d`` the perpendicular
  width, so ``|r| < r_max`` needs ``|Δs_d + n_d| < r_max / w_d =: ρ_d``: the only
  candidate is ``n_d = ceil(−ρ_d − Δs_d)``, rejected when ``Δs_d + n_d ≥ ρ_d``. With
  ``r_max ≤ min_d w_d / 2`` (``ρ_d ≤ 1/2``) that open interval holds at most one integer
  and at most one image of a pair lies within ``r_max`` (two images differ by a lattice
  vector of length ≥ min_d w_d), so every pair is counted exactly once, in any triclinic
  cell. One thread per (frame, atom i); j runs serially.
* :func:`pair_histogram_nlist` — the same histogram from a full Verlet list of
  :class:`dpengine.neighbor.NeighborList` (cell lists; O(N) per frame, for large systems).
* :func:`angle_histogram_nlist` — the bond-angle histogram of triplets j–i–k with both
  ``|r_ij|`` and ``|r_ik|`` below a cutoff, from a Verlet list.

Pair histograms are int32 counts (exact, order-independent integer atomics), kept per
frame so that the caller can weight frames (by their volume, for NPT).
No ``ti.init`` here: callers run ``dpengine.backend.init_taichi`` first. Arguments are
torch tensors or numpy arrays (``ti.types.ndarray``).
"""

import taichi as ti

from taichi_kernels.launch import fast_launch

# No ``from __future__ import annotations``: Taichi reads the annotations as objects.
_F1 = ti.types.ndarray(dtype=ti.f64, ndim=1)
_F2 = ti.types.ndarray(dtype=ti.f64, ndim=2)
_F3 = ti.types.ndarray(dtype=ti.f64, ndim=3)
_I1 = ti.types.ndarray(dtype=ti.i32, ndim=1)
_I2 = ti.types.ndarray(dtype=ti.i32, ndim=2)
_I3 = ti.types.ndarray(dtype=ti.i32, ndim=3)

# columns of ``geom`` in pair_histogram_frames
G_RHO, G_RMAX = 0, 3


@fast_launch
@ti.kernel
def pair_histogram_frames(frac_a: _F3, frac_b: _F3, boxes: _F3, geom: _F2, same: ti.i32,
                          hist: _I2):
    """Radial histogram of A–B pairs, per frame, over a chunk of frames (all pairs).

    frac_a  float64 [F, N_A, 3]  fractional coordinates of the A atoms (any real values)
    frac_b  float64 [F, N_B, 3]  fractional coordinates of the B atoms
    boxes   float64 [F, 3, 3]    cell vectors as rows, Å
    geom    float64 [F, 4]       per frame: ρ_d = r_max / w_d (3), r_max (Å)
    same    1 if A and B are the same atoms: pairs i < j, each counted twice (ordered pairs)
    hist    int32 [F, n_bins]    in/out: += ordered pair counts of frame f; bin k covers
                                 [k, k + 1) · r_max / n_bins (integer atomics: one
                                 ``lock xadd`` per pair; the caller weights frames)
    """
    n_frames = frac_a.shape[0]
    n_a = frac_a.shape[1]
    n_b = frac_b.shape[1]
    n_bins = hist.shape[1]
    for f, i in ti.ndrange(n_frames, n_a):
        rho = ti.Vector([geom[f, G_RHO], geom[f, G_RHO + 1], geom[f, G_RHO + 2]])
        rmax = geom[f, G_RMAX]
        inv_dr = n_bins / rmax
        rmax2 = rmax * rmax
        si = ti.Vector([frac_a[f, i, 0], frac_a[f, i, 1], frac_a[f, i, 2]])
        mult = 1
        j0 = 0
        if same == 1:
            mult = 2
            j0 = i + 1
        for j in range(j0, n_b):
            ok = True
            ds = ti.Vector([0.0, 0.0, 0.0])
            for d in ti.static(range(3)):
                s = frac_b[f, j, d] - si[d]
                ds[d] = s + ti.ceil(-rho[d] - s)
                if ds[d] >= rho[d]:
                    ok = False
            if ok:
                r2 = 0.0
                for x in ti.static(range(3)):
                    rx = ds[0] * boxes[f, 0, x] + ds[1] * boxes[f, 1, x] + ds[2] * boxes[f, 2, x]
                    r2 += rx * rx
                if r2 < rmax2:
                    k = ti.min(ti.cast(ti.sqrt(r2) * inv_dr, ti.i32), n_bins - 1)
                    ti.atomic_add(hist[f, k], mult)


@ti.func
def _pair_vector(pos: ti.template(), box: ti.template(), neighbors: ti.template(),
                 images: ti.template(), i: ti.i32, slot: ti.i32):
    """r_ij = x_j − x_i + n @ box for slot ``slot`` of atom i's Verlet row (Å)."""
    j = neighbors[i, slot]
    r = ti.Vector([0.0, 0.0, 0.0])
    for x in ti.static(range(3)):
        r[x] = (pos[j, x] - pos[i, x] + images[i, slot, 0] * box[0, x]
                + images[i, slot, 1] * box[1, x] + images[i, slot, 2] * box[2, x])
    return r


@fast_launch
@ti.kernel
def pair_histogram_nlist(pos: _F2, box: _F2, neighbors: _I2, images: _I3, counts: _I1,
                         is_a: _I1, is_b: _I1, params: _F1, hist: _I1):
    """Radial histogram of ordered A–B pairs from a full Verlet list (one frame).

    pos        float64 [N, 3]     positions the list was built for, Å
    box        float64 [3, 3]     cell vectors as rows, Å
    neighbors, images, counts     the list (see ``dpengine.neighbor.NeighborList``)
    is_a, is_b int32 [N]          1 for the atoms of type A / B (centres / partners)
    params     float64 [1]        r_max, Å
    hist       int32 [n_bins]     in/out: += ordered pair counts
    """
    n_bins = hist.shape[0]
    rmax = params[0]
    inv_dr = n_bins / rmax
    for i in range(pos.shape[0]):
        if is_a[i] == 1:
            for slot in range(counts[i]):
                j = neighbors[i, slot]
                if is_b[j] == 1:
                    r = _pair_vector(pos, box, neighbors, images, i, slot).norm()
                    if r < rmax:
                        ti.atomic_add(hist[ti.min(ti.cast(r * inv_dr, ti.i32), n_bins - 1)], 1)


@fast_launch
@ti.kernel
def angle_histogram_nlist(pos: _F2, box: _F2, neighbors: _I2, images: _I3, counts: _I1,
                          is_centre: _I1, is_j: _I1, is_k: _I1, params: _F1, hist: _F1,
                          per_centre: _F1):
    """Histogram of the angle θ_jik = arccos(r_ij · r_ik / (|r_ij| |r_ik|)) (one frame).

    Every unordered pair of distinct list entries {a, b} of a centre i (``is_centre``) with
    ``|r_ia|, |r_ib| < r_c`` and types (J, K) or (K, J) counts once; an atom seen through
    two images counts as two entries.

    params      float64 [1]   r_c, Å
    hist        float64 [n_bins] in/out: += counts; bin k covers [k, k + 1) · 180° / n_bins
    per_centre  float64 [1]   in/out: += number of triplets (to normalise per centre)
    """
    n_bins = hist.shape[0]
    rc2 = params[0] * params[0]
    for i in range(pos.shape[0]):
        if is_centre[i] == 1:
            for a in range(counts[i]):
                ja = neighbors[i, a]
                if is_j[ja] == 1 or is_k[ja] == 1:
                    ra = _pair_vector(pos, box, neighbors, images, i, a)
                    if ra.norm_sqr() < rc2:
                        for b in range(a + 1, counts[i]):
                            jb = neighbors[i, b]
                            jk = is_j[ja] == 1 and is_k[jb] == 1
                            kj = is_k[ja] == 1 and is_j[jb] == 1
                            if jk or kj:
                                rb = _pair_vector(pos, box, neighbors, images, i, b)
                                if rb.norm_sqr() < rc2:
                                    c = ra.dot(rb) / ti.sqrt(ra.norm_sqr() * rb.norm_sqr())
                                    c = ti.min(1.0, ti.max(-1.0, c))
                                    theta = ti.acos(c) * 57.29577951308232
                                    k = ti.min(ti.cast(theta / 180.0 * n_bins, ti.i32), n_bins - 1)
                                    ti.atomic_add(hist[k], 1.0)
                                    ti.atomic_add(per_centre[0], 1.0)
