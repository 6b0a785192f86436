"""se_e2_a geometry kernels: environment matrix from a Verlet list, and force/virial assembly.

Slot layout: atom i owns ``nnei = Σ_t sel[t]`` slots, in blocks ``[sec[t], sec[t+1])`` per
neighbour type t. A neighbour (j, n) at r_ij = x_j − x_i + n·box with |r_ij| < r_c goes to
its type's block. With more than Σ sel neighbours inside r_c (some type then has more
than sel[t]), DeePMD-kit v3's rule applies: of the nearest Σ sel neighbours of all types,
the nearest sel[t] of each type are kept. Empty slots hold j = −1 and r_ij = 0.

Environment row and its Jacobian (d = r_ij, r = |d|):
    sw(r) = 1 (r < r_s);  u³(−6u² + 15u − 10) + 1 (r_s ≤ r < r_c);  0 (r ≥ r_c)
    R = (sw/r, sw·d/r²)
    ∂(sw/r)/∂d      = (sw'/r − sw/r²) d/r
    ∂(sw·d_a/r²)/∂d_b = sw δ_ab / r² + d_a (sw'/r² − 2 sw/r³) d_b / r
"""
import taichi as ti

from taichi_kernels import filled_end, spread
from taichi_kernels.launch import fast_launch

Vec3 = ti.types.vector(3, ti.f64)
Vec4 = ti.types.vector(4, ti.f64)
Mat43 = ti.types.matrix(4, 3, ti.f64)


@ti.func
def smooth_switch(r: ti.f64, rcut: ti.f64, rcut_smth: ti.f64):
    """(sw, dsw/dr) of DeePMD-kit's fifth-order switch between r_s and r_c."""
    sw = 0.0
    dsw = 0.0
    if r < rcut_smth:
        sw = 1.0
    elif r < rcut:
        width = rcut - rcut_smth
        u = (r - rcut_smth) / width
        u2 = u * u
        sw = u2 * u * (-6.0 * u2 + 15.0 * u - 10.0) + 1.0
        dsw = (-30.0 * u2 * u2 + 60.0 * u2 * u - 30.0 * u2) / width
    return sw, dsw


@ti.func
def _pair_key(j, n0, n1, n2) -> ti.i64:
    """A total order on (neighbour index, image vector): j · 2²⁴ + packed (n + 128)."""
    return (ti.cast(j, ti.i64) << 24) | (ti.cast(n0 + 128, ti.i64) << 16) \
        | (ti.cast(n1 + 128, ti.i64) << 8) | ti.cast(n2 + 128, ti.i64)


@ti.func
def env_row(d: Vec3, rcut: ti.f64, rcut_smth: ti.f64) -> Vec4:
    r2 = d.dot(d)
    r = ti.sqrt(r2)
    sw, dsw = smooth_switch(r, rcut, rcut_smth)
    return Vec4(sw / r, sw * d[0] / r2, sw * d[1] / r2, sw * d[2] / r2)


@ti.func
def env_jacobian(d: Vec3, rcut: ti.f64, rcut_smth: ti.f64) -> Mat43:
    """∂R/∂d, a 4×3 matrix, for one neighbour at displacement d (Å⁻², Å⁻³)."""
    r2 = d.dot(d)
    r = ti.sqrt(r2)
    sw, dsw = smooth_switch(r, rcut, rcut_smth)
    jac = Mat43(0.0)
    c0 = (dsw / r - sw / r2) / r
    c1 = (dsw / r2 - 2.0 * sw / (r2 * r)) / r
    for b in ti.static(range(3)):
        jac[0, b] = c0 * d[b]
        for a in ti.static(range(3)):
            jac[a + 1, b] = c1 * d[a] * d[b]
        jac[b + 1, b] += sw / r2
    return jac


@ti.func
def _displacement(positions: ti.template(), box: ti.template(), neighbors: ti.template(),
                  images: ti.template(), periodic: ti.i32, i: ti.i32, k: ti.i32) -> Vec3:
    """r_ij of row k of atom i's Verlet list (Å)."""
    j = neighbors[i, k]
    d = Vec3(positions[j, 0] - positions[i, 0], positions[j, 1] - positions[i, 1],
             positions[j, 2] - positions[i, 2])
    if periodic:
        for a in ti.static(range(3)):
            d += ti.cast(images[i, k, a], ti.f64) * Vec3(box[a, 0], box[a, 1], box[a, 2])
    return d


@ti.func
def _count_within(positions: ti.template(), box: ti.template(), neighbors: ti.template(),
                  images: ti.template(), counts: ti.template(), periodic: ti.i32, i: ti.i32,
                  r2_max: ti.f64) -> ti.i32:
    n = 0
    for k in range(counts[i]):
        d = _displacement(positions, box, neighbors, images, periodic, i, k)
        if d.dot(d) <= r2_max:
            n += 1
    return n


