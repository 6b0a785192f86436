"""Taichi kernels of the cell-list Verlet neighbour list (owner: ``dpengine.neighbor``).

One build is ONE kernel launch, :func:`build_verlet`, whose top-level loops run in
order (Taichi puts a barrier between consecutive top-level loops):

1. zero the per-cell counters;
2. bin the atoms: fractional coordinates ``s = (x - origin) @ inv``, periodic wrap
   ``f = floor(s)``, ``s_w = s - f``, cell ``c_d = min(floor(s_w,d * n_d), n_d - 1)``,
   wrapped Cartesian position ``x_w = x - f @ box``; an atomic ticket gives each atom
   its slot inside its cell (counting sort, pass 1);
3. exclusive prefix sum of the cell counts -> ``cell_start`` (two-level block scan:
   parallel block sums, a serial scan over ``ceil(n_cell / block)`` block totals, a
   parallel in-block scan), so the serial part stays O(sqrt(n_cell));
4. scatter the atoms into cell order (counting sort, pass 2);
5. insertion-sort the atom indices inside every cell: the atomic tickets are
   nondeterministic on parallel hardware, the sort makes the list, hence the order of
   force summation, bit-reproducible;
6. gather wrapped positions and wrap counts into cell order (contiguous inner loop);
7. the Verlet build, one thread per atom ``i``: for cell offsets ``o_d in [-k_d, k_d]``
   the unwrapped cell ``u = c_i + o`` is cell ``u mod n`` seen through the cell image
   ``m = floor(u / n)``. Offsets whose slab (or, for mutually orthogonal cell vectors,
   whose cell) lies farther than ``r_list`` from ``x_i`` are skipped. A candidate ``j`` is
   a neighbour when ``|x_w,j + m @ box - x_w,i| < r_list`` and is stored with the image
   vector ``n = m + f_i - f_j``, so that ``r_ij = x_j - x_i + n @ box`` holds for the
   UNWRAPPED positions the caller passed. A row longer than the capacity keeps counting
   without writing; the header's ``STAT`` slot receives the atomic max of the true row
   length so the caller can grow the capacity and build again.

Open boundaries use the same kernel with ``periodic = 0``: the grid spans the bounding
box (``origin`` = its lower corner, ``inv = diag(1 / L)``), fractional coordinates are
clamped instead of wrapped, out-of-range cells are skipped and all images are zero.

Arguments are packed into few tensors because every argument of a Taichi call costs
Python time on top of the launch itself (measured on the 2-core CPU: ~20 µs per tensor
argument, a few µs per scalar):

* ``geom``  float64 [9, 3]: rows 0-2 box (cell vectors, Å), 3-5 inv(box) (1/Å),
  6 origin (Å), 7 cell widths w_d / n_d (Å), 8 = (r_list², r_list² · (1 + 1e-10), 0);
* ``ints``  int32 [HEADER + 2 n_cell + 1 + n_block]: the header (indices below), then
  the cell counts, the cell starts (n_cell + 1) and the block sums;
* ``iwork`` int32 [N, 9]: per atom i: cell, ticket, wrap count f_i (3); per sorted slot
  p: atom index, wrap count (3);
* ``fwork`` float64 [N, 9]: per atom: wrapped position (3), wrapped fractional
  coordinate (3); per sorted slot: wrapped position (3).

All arrays are torch tensors passed as ``ti.types.ndarray`` (zero copy on CPU and CUDA).
"""

import taichi as ti

from taichi_kernels.launch import fast_launch

# No ``from __future__ import annotations`` here: Taichi reads the annotations as objects.
_F2 = ti.types.ndarray(dtype=ti.f64, ndim=2)
_I1 = ti.types.ndarray(dtype=ti.i32, ndim=1)
_I2 = ti.types.ndarray(dtype=ti.i32, ndim=2)
_I3 = ti.types.ndarray(dtype=ti.i32, ndim=3)

# header of ``ints``
NX, NY, NZ, KX, KY, KZ, PERIODIC, ORTHO, BLOCK, NCELL, NBLOCK, STAT = range(12)
HEADER = 16
# columns of ``iwork``
I_CELL, I_TICKET, I_SHIFT, I_SORTED, I_SORTED_SHIFT = 0, 1, 2, 5, 6
# columns of ``fwork``
F_WRAPPED, F_FRAC, F_SORTED = 0, 3, 6


