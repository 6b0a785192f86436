"""se_e2_a sums over the slots, T = R̂ᵀG and its gradient, with G from a table or a store.

Two sources of the embedding output G_m(x) of slot s (x = R̂[i, s, 0]), chosen per call by
the static flag ``stored``:
- a quintic table (compressed model): coeffs[k, q, p, m] (p = 0..5) for embedding net k,
  interval q (x in [lo + q·h, lo + (q+1)·h)) and channel m: G_m(x) = Σ_p c_p t^p with
  t = x − lo − q·h; G is never stored, both kernels evaluate it on the fly;
- a store of rows (the uncompressed model's pair path, dpengine.deeppot): slot s of atom i
  reads row rows[i, s] of G [U, M] and, in the backward kernel, of G' = dG/dx [U, M] (two
  arrays: the forward kernel then streams G alone; with [G; G'] interleaved per row it read
  every other 800-byte run and took 14 ms instead of 6 at 1,536 water atoms).
Channels are innermost, so the loops over m read contiguous values and the CPU compiler
vectorises them. The kernels take the table (or store) flattened to 1-D and index it as
base + p·M + m: Taichi linearises a multi-dimensional index in 32-bit arithmetic that LLVM
cannot prove consecutive in m, so it loaded a 4-D table one element at a time (forward
kernel, 1,536 water atoms: 22 ms with the 4-D index, 8 ms flat). Sums run in the precision
``real`` of the model (float32 tables, rows and sums for a float32 model).

    R̂[i, s, c] = (R[i, s, c] − davg[t_i, s, c]) · inv_dstd[t_i, s, c]     (normalised input)
    T[i, c, m] = Σ_s R̂[i, s, c] · G_m(R̂[i, s, 0])                        (forward)
    ∂L/∂R[i, s, c] = (Σ_m ∂L/∂T[i, c, m] · G_m(x_s)
                      + δ_c0 Σ_m (Σ_c' ∂L/∂T[i, c', m] R̂[i, s, c']) · G'_m(x_s))
                     · inv_dstd[t_i, s, c]                                 (backward)
with inv_dstd = 1/dstd (products: divisions made the kernels ~30% slower). The kernels read
the raw environment matrix R (float64, as the geometry kernel writes it) and the
statistics, so no normalised copy of R is ever stored. Only the filled slots are visited
(slot s is the slot_rank[s]-th of its block slot_block[s]; atom i has filled[i, t]
neighbours in block t, stored first); every empty slot adds the same r̂ᵀG(r̂₀) of its net,
which the forward kernel adds per block.

The embedding net of slot s of atom i is its block (neighbour type) t_j, or
t_j·ntypes + t_i when the model is not ``type_one_side``. ``count_owned`` and ``store_rows``
lay out the store: the two slots of a same-type pair share one row (their inputs are equal).
"""
import taichi as ti

from taichi_kernels import filled_end, spread
from taichi_kernels.launch import fast_launch


@ti.func
def _interval(x: ti.f64, lo: ti.f64, step: ti.f64, n_int: ti.i32):
    q = ti.cast(ti.floor((x - lo) / step), ti.i32)
    inside = 1
    if q < 0 or q >= n_int:
        inside = 0
        q = ti.max(0, ti.min(q, n_int - 1))
    return q, x - (lo + q * step), inside


@ti.func
def _row(k: ti.i32, q: ti.i32, n_int: ti.i32, n_channels: ti.i32) -> ti.i32:
    """Flat index of coeffs[k, q, 0, 0]."""
    return (k * n_int + q) * 6 * n_channels


@ti.func
def _table_value(coeffs: ti.template(), row: ti.i32, m: ti.i32, n_channels: ti.i32, t,
                 real: ti.template()):
    """G_m(x) = Σ_p c_p t^p of the interval at flat index ``row`` (Horner, in ``real``)."""
    j = row + m
    g = ti.cast(coeffs[j + 5 * n_channels], real)
    for p in ti.static(range(4, -1, -1)):
        g = g * t + coeffs[j + p * n_channels]
    return g


@ti.func
def _net_of(i: ti.i32, s: ti.i32, slot_block: ti.template(), types: ti.template(),
            ntypes: ti.i32, type_one_side: ti.i32) -> ti.i32:
    k = slot_block[s]
    if not type_one_side:
        k = k * ntypes + types[i]
    return k


@ti.func
def _normalised(env: ti.template(), davg: ti.template(), inv_dstd: ti.template(), i: ti.i32,
                s: ti.i32, t_i: ti.i32, c: ti.i32) -> ti.f64:
    """R̂[i, s, c] = (R − davg) · inv_dstd."""
    return (ti.cast(env[i, s, c], ti.f64) - ti.cast(davg[t_i, s, c], ti.f64)) \
        * ti.cast(inv_dstd[t_i, s, c], ti.f64)