@ti.func
def _keep_nearest_overall(positions: ti.template(), box: ti.template(), neighbors: ti.template(),
                          images: ti.template(), counts: ti.template(), sec: ti.template(),
                          periodic: ti.i32, rc2: ti.f64, i: ti.i32, slot_j: ti.template(),
                          slot_rij: ti.template(), slot_key: ti.template(),
                          type_counts: ti.template()):
    """DeePMD-kit v3's cap for an atom with more than nnei = Σ sel neighbours inside r_c:
    only its nearest nnei neighbours (all types together) count, so each type keeps the
    nearest min(sel[t], its number among them). The blocks hold each type's nearest sel[t];
    slots farther than the nnei-th nearest neighbour overall are removed (order kept) and
    type_counts lowered to what is left where that is below min(count, sel[t]). The
    threshold r² is found by bisection over the Verlet row (64 halvings of [0, r_c²]: to
    round-off), then snapped to the largest r² at or below it. Equidistant neighbours at
    the threshold are all kept (DeePMD-kit's top-k picks among them arbitrarily)."""
    nnei = slot_j.shape[1]
    lo, hi = 0.0, rc2
    for _ in range(64):
        mid = 0.5 * (lo + hi)
        if _count_within(positions, box, neighbors, images, counts, periodic, i, mid) >= nnei:
            hi = mid
        else:
            lo = mid
    threshold = 0.0
    for k in range(counts[i]):
        d = _displacement(positions, box, neighbors, images, periodic, i, k)
        r2 = d.dot(d)
        if r2 <= hi:
            threshold = ti.max(threshold, r2)
    for t in range(sec.shape[0] - 1):
        base = sec[t]
        filled = ti.min(type_counts[i, t], sec[t + 1] - base)
        kept = 0
        for s in range(base, base + filled):
            d = Vec3(slot_rij[i, s, 0], slot_rij[i, s, 1], slot_rij[i, s, 2])
            if d.dot(d) <= threshold * (1.0 + 1e-12):     # (the same r², up to contraction)
                if kept < s - base:
                    slot_j[i, base + kept] = slot_j[i, s]
                    slot_key[i, base + kept] = slot_key[i, s]
                    for a in ti.static(range(3)):
                        slot_rij[i, base + kept, a] = slot_rij[i, s, a]
                kept += 1
        if kept < filled:
            type_counts[i, t] = kept