@ti.func
def _wrap(u: ti.i32, n: ti.i32, periodic: ti.i32):
    """Unwrapped cell index u -> (cell in [0, n), image floor(u / n)) without division
    (-k <= u < n + k, so the loops run at most k / n + 1 times); for open boundaries
    (periodic = 0) u is returned unchanged with image 0."""
    c = u
    m = 0
    if periodic == 1:
        while c < 0:
            c += n
            m -= 1
        while c >= n:
            c -= n
            m += 1
    return c, m


@ti.func
def _gap2(u: ti.i32, t: ti.f64, h: ti.f64) -> ti.f64:
    """Squared perpendicular distance (Å²) from an atom at grid coordinate ``t = s n`` to the
    slab of unwrapped cell ``u`` (grid coordinates ``[u, u + 1)``), cells ``h`` Å wide."""
    g = ti.max(0.0, u - t, t - (u + 1)) * h
    return g * g


@fast_launch
@ti.kernel
def build_verlet(pos: _F2, geom: _F2, ints: _I1, iwork: _I2, fwork: _F2,
                 neighbors: _I2, images: _I3, counts: _I1):
    """Cell-list Verlet build (see the module docstring).

    pos       float64 [N, 3]  positions as given (unwrapped allowed), Å
    neighbors int32 [N, C]    out: neighbour j, -1 in unused slots
    images    int32 [N, C, 3] out: image vector n of each entry (0 in unused slots)
    counts    int32 [N]       out: valid entries per row (<= C)
    """
    n_atoms = pos.shape[0]
    capacity = neighbors.shape[1]
    n_cell = ints[NCELL]
    n_block = ints[NBLOCK]
    cc = HEADER                  # cell counts
    cs = HEADER + n_cell         # cell starts
    bs = HEADER + 2 * n_cell + 1  # block sums

    # 1. zero counters
    for c in range(n_cell):
        ints[cc + c] = 0
        if c == 0:
            ints[STAT] = 0

    # 2. bin atoms
    for i in range(n_atoms):
        cd = ti.Vector([0, 0, 0])
        for d in ti.static(range(3)):
            s = ((pos[i, 0] - geom[6, 0]) * geom[3, d] + (pos[i, 1] - geom[6, 1]) * geom[4, d]
                 + (pos[i, 2] - geom[6, 2]) * geom[5, d])
            f = 0
            if ints[PERIODIC] == 1:
                f = ti.cast(ti.floor(s), ti.i32)
                s = s - f
            s = ti.min(ti.max(s, 0.0), 1.0)
            fwork[i, F_FRAC + d] = s
            cd[d] = ti.max(0, ti.min(ti.cast(s * ints[NX + d], ti.i32), ints[NX + d] - 1))
            iwork[i, I_SHIFT + d] = f
        for d in ti.static(range(3)):
            fwork[i, F_WRAPPED + d] = (pos[i, d] - iwork[i, I_SHIFT] * geom[0, d]
                                       - iwork[i, I_SHIFT + 1] * geom[1, d]
                                       - iwork[i, I_SHIFT + 2] * geom[2, d])
        cell = (cd[0] * ints[NY] + cd[1]) * ints[NZ] + cd[2]
        iwork[i, I_CELL] = cell
        iwork[i, I_TICKET] = ti.atomic_add(ints[cc + cell], 1)

    # 3a. block sums
    for b in range(n_block):
        block = ints[BLOCK]
        acc = 0
        for c in range(b * block, ti.min((b + 1) * block, n_cell)):
            acc += ints[cc + c]
        ints[bs + b] = acc
    # 3b. serial exclusive scan of the block totals (one iteration -> one thread)
    for _ in range(1):
        acc = 0
        for b in range(n_block):
            t = ints[bs + b]
            ints[bs + b] = acc
            acc += t
    # 3c. in-block exclusive scan
    for b in range(n_block):
        block = ints[BLOCK]
        acc = ints[bs + b]
        for c in range(b * block, ti.min((b + 1) * block, n_cell)):
            ints[cs + c] = acc
            acc += ints[cc + c]
        if b == n_block - 1:
            ints[cs + n_cell] = acc

    # 4. scatter
    for i in range(n_atoms):
        iwork[ints[cs + iwork[i, I_CELL]] + iwork[i, I_TICKET], I_SORTED] = i

    # 5. deterministic order inside each cell
    for c in range(n_cell):
        lo = ints[cs + c]
        for p in range(lo + 1, ints[cs + c + 1]):
            v = iwork[p, I_SORTED]
            q = p - 1
            while q >= lo:  # Taichi's `and` does not short-circuit: test q first
                w = iwork[q, I_SORTED]
                if w <= v:
                    break
                iwork[q + 1, I_SORTED] = w
                q -= 1
            iwork[q + 1, I_SORTED] = v

    # 6. gather into cell order
    for p in range(n_atoms):
        i = iwork[p, I_SORTED]
        for d in ti.static(range(3)):
            fwork[p, F_SORTED + d] = fwork[i, F_WRAPPED + d]
            iwork[p, I_SORTED_SHIFT + d] = iwork[i, I_SHIFT + d]

    # 7. Verlet build, one thread per atom; nested offset loops hoist per-axis work and
    #    skip slabs/cells that cannot hold a point within r_list of atom i
    for i in range(n_atoms):
        nx, ny, nz = ints[NX], ints[NY], ints[NZ]
        kx, ky, kz = ints[KX], ints[KY], ints[KZ]
        periodic = ints[PERIODIC]
        ortho = ints[ORTHO]
        rc2 = geom[8, 0]
        rc2_cell = geom[8, 1]
        cell_i = iwork[i, I_CELL]
        cx_i = cell_i // (ny * nz)
        cy_i = (cell_i // nz) % ny
        cz_i = cell_i % nz
        xi = ti.Vector([fwork[i, F_WRAPPED], fwork[i, F_WRAPPED + 1], fwork[i, F_WRAPPED + 2]])
        fi = ti.Vector([iwork[i, I_SHIFT], iwork[i, I_SHIFT + 1], iwork[i, I_SHIFT + 2]])
        tx = fwork[i, F_FRAC] * nx      # grid coordinates of atom i
        ty = fwork[i, F_FRAC + 1] * ny
        tz = fwork[i, F_FRAC + 2] * nz
        cnt = 0
        for ox in range(-kx, kx + 1):
            ux = cx_i + ox
            gx = _gap2(ux, tx, geom[7, 0])
            if gx <= rc2_cell and (periodic == 1 or (ux >= 0 and ux < nx)):
                ccx, mx = _wrap(ux, nx, periodic)
                svx = mx * ti.Vector([geom[0, 0], geom[0, 1], geom[0, 2]]) - xi
                for oy in range(-ky, ky + 1):
                    uy = cy_i + oy
                    gy = _gap2(uy, ty, geom[7, 1])
                    gxy = ti.max(gx, gy)
                    if ortho == 1:
                        gxy = gx + gy
                    if gxy <= rc2_cell and (periodic == 1 or (uy >= 0 and uy < ny)):
                        ccy, my = _wrap(uy, ny, periodic)
                        svy = svx + my * ti.Vector([geom[1, 0], geom[1, 1], geom[1, 2]])
                        for oz in range(-kz, kz + 1):
                            uz = cz_i + oz
                            gz = _gap2(uz, tz, geom[7, 2])
                            gxyz = ti.max(gxy, gz)
                            if ortho == 1:
                                gxyz = gxy + gz
                            if gxyz <= rc2_cell and (periodic == 1 or (uz >= 0 and uz < nz)):
                                ccz, mz = _wrap(uz, nz, periodic)
                                base = svy + mz * ti.Vector([geom[2, 0], geom[2, 1], geom[2, 2]])
                                cell = (ccx * ny + ccy) * nz + ccz
                                for p in range(ints[cs + cell], ints[cs + cell + 1]):
                                    dx = fwork[p, F_SORTED] + base[0]
                                    dy = fwork[p, F_SORTED + 1] + base[1]
                                    dz = fwork[p, F_SORTED + 2] + base[2]
                                    if dx * dx + dy * dy + dz * dz < rc2:
                                        j = iwork[p, I_SORTED]
                                        n0 = mx + fi[0] - iwork[p, I_SORTED_SHIFT]
                                        n1 = my + fi[1] - iwork[p, I_SORTED_SHIFT + 1]
                                        n2 = mz + fi[2] - iwork[p, I_SORTED_SHIFT + 2]
                                        if j != i or n0 != 0 or n1 != 0 or n2 != 0:
                                            if cnt < capacity:
                                                neighbors[i, cnt] = j
                                                images[i, cnt, 0] = n0
                                                images[i, cnt, 1] = n1
                                                images[i, cnt, 2] = n2
                                            cnt += 1
        for q in range(cnt, capacity):
            neighbors[i, q] = -1
            images[i, q, 0] = 0
            images[i, q, 1] = 0
            images[i, q, 2] = 0
        counts[i] = ti.min(cnt, capacity)
        ti.atomic_max(ints[STAT], cnt)