@ti.func
def _lookup(env: ti.template(), davg: ti.template(), inv_dstd: ti.template(), i: ti.i32,
            s: ti.i32, lo: ti.f64, step: ti.f64, n_int: ti.i32, slot_block: ti.template(),
            types: ti.template(), ntypes: ti.i32, type_one_side: ti.i32):
    """(net k, interval q, offset t in it, 1 if on the table) of slot s of atom i."""
    q, t, inside = _interval(_normalised(env, davg, inv_dstd, i, s, types[i], 0), lo, step,
                             n_int)
    return _net_of(i, s, slot_block, types, ntypes, type_one_side), q, t, inside


@ti.func
def _slot_source(env: ti.template(), davg: ti.template(), inv_dstd: ti.template(),
                 types: ti.template(), slot_block: ti.template(), rows: ti.template(), i: ti.i32,
                 s: ti.i32, n_int: ti.i32, lo: ti.f64, step: ti.f64, ntypes: ti.i32,
                 type_one_side: ti.i32, n_channels: ti.i32, stored: ti.template()):
    """(base, t, inside) of slot s of atom i: with ``stored``, base = flat index of its row
    in the store (G and G' alike) and t = 0; else base = flat index of coeffs[k, q, 0, 0] and
    t the offset in interval q. inside = 0 for an input off the table."""
    base, t, inside = 0, 0.0, 1
    if ti.static(stored):
        base = rows[i, s] * n_channels
    else:
        k, q, t_off, on_table = _lookup(env, davg, inv_dstd, i, s, lo, step, n_int,
                                        slot_block, types, ntypes, type_one_side)
        base, t, inside = _row(k, q, n_int, n_channels), t_off, on_table
    return base, t, inside


@ti.func
def _value(values: ti.template(), base: ti.i32, m: ti.i32, n_channels: ti.i32, t,
           real: ti.template(), stored: ti.template()):
    """G_m of a slot from its source (see :func:`_slot_source`)."""
    g = ti.cast(0.0, real)
    if ti.static(stored):
        g = ti.cast(values[base + m], real)
    else:
        g = _table_value(values, base, m, n_channels, t, real)
    return g


@ti.func
def _empty_base(t: ti.i32, t_i: ti.i32, ntypes: ti.i32, type_one_side: ti.i32,
                n_channels: ti.i32) -> ti.i32:
    """Flat index of empty_terms[k, t_i, 0, 0] for block t of a centre of type t_i."""
    k = t if type_one_side else t * ntypes + t_i
    return (k * ntypes + t_i) * 4 * n_channels