@fast_launch
@ti.kernel
def build_env(positions: ti.types.ndarray(ndim=2), box: ti.types.ndarray(ndim=2),
              neighbors: ti.types.ndarray(ndim=2), images: ti.types.ndarray(ndim=3),
              counts: ti.types.ndarray(ndim=1), types: ti.types.ndarray(ndim=1),
              sec: ti.types.ndarray(ndim=1), rcut: ti.f64, rcut_smth: ti.f64,
              periodic: ti.i32, sort_by_distance: ti.i32,
              slot_j: ti.types.ndarray(ndim=2), slot_rij: ti.types.ndarray(ndim=3),
              slot_key: ti.types.ndarray(ndim=2),
              env: ti.types.ndarray(ndim=3), type_counts: ti.types.ndarray(ndim=2)):
    """Fill the slots of every atom and their raw environment rows.

    positions [N,3] Å; box [3,3] rows = cell vectors (ignored unless periodic);
    neighbors [N,C] int32, images [N,C,3] int32, counts [N] int32 (the Verlet list);
    types [N] int32; sec [ntypes+1] int32 block offsets. Out: slot_j [N,nnei] int32,
    slot_rij [N,nnei,3] Å, env [N,nnei,4] (Å⁻¹), type_counts [N,ntypes] int32 = number
    of neighbours of each type inside r_c (may exceed sel; where DeePMD-kit's Σ sel cap
    leaves fewer than min(count, sel[t]) of type t, that number); slot_key [N,nnei] int64
    scratch.

    Each type block ends up in a canonical order that does not depend on the order of
    the Verlet rows (so results are bit-reproducible whenever the list was rebuilt):
    by (j, image) — or by distance when ``sort_by_distance`` (needed only if the model's
    statistics differ between slots of a block, DeePMD-kit's order).
    """
    ntypes = sec.shape[0] - 1
    nnei = slot_j.shape[1]
    rc2 = rcut * rcut
    stride = spread(positions.shape[0])     # see taichi_kernels.spread
    for idx in range(positions.shape[0] * stride):
        if idx % stride == 0:
            i = idx // stride
            for t in range(ntypes):
                type_counts[i, t] = 0
            for k in range(counts[i]):
                j = neighbors[i, k]
                d = _displacement(positions, box, neighbors, images, periodic, i, k)
                r2 = d.dot(d)
                if r2 < rc2:
                    t = types[j]
                    c = type_counts[i, t]
                    type_counts[i, t] = c + 1
                    base = sec[t]
                    cap = sec[t + 1] - base
                    key = _pair_key(j, images[i, k, 0], images[i, k, 1], images[i, k, 2])
                    if c < cap:
                        slot_j[i, base + c] = j
                        slot_key[i, base + c] = key
                        for a in ti.static(range(3)):
                            slot_rij[i, base + c, a] = d[a]
                    else:  # more than sel[t]: keep the nearest, replace the farthest kept one
                        far = -1
                        far_r2 = r2
                        for s in range(base, base + cap):
                            rs2 = (slot_rij[i, s, 0] ** 2 + slot_rij[i, s, 1] ** 2
                                   + slot_rij[i, s, 2] ** 2)
                            if rs2 > far_r2:
                                far_r2 = rs2
                                far = s
                        if far >= 0:
                            slot_j[i, far] = j
                            slot_key[i, far] = key
                            for a in ti.static(range(3)):
                                slot_rij[i, far, a] = d[a]
            total = 0
            for t in range(ntypes):
                total += type_counts[i, t]
            if total > nnei:
                _keep_nearest_overall(positions, box, neighbors, images, counts, sec, periodic,
                                      rc2, i, slot_j, slot_rij, slot_key, type_counts)
            for t in range(ntypes):
                base = sec[t]
                cap = sec[t + 1] - base
                filled = ti.min(type_counts[i, t], cap)
                for s in range(base + filled, base + cap):
                    slot_j[i, s] = -1
                    for a in ti.static(range(3)):
                        slot_rij[i, s, a] = 0.0
                # insertion sort of the filled part (nearly sorted already when the Verlet
                # rows are sorted, so O(n) in the usual case)
                for s in range(base + 1, base + filled):
                    key_j = slot_j[i, s]
                    key_k = slot_key[i, s]
                    key = Vec3(slot_rij[i, s, 0], slot_rij[i, s, 1], slot_rij[i, s, 2])
                    key_r2 = key.dot(key)
                    q = s - 1
                    while q >= base:
                        before = True
                        if sort_by_distance:
                            rq2 = (slot_rij[i, q, 0] ** 2 + slot_rij[i, q, 1] ** 2
                                   + slot_rij[i, q, 2] ** 2)
                            before = rq2 < key_r2 or (rq2 == key_r2 and slot_key[i, q] <= key_k)
                        else:
                            before = slot_key[i, q] <= key_k
                        if before:
                            break
                        slot_j[i, q + 1] = slot_j[i, q]
                        slot_key[i, q + 1] = slot_key[i, q]
                        for a in ti.static(range(3)):
                            slot_rij[i, q + 1, a] = slot_rij[i, q, a]
                        q -= 1
                    slot_j[i, q + 1] = key_j
                    slot_key[i, q + 1] = key_k
                    for a in ti.static(range(3)):
                        slot_rij[i, q + 1, a] = key[a]
            for s in range(nnei):
                row = Vec4(0.0)
                if slot_j[i, s] >= 0:
                    row = env_row(Vec3(slot_rij[i, s, 0], slot_rij[i, s, 1], slot_rij[i, s, 2]),
                                  rcut, rcut_smth)
                for c in ti.static(range(4)):
                    env[i, s, c] = row[c]


@fast_launch
@ti.kernel
def assemble_forces(slot_j: ti.types.ndarray(ndim=2), slot_rij: ti.types.ndarray(ndim=3),
                    grad_env: ti.types.ndarray(ndim=3), rcut: ti.f64, rcut_smth: ti.f64,
                    pair_grad: ti.types.ndarray(ndim=3), forces: ti.types.ndarray(ndim=2),
                    atom_virial: ti.types.ndarray(ndim=3), deterministic: ti.template()):
    """F = −∂E/∂x and per-atom virials from g = ∂E/∂R [N,nnei,4] (eV·Å).

    ∂E/∂r_ij = gᵀ·∂R/∂r_ij; since r_ij = x_j − x_i: F_i += ∂E/∂r_ij, F_j −= ∂E/∂r_ij.
    atom_virial[i] = −Σ_j r_ij ⊗ ∂E/∂r_ij (eV; their sum is the virial W).
    pair_grad [N,nnei,3] is scratch. With ``deterministic`` the scatter to F_j runs in a
    fixed order (bit-reproducible on the CPU); otherwise it uses atomics (GPU).
    """
    stride = spread(slot_j.shape[0])     # see taichi_kernels.spread
    for idx in range(slot_j.shape[0] * stride):
        if idx % stride == 0:
            i = idx // stride
            f_i = Vec3(0.0)
            w = ti.Matrix.zero(ti.f64, 3, 3)
            for s in range(slot_j.shape[1]):
                de_dd = Vec3(0.0)
                if slot_j[i, s] >= 0:
                    d = Vec3(slot_rij[i, s, 0], slot_rij[i, s, 1], slot_rij[i, s, 2])
                    jac = env_jacobian(d, rcut, rcut_smth)
                    g = Vec4(ti.cast(grad_env[i, s, 0], ti.f64), ti.cast(grad_env[i, s, 1], ti.f64),
                             ti.cast(grad_env[i, s, 2], ti.f64), ti.cast(grad_env[i, s, 3], ti.f64))
                    de_dd = jac.transpose() @ g
                    f_i += de_dd
                    w -= d.outer_product(de_dd)
                for a in ti.static(range(3)):
                    pair_grad[i, s, a] = de_dd[a]
            for a in ti.static(range(3)):
                forces[i, a] = f_i[a]
                for b in ti.static(range(3)):
                    atom_virial[i, a, b] = w[a, b]
    if ti.static(deterministic):
        ti.loop_config(serialize=True)
        for i in range(slot_j.shape[0]):
            for s in range(slot_j.shape[1]):
                j = slot_j[i, s]
                if j >= 0:
                    for a in ti.static(range(3)):
                        forces[j, a] -= pair_grad[i, s, a]
    else:
        for i, s in ti.ndrange(slot_j.shape[0], slot_j.shape[1]):
            j = slot_j[i, s]
            if j >= 0:
                for a in ti.static(range(3)):
                    ti.atomic_sub(forces[j, a], pair_grad[i, s, a])


@fast_launch
@ti.kernel
def env_derivative(slot_j: ti.types.ndarray(ndim=2), slot_rij: ti.types.ndarray(ndim=3),
                   rcut: ti.f64, rcut_smth: ti.f64, env_deriv: ti.types.ndarray(ndim=4)):
    """env_deriv[i, s] = ∂R_is/∂r_is, a 4×3 block per slot (zero for empty slots).

    Used by training, where the force F = −Σ gᵀ ∂R/∂r must stay differentiable in g = ∂E/∂R
    (double backpropagation): the geometry is fixed per frame, so ∂R/∂r is computed once.
    """
    for i, s in ti.ndrange(slot_j.shape[0], slot_j.shape[1]):
        jac = Mat43(0.0)
        if slot_j[i, s] >= 0:
            jac = env_jacobian(Vec3(slot_rij[i, s, 0], slot_rij[i, s, 1], slot_rij[i, s, 2]),
                               rcut, rcut_smth)
        for c in ti.static(range(4)):
            for a in ti.static(range(3)):
                env_deriv[i, s, c, a] = jac[c, a]


@fast_launch
@ti.kernel
def pair_partners(slot_j: ti.types.ndarray(ndim=2), slot_key: ti.types.ndarray(ndim=2),
                  types: ti.types.ndarray(ndim=1), type_counts: ti.types.ndarray(ndim=2),
                  sec: ti.types.ndarray(ndim=1), partner: ti.types.ndarray(ndim=2)):
    """partner[i, s] = j·nnei + q for the slot q of atom j that holds the same pair seen from
    j — (i, −n) for slot s = (j, n) of atom i — when i and j have the same type; else −1.

    The two slots of such a pair have r_ji = −r_ij exactly (build_env adds the same terms
    with opposite signs), hence the same environment row up to the signs of its x, y, z
    entries and the same embedding input: their embedding nets need to run once. The
    blocks are sorted by pair key (sort_by_distance = 0), so q is found by bisection.
    """
    nnei = slot_j.shape[1]
    for i, s in ti.ndrange(slot_j.shape[0], nnei):
        found = -1
        j = slot_j[i, s]
        if j >= 0:
            t = types[i]
            if types[j] == t:
                key = slot_key[i, s]
                n0 = ti.cast((key >> 16) & 255, ti.i32) - 128
                n1 = ti.cast((key >> 8) & 255, ti.i32) - 128
                n2 = ti.cast(key & 255, ti.i32) - 128
                target = _pair_key(i, -n0, -n1, -n2)
                end = filled_end(type_counts, sec, j, t)
                lo = sec[t]
                hi = end
                while lo < hi:
                    mid = (lo + hi) // 2
                    if slot_key[j, mid] < target:
                        lo = mid + 1
                    else:
                        hi = mid
                if lo < end:            # (nested: Taichi's `and` does not short-circuit)
                    if slot_key[j, lo] == target:
                        found = j * nnei + lo
        partner[i, s] = found