@fast_launch
@ti.kernel
def embedded_forward(env: ti.types.ndarray(ndim=3), davg: ti.types.ndarray(ndim=3),
                     inv_dstd: ti.types.ndarray(ndim=3), types: ti.types.ndarray(ndim=1),
                     slot_block: ti.types.ndarray(ndim=1), slot_rank: ti.types.ndarray(ndim=1),
                     filled: ti.types.ndarray(ndim=2), values: ti.types.ndarray(ndim=1),
                     rows: ti.types.ndarray(ndim=2), n_int: ti.i32, lo: ti.f64, step: ti.f64,
                     ntypes: ti.i32, type_one_side: ti.i32, sel: ti.types.ndarray(ndim=1),
                     empty_terms: ti.types.ndarray(ndim=1),
                     t_mat: ti.types.ndarray(ndim=3), outside: ti.types.ndarray(ndim=1),
                     per_atom: ti.template(), real: ti.template(), stored: ti.template()):
    """t_mat [N, 4, M] = Σ_s R̂ᵀ G over all nnei slots (not yet divided by nnei): the filled
    ones summed, each of the sel[t] − filled[i, t] empty slots of block t adding the constant
    empty_terms[k, t_i] (flat [nets, ntypes, 4, M]: r̂ᵀG(r̂) of an empty slot, R = 0);
    outside[0] += slots off the table.

    ``values``: the flat table (n_int intervals from lo, width step; ``rows`` unused) or,
    with ``stored``, the flat store of G rows [U, M] (``rows`` [N, nnei] int32; n_int, lo,
    step unused). ``per_atom`` = M (CPU): one thread per atom, the channel loop innermost
    over contiguous values, T accumulated in thread-local arrays of length M; 0 (GPU): one
    thread per (atom, channel), whose neighbouring threads read neighbouring channels.
    """
    n_channels = t_mat.shape[2]
    if ti.static(per_atom > 0):
        stride = spread(env.shape[0])     # see taichi_kernels.spread
        for idx in range(env.shape[0] * stride):
            if idx % stride == 0:
                i = idx // stride
                # accumulators in thread-local arrays: the compiler then vectorises the m loop
                acc = [ti.Vector.zero(real, per_atom) for _ in ti.static(range(4))]
                n_out = 0
                for s in range(env.shape[1]):
                    if slot_rank[s] < filled[i, slot_block[s]]:
                        base, t, inside = _slot_source(env, davg, inv_dstd, types, slot_block,
                                                       rows, i, s, n_int, lo, step, ntypes,
                                                       type_one_side, per_atom, stored)
                        n_out += 1 - inside
                        t_real = ti.cast(t, real)
                        r = [ti.cast(_normalised(env, davg, inv_dstd, i, s, types[i], c), real)
                             for c in ti.static(range(4))]
                        if ti.static(stored):
                            for m in range(per_atom):
                                g = _value(values, base, m, per_atom, t_real, real, stored)
                                for c in ti.static(range(4)):
                                    acc[c][m] += r[c] * g
                        else:
                            # G of the slot first, then the sums in a loop of their own: the
                            # compiler vectorises that one (not the Horner loop, nor one loop
                            # doing both); 1,536 water atoms: 12.5 ms instead of 17.4
                            g_row = ti.Vector.zero(real, per_atom)
                            for m in range(per_atom):
                                g_row[m] = _table_value(values, base, m, per_atom, t_real, real)
                            for m in range(per_atom):
                                for c in ti.static(range(4)):
                                    acc[c][m] += r[c] * g_row[m]
                for t in range(filled.shape[1]):
                    n_empty = sel[t] - filled[i, t]
                    if n_empty > 0:
                        base = _empty_base(t, types[i], ntypes, type_one_side, per_atom)
                        for m in range(per_atom):
                            for c in ti.static(range(4)):
                                acc[c][m] += n_empty * empty_terms[base + c * per_atom + m]
                for m in range(per_atom):
                    for c in ti.static(range(4)):
                        t_mat[i, c, m] = acc[c][m]
                if n_out > 0:
                    ti.atomic_add(outside[0], n_out)
    else:
        for i, m in ti.ndrange(env.shape[0], t_mat.shape[2]):
            acc = ti.Vector.zero(real, 4)
            n_out = 0
            for s in range(env.shape[1]):
                if slot_rank[s] < filled[i, slot_block[s]]:
                    base, t, inside = _slot_source(env, davg, inv_dstd, types, slot_block, rows,
                                                   i, s, n_int, lo, step, ntypes, type_one_side,
                                                   n_channels, stored)
                    n_out += 1 - inside
                    g = _value(values, base, m, n_channels, ti.cast(t, real), real, stored)
                    for c in ti.static(range(4)):
                        acc[c] += ti.cast(_normalised(env, davg, inv_dstd, i, s, types[i], c),
                                          real) * g
            for t in range(filled.shape[1]):
                base = _empty_base(t, types[i], ntypes, type_one_side, n_channels)
                for c in ti.static(range(4)):
                    acc[c] += (sel[t] - filled[i, t]) * empty_terms[base + c * n_channels + m]
            for c in ti.static(range(4)):
                t_mat[i, c, m] = acc[c]
            if m == 0 and n_out > 0:
                ti.atomic_add(outside[0], n_out)


@fast_launch
@ti.kernel
def embedded_backward(env: ti.types.ndarray(ndim=3), davg: ti.types.ndarray(ndim=3),
                      inv_dstd: ti.types.ndarray(ndim=3), types: ti.types.ndarray(ndim=1),
                      slot_block: ti.types.ndarray(ndim=1), slot_rank: ti.types.ndarray(ndim=1),
                      filled: ti.types.ndarray(ndim=2), values: ti.types.ndarray(ndim=1),
                      rows: ti.types.ndarray(ndim=2), n_int: ti.i32, lo: ti.f64, step: ti.f64,
                      ntypes: ti.i32, type_one_side: ti.i32, tangents: ti.types.ndarray(ndim=1),
                      grad_t: ti.types.ndarray(ndim=3), grad_env: ti.types.ndarray(ndim=3),
                      real: ti.template(), stored: ti.template()):
    """grad_env [N, W, 4] = ∂L/∂R (raw R) from grad_t = ∂L/∂T [N, 4, M] (see the module
    docstring; ``values``, ``rows``, ``stored`` as for :func:`embedded_forward`, with
    ``stored`` the flat G' rows [U, M] in ``tangents``, else unused); 0 on the slots not
    visited (empty: their R is 0 whatever the positions)."""
    n_channels = grad_t.shape[2]
    for i, s in ti.ndrange(env.shape[0], env.shape[1]):
        if slot_rank[s] >= filled[i, slot_block[s]]:
            for c in ti.static(range(4)):
                grad_env[i, s, c] = 0.0
            continue
        base, t64, _inside = _slot_source(env, davg, inv_dstd, types, slot_block, rows, i, s,
                                          n_int, lo, step, ntypes, type_one_side, n_channels,
                                          stored)
        t = ti.cast(t64, real)
        t_i = types[i]
        r = [ti.cast(_normalised(env, davg, inv_dstd, i, s, t_i, c), real)
             for c in ti.static(range(4))]
        acc = ti.Vector.zero(real, 4)   # sums over m: vectorised by the compiler
        acc_ds = ti.cast(0.0, real)
        for m in range(n_channels):
            g = ti.cast(0.0, real)
            dg = ti.cast(0.0, real)
            if ti.static(stored):
                g = ti.cast(values[base + m], real)
                dg = ti.cast(tangents[base + m], real)
            else:
                j = base + m
                g = ti.cast(values[j + 5 * n_channels], real)
                dg = ti.cast(5, real) * g
                for p in ti.static(range(4, 0, -1)):
                    c_p = values[j + p * n_channels]
                    g = g * t + c_p
                    dg = dg * t + ti.cast(p, real) * c_p
                g = g * t + values[j]
            gt = [ti.cast(grad_t[i, c, m], real) for c in ti.static(range(4))]
            for c in ti.static(range(4)):
                acc[c] += gt[c] * g
            acc_ds += (gt[0] * r[0] + gt[1] * r[1] + gt[2] * r[2] + gt[3] * r[3]) * dg
        acc[0] += acc_ds
        for c in ti.static(range(4)):
            grad_env[i, s, c] = ti.cast(acc[c], ti.f64) * ti.cast(inv_dstd[t_i, s, c], ti.f64)


@ti.func
def _owns(partner: ti.template(), i: ti.i32, s: ti.i32) -> ti.i32:
    """1 if slot s of atom i owns its embedding input: no mirror slot, or it comes first."""
    p = partner[i, s]
    return ti.cast(p < 0 or i * partner.shape[1] + s < p, ti.i32)


@fast_launch
@ti.kernel
def count_owned(partner: ti.types.ndarray(ndim=2), types: ti.types.ndarray(ndim=1),
                type_counts: ti.types.ndarray(ndim=2), sec: ti.types.ndarray(ndim=1),
                type_one_side: ti.i32, owned: ti.types.ndarray(ndim=2)):
    """owned[k, i] = filled slots of atom i that own their input and belong to embedding net k
    (``partner`` from taichi_kernels.se_a.pair_partners; entries of other nets untouched)."""
    ntypes = type_counts.shape[1]
    for i, t in ti.ndrange(partner.shape[0], ntypes):
        k = t if type_one_side else t * ntypes + types[i]
        count = 0
        for s in range(sec[t], filled_end(type_counts, sec, i, t)):
            count += _owns(partner, i, s)
        owned[k, i] = count


@fast_launch
@ti.kernel
def store_rows(env: ti.types.ndarray(ndim=3), davg: ti.types.ndarray(ndim=3),
               inv_dstd: ti.types.ndarray(ndim=3), partner: ti.types.ndarray(ndim=2),
               types: ti.types.ndarray(ndim=1), type_counts: ti.types.ndarray(ndim=2),
               sec: ti.types.ndarray(ndim=1), type_one_side: ti.i32,
               first_row: ti.types.ndarray(ndim=2), rows: ti.types.ndarray(ndim=2),
               inputs: ti.types.ndarray(ndim=1), real: ti.template()):
    """The store's row of every filled slot, rows[i, s], and the input of every owned row,
    inputs[row] = R̂[i, s, 0]: the owned slots of atom i in net k take rows first_row[k, i],
    first_row[k, i] + 1, … in slot order; a mirrored slot takes its owner's row."""
    ntypes = type_counts.shape[1]
    for i, t in ti.ndrange(partner.shape[0], ntypes):
        k = t if type_one_side else t * ntypes + types[i]
        row = first_row[k, i]
        for s in range(sec[t], filled_end(type_counts, sec, i, t)):
            if _owns(partner, i, s):
                rows[i, s] = row
                inputs[row] = ti.cast(_normalised(env, davg, inv_dstd, i, s, types[i], 0), real)
                row += 1
    nnei = partner.shape[1]     # (a second top-level loop: runs after the first has finished)
    for i, t in ti.ndrange(partner.shape[0], ntypes):
        for s in range(sec[t], filled_end(type_counts, sec, i, t)):
            if not _owns(partner, i, s):
                p = partner[i, s]
                rows[i, s] = rows[p // nnei, p % nnei]
