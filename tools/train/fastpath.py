"""Energies and forces of a training batch, differentiable in the parameters (fast path).

The geometry of every training frame is fixed, so the cache (:mod:`.features`) holds per
slot p = (atom i, slot k): the normalised environment row r̂_p = (R_p − davg)/dstd [4],
the embedding input ŝ_p, the Jacobian J_p = ∂r̂_p/∂r_p [4×3] (Å⁻², 0 for empty slots) and
the neighbour index j_p. With G_p = N_emb(ŝ_p) [M] and K = Σ sel (the model's nnei):

    T_i = (1/K) Σ_p r̂_p ⊗ G_p                 [4×M]   (DeepPotSE.descriptor)
    D_i = T_iᵀ T_i[:, :M2],   e_i = N_fit(D_i) + bias[t_i],   E = Σ_i e_i        (eV)
    A_i = ∂e_i/∂D_i [M×M2],   Q_i = ∂E/∂T_i = T_i[:, :M2] A_iᵀ + [T_i A_i | 0]   [4×M]
    g_p = ∂E/∂r̂_p = (1/K) [Q_i G_p + ê_0 (r̂_p · Q_i G'_p)],   G'_p = dN_emb/dŝ (ŝ_p)
    f_p = ∂E/∂r_p = J_pᵀ g_p                   [3]     (eV/Å)
    F_i = Σ_{p∈i} f_p − Σ_{p: j_p=i} f_p,   W = −Σ_p r_p ⊗ f_p

The embedding net has a scalar input, so G' is obtained by forward-mode differentiation
alongside G (:class:`EmbeddingTangent`, value and tangent stacked so each layer is one
weight matrix), and the fitting net returns A with e (:class:`.fitting.FittingWithGrad`);
both Functions differentiate themselves by hand — the second-order part of the force
loss — so one ordinary backward pass gives the parameter gradients, with no double
backpropagation (a non-tanh fitting net falls back to autograd's). D and Q, products of
4-row matrices, have hand-written adjoints too (:class:`Descriptor`, :class:`AxisProduct`).
Everything stays exact: the result equals ``DeepPotSE.forward`` + autograd on the same
parameters to round-off (tests hold it to that).

On the CPU the sums over slots (T, g and their adjoints) are Taichi kernels that read G and
G' from the nets' rows in place (:class:`EmbeddingRows`, :class:`RowSlotGradient`,
:mod:`taichi_kernels.slot_training`); elsewhere the rows are gathered to the slots
([A, W, M] copies) and contracted by batched products (:class:`EmbeddingTangent`,
:class:`SlotGradient`). Both give the same numbers to round-off.

Slots whose environment row is the padding value for every atom of a system are not
stored; one *virtual* slot per neighbour type carries their total contribution
(n_pad · r̂_pad ⊗ G(ŝ_pad), exact because r̂_pad and ŝ_pad are the same for all of them).
The embedding nets run only on the distinct inputs (:mod:`.features`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dpengine.backend import taichi_real as _real
from dpengine.model.embedding_tangent import embedding_tangent_passes
from dpengine.model.fitting_sweep import (_DOUBLE as _RES_DOUBLE, _EQUAL as _RES_EQUAL,
                                          fitting_kinds, layer_params, tanh_layer_kinds)
from dpengine.model.network import axis_product, symmetric_descriptor

from .fitting import FittingWithGrad


def _layer_kinds(mlp) -> tuple[tuple[int, bool], ...]:
    """(residual kind, uses idt) of each layer of an embedding ``MLP`` (tanh layers only)."""
    kinds = tanh_layer_kinds(mlp.layers)
    if kinds is None:
        raise NotImplementedError("fast path needs tanh embedding layers")
    return kinds


class EmbeddingTangent(torch.autograd.Function):
    """(r̂ᵀG, G, G' = dG/ds) of a tanh embedding net at scalar inputs s, hand-differentiated.

    forward(s [U] distinct ŝ values, index [A, W] int64 (the row of s of each slot),
    r̂ [A, W, 4] (the slots' environment rows), kinds, W₁, b₁, idt₁, W₂, …) →
    (r̂ᵀG [A, 4, M], G [A, W, M], G' [A, W, M]) of the slots. The nets run on the U distinct
    inputs only — a pair i–j of atoms of one type gives the same ŝ in the environments of
    i and of j, and all empty slots of a centre type share one — and are gathered to the
    slots (their gradients summed back). The forward sweep is
    :func:`dpengine.model.embedding_tangent.embedding_tangent_passes` (row-major
    [2, U, width] activations, value and tangent stacked, in passes of rows; per layer
    h = tanh z, d = 1 − h², z = xW + b, ż = ẋW, y = idt·h + res(x), ẏ = idt·d·ż + res(ẋ)).
    backward(T̄, Ḡ, Ḡ') → parameter gradients: Ḡ += r̂T̄ (one pass), the slots summed
    onto their rows, then pass by pass, per layer (Ȳ = [ȳ; ẏ̄] at the output):

        ż̄ = idt·ẏ̄·d,   z̄ = (idt·ȳ − 2 idt·ẏ̄·ż·h)·d,   W̄ = xᵀz̄ + ẋᵀż̄,   b̄ = Σ z̄,
        idt̄ = Σ (ȳ h + ẏ̄ d ż),   [x̄; ẋ̄] = [z̄; ż̄] Wᵀ + resᵀ(Ȳ)

    No gradient flows to s (the inputs are data).
    """

    @staticmethod
    def forward(ctx, s, index, rhat, kinds, *params):
        rows, passes = _sweep_forward(s, kinds, params)                       # [2, U, M]
        m = rows.shape[2]
        ctx.kinds, ctx.passes, ctx.n_inputs = kinds, passes, s.shape[0]
        n_rows, width_blk = index.shape
        flat = index.reshape(-1)
        ctx.save_for_backward(index, rhat, *params)
        g_val = rows[0].index_select(0, flat).view(n_rows, width_blk, m)   # slots ← rows
        g_tan = rows[1].index_select(0, flat).view(n_rows, width_blk, m)
        return torch.bmm(rhat.transpose(1, 2), g_val), g_val, g_tan

    @staticmethod
    def backward(ctx, tbar, gbar, gpbar):
        index, rhat, *params = ctx.saved_tensors
        if tbar is not None:                # Ḡ += r̂ T̄ (one pass over the slots)
            gbar = torch.bmm(rhat, tbar) if gbar is None else torch.baddbmm(gbar, rhat, tbar)
        width = params[-3].shape[1]
        row_bar = torch.zeros(2, ctx.n_inputs, width, dtype=rhat.dtype, device=rhat.device)
        flat = index.reshape(-1)
        for half, grad in ((row_bar[0], gbar), (row_bar[1], gpbar)):
            if grad is not None:
                half.index_add_(0, flat, grad.reshape(-1, width))          # Σ over slots
        grads = _sweep_backward(ctx.kinds, ctx.passes, params, row_bar)
        ctx.passes = None
        return (None, None, None, None, *grads)


def _sweep_forward(s: torch.Tensor, kinds, params) -> tuple[torch.Tensor, list]:
    """(rows [G; G'] [2, U, M] of the embedding net at s [U], the passes' saved activations
    for :func:`_sweep_backward`)."""
    rows = torch.empty(2, s.shape[0], params[-3].shape[1], dtype=s.dtype, device=s.device)
    passes = []
    embedding_tangent_passes(s, kinds, params, rows, passes)
    return rows, passes


def _sweep_backward(kinds, passes, params, row_bar: torch.Tensor) -> list:
    """Parameter gradients of the embedding net's tangent sweep from the rows' adjoint
    row_bar = [Ḡ; Ḡ'] [2, U, M], pass by pass over the forward's ``passes`` (their
    activations still in cache); see :class:`EmbeddingTangent` for the per-layer formulas."""
    n_layers = len(kinds)
    grads = [None] * len(params)

    def accumulate(i, value):
        grads[i] = value if grads[i] is None else grads[i].add_(value)

    for lo, hi, acts in passes:
        n, ybar = hi - lo, row_bar[:, lo:hi]
        for l in range(n_layers - 1, -1, -1):
            res, use_idt = kinds[l]
            x, h, d, zt = acts[4 * l: 4 * l + 4]
            w, idt = params[3 * l], params[3 * l + 2]
            n_in = w.shape[0]
            yv, yt = ybar[0], ybar[1]
            if use_idt:
                accumulate(3 * l + 2, (yv * h).sum(0) + (yt * d * zt).sum(0))
                yv, yt = yv * idt, yt * idt
            zbar = torch.empty(2, n, w.shape[1], dtype=h.dtype, device=h.device)
            torch.mul(yt, d, out=zbar[1])                                      # ż̄
            torch.mul(yv, d, out=zbar[0]).addcmul_(torch.mul(zbar[1], zt), h, value=-2.0)
            # W̄ = xᵀz̄ + ẋᵀż̄: one product over the stacked [2n] rows (ẋ = 1 at the input)
            accumulate(3 * l, torch.mm(x.view(2 * n, n_in).t(), zbar.view(2 * n, -1)))
            accumulate(3 * l + 1, zbar[0].sum(0))
            if l > 0:                                      # [x̄; ẋ̄] = [z̄; ż̄] Wᵀ + resᵀ(Ȳ)
                skip = None
                if res == _RES_EQUAL:
                    skip = ybar.clone()
                elif res == _RES_DOUBLE:     # one add of the halves: 3× faster than .sum(2)
                    halves = ybar.view(2, n, 2, n_in)
                    skip = torch.add(halves[:, :, 0], halves[:, :, 1])
                zbar = zbar.view(2 * n, -1)
                ybar = (torch.mm(zbar, w.t()) if skip is None
                        else skip.view(2 * n, n_in).addmm_(zbar, w.t())).view(2, n, n_in)
    return grads


class EmbeddingRows(torch.autograd.Function):
    """(T = Σ r̂ᵀG [A, 4, M], rows [G; G'] [2, U, M]) of a tanh embedding net, the slot sums
    by Taichi kernels that read the rows in place (CPU; :mod:`taichi_kernels.slot_training`).

    forward(s [U], index [A, W] int64, r̂ source and col0 (the slots' r̂ are
    source[:, col0:col0 + W]; :meth:`Batch.block_inputs`), (row_start, row_slots), link,
    kinds, W₁, b₁, idt₁, …): the sweep as :class:`EmbeddingTangent`, then T by
    ``slot_tensor``. The rows feed :class:`RowSlotGradient`, whose backward leaves its ḡ
    and Q in ``link`` (a dict shared by the two). backward(T̄, R̄): the rows' adjoint
    Ḡ = Σ_{slots of r} (r̂ T̄ + ḡ Q), Ḡ' = Σ ū Q in one pass over each row's slots
    (``row_adjoint``; R̄ from any other consumer of the rows is added), then the
    sweep's adjoint (:func:`_sweep_backward`).
    """

    @staticmethod
    def forward(ctx, s, index, rhat, col0, row_lists, link, kinds, *params):
        from taichi_kernels.slot_training import slot_tensor

        rows, passes = _sweep_forward(s, kinds, params)                       # [2, U, M]
        m = rows.shape[2]
        t_mat = torch.empty(index.shape[0], 4, m, dtype=s.dtype, device=s.device)
        slot_tensor(rhat, rhat, col0, index, rows.view(-1), s.shape[0], t_mat, m,
                    _real(s.dtype), False)
        ctx.kinds, ctx.passes, ctx.row_lists, ctx.col0 = kinds, passes, row_lists, col0
        ctx.width, ctx.n_rows, ctx.link = index.shape[1], s.shape[0], link
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(rhat, *params)
        return t_mat, rows

    @staticmethod
    def backward(ctx, tbar, rows_bar):
        from taichi_kernels.slot_training import row_adjoint

        rhat, *params = ctx.saved_tensors
        gbar, q = ctx.link.pop("slot_adjoint", (None, None))         # RowSlotGradient's
        n_rows, m = ctx.n_rows, params[-3].shape[1]
        out = torch.empty(2, n_rows, m, dtype=rhat.dtype, device=rhat.device)
        if tbar is not None or q is not None:
            row_adjoint(rhat, ctx.col0, *ctx.row_lists, n_rows, ctx.width, out.view(-1), m,
                        _real(rhat.dtype), tbar=None if tbar is None else tbar.contiguous(),
                        coef=gbar, q=q)
        else:
            out.zero_()
        if rows_bar is not None:        # from a consumer of the rows other than RowSlotGradient
            out += rows_bar
        grads = _sweep_backward(ctx.kinds, ctx.passes, params, out)
        ctx.passes = None
        return (None, None, None, None, None, None, None, *grads)


class RowSlotGradient(torch.autograd.Function):
    """g = Q Gᵀ + ê₀ (r̂ᵀ Q G'ᵀ) per slot [A, W, 4] (times K), read from the rows [2, U, M]
    of an :class:`EmbeddingRows` (Taichi ``slot_gradient``); Q = ∂E/∂T [A, 4, M].
    backward(ḡ): Q̄ = Σ_w (ḡ G + ū G') (``slot_tensor``, ū = ḡ₀ r̂); the rows' adjoint
    R̄ = [Σ_{slots of r} ḡ Q; Σ ū Q] is left to :class:`EmbeddingRows`'s backward (ḡ and Q
    put in ``link``), which sums it with its own term in the same pass over the slots.
    As :class:`SlotGradient`, without the slots' copies of G and G'."""

    @staticmethod
    def forward(ctx, rows, index, q, rhat, col0, link):
        from taichi_kernels.slot_training import slot_gradient

        q, rows = q.detach().contiguous(), rows.detach()
        g = torch.empty(*index.shape, 4, dtype=rhat.dtype, device=rhat.device)
        slot_gradient(q.view(-1), rhat, col0, index, rows.view(-1), rows.shape[1], rows.shape[2],
                      g, _real(rhat.dtype))
        ctx.col0, ctx.link = col0, link
        ctx.save_for_backward(rows, index, q, rhat)
        return g

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gbar):
        from taichi_kernels.slot_training import slot_tensor

        rows, index, q, rhat = (x.detach() for x in ctx.saved_tensors)
        gbar = gbar.contiguous()
        ctx.link["slot_adjoint"] = gbar, q
        q_bar = torch.empty_like(q)
        slot_tensor(gbar, rhat, ctx.col0, index, rows.view(-1), rows.shape[1], q_bar,
                    rows.shape[2], _real(rhat.dtype), True)
        return None, None, q_bar, None, None, None


class SlotGradient(torch.autograd.Function):
    """g = G Q + ê₀ ((G' Q)·r̂) per slot: ∂E/∂r̂ of the slots of one block (times K).

    forward(G [A, W, M], G' [A, W, M], Q [A, M, 4] = (∂E/∂T)ᵀ, r̂ [A, W, 4]) → g [A, W, 4],
    g_p = Q_iᵀ G_p + ê₀ (r̂_p · Q_iᵀ G'_p). backward(ḡ) with ū_p = ḡ_p0 r̂_p:

        Ḡ = ḡ Qᵀ,   Ḡ' = ū Qᵀ,   Q̄ = (ḡᵀ G + ūᵀ G')ᵀ

    written with the [4, W]·[W, M] orientation (about twice as fast here as autograd's
    [M, W]·[W, 4]) and one accumulating product. r̂ is data (no gradient).
    """

    @staticmethod
    def forward(ctx, g_val, g_tan, q, rhat):
        n_rows, width = g_val.shape[:2]
        g = torch.bmm(g_val, q)
        g_s = torch.bmm(torch.bmm(g_tan, q).view(-1, 1, 4), rhat.reshape(-1, 4, 1))
        g[:, :, 0] += g_s.view(n_rows, width)
        ctx.save_for_backward(g_val, g_tan, q, rhat)
        return g

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gbar):
        g_val, g_tan, q, rhat = ctx.saved_tensors
        ubar = gbar[:, :, :1] * rhat
        qt = q.transpose(1, 2)
        grad_q = torch.bmm(gbar.transpose(1, 2), g_val).baddbmm_(ubar.transpose(1, 2), g_tan)
        return torch.bmm(gbar, qt), torch.bmm(ubar, qt), grad_q.transpose(1, 2), None


class Descriptor(torch.autograd.Function):
    """D = Tᵀ T[:, :, :M2] [A, M·M2] of T [A, 4, M] (:func:`symmetric_descriptor`);
    backward T̄ = T[:, :, :M2] D̄ᵀ + [T D̄ | 0] (:func:`axis_product`, two batched products —
    autograd's adjoint of the broadcast products took ~15× as long here)."""

    @staticmethod
    def forward(ctx, t_mat, m2):
        ctx.save_for_backward(t_mat)
        ctx.m2 = m2
        return symmetric_descriptor(t_mat, m2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dbar):
        (t_mat,) = ctx.saved_tensors
        return axis_product(t_mat, dbar.reshape(t_mat.shape[0], t_mat.shape[2], ctx.m2)), None


class AxisProduct(torch.autograd.Function):
    """Q = ∂E/∂T = T[:, :, :M2] Aᵀ + [T A | 0] [A, 4, M] from T [A, 4, M] and A = ∂e/∂D
    [A, M, M2] (:func:`axis_product`); backward(Q̄): T̄ = Q̄[:, :, :M2] Aᵀ + [Q̄ A | 0],
    Ā = Q̄ᵀ T[:, :, :M2] + Tᵀ Q̄[:, :, :M2]."""

    @staticmethod
    def forward(ctx, t_mat, a3):
        ctx.save_for_backward(t_mat, a3)
        return axis_product(t_mat, a3)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, qbar):
        t_mat, a3 = ctx.saved_tensors
        m2 = a3.shape[2]
        abar = torch.bmm(qbar.transpose(1, 2), t_mat[:, :, :m2])
        abar.baddbmm_(t_mat.transpose(1, 2), qbar[:, :, :m2])
        return axis_product(qbar, a3), abar


@dataclass
class Batch:
    """A batch of frames of one system, laid out for :func:`predict` (A = frames × atoms).

    emb_s, emb_index: per embedding net k, the distinct inputs ŝ [U_k] and, for each of its
    slots (rows: all atoms, or the atoms of its centre type), the index [A_k, W_t] of its
    input; rhat [A, W, 4] r̂ per slot (virtual slots: n_pad · r̂_pad);
    jac [A, W, 4, 3] ∂r̂/∂r (Å⁻²); nbr [A·W] int64 global neighbour index (the atom itself
    for empty and virtual slots); rij [A, W, 3] Å or None (needed for the virial);
    types [A] int64; blocks: slot range [lo, hi) of each neighbour type;
    type_index: global indices of the atoms of each centre type; type_ranges: the same as
    [lo, hi) ranges when the atoms are sorted by type (else None);
    labels energy [B] eV, force [B, N, 3] eV/Å, virial [B, 9] eV or None.
    """

    emb_s: list[torch.Tensor]
    emb_index: list[torch.Tensor]
    rhat: torch.Tensor
    jac: torch.Tensor
    nbr: torch.Tensor
    rij: torch.Tensor | None
    types: torch.Tensor
    blocks: list[tuple[int, int]]
    type_index: list[torch.Tensor]
    type_ranges: list[tuple[int, int]] | None
    n_frames: int
    n_atoms: int
    energy: torch.Tensor
    force: torch.Tensor
    virial: torch.Tensor | None
    derived: dict = field(default_factory=dict)   # per-net kernel inputs, built on first use

    def block_inputs(self, k: int, rows: torch.Tensor | None, lo: int, hi: int,
                     row_lists: bool = True):
        """The slot kernels' inputs of net k: (r̂ source [A_k, ≥ col0 + W_t, 4], col0, its
        row lists (row_start [U + 1], row_slots [A_k·W_t]) int32 — the slots of each row,
        for ``row_adjoint``, or None unless ``row_lists``: only backward passes read them).
        The source is ``rhat`` itself (col0 = lo) when the net sees all atoms, else a copy
        of its atoms' block. Built once per batch."""
        if k not in self.derived:
            source, col0 = ((self.rhat.contiguous(), lo) if rows is None
                            else (self.rhat[rows, lo:hi].contiguous(), 0))
            self.derived[k] = source, col0, None
        source, col0, lists = self.derived[k]
        if row_lists and lists is None:
            flat = self.emb_index[k].reshape(-1)
            n_rows = self.emb_s[k].shape[0]
            row_start = torch.zeros(n_rows + 1, dtype=torch.int32, device=flat.device)
            row_start[1:] = torch.cumsum(torch.bincount(flat, minlength=n_rows), 0)
            lists = row_start, torch.argsort(flat, stable=True).to(torch.int32)
            self.derived[k] = source, col0, lists
        return self.derived[k]


def predict(net, batch: Batch, forces: bool = True, virial: bool = False,
            create_graph: bool = True, slot_kernels: bool | None = None) -> dict:
    """Energy [B] (eV), forces [B, N, 3] (eV/Å) and virial [B, 9] (eV) of ``batch``.

    ``net`` is a ``DeepPotSE`` (tanh embedding nets). With ``create_graph`` the outputs
    are differentiable in the parameters (forces through the second-order structure
    described in the module docstring); otherwise the forces are not (evaluate under
    ``torch.no_grad()``). ``slot_kernels``: slot sums by the Taichi kernels reading the rows
    (:class:`EmbeddingRows`, :class:`RowSlotGradient`; default on the CPU) or by gathered
    slots and batched products (:class:`EmbeddingTangent`, :class:`SlotGradient`).
    """
    n_all = batch.rhat.shape[0]
    nnei = float(net.nnei)
    dtype = batch.rhat.dtype
    ntypes = net.ntypes
    on_rows = batch.rhat.device.type == "cpu" if slot_kernels is None else slot_kernels
    embedded = []    # per net: (t_j, rows, G or [G; G'], G' or None, r̂, col0, link, index)
    t_mat = None
    for k, emb in enumerate(net.embeddings):
        if net.type_one_side:
            t_j, rows = k, None
        else:
            t_j, rows = k // ntypes, batch.type_index[k % ntypes]
            if rows.numel() == 0:
                continue
        lo, hi = batch.blocks[t_j]
        params = (_layer_kinds(emb), *layer_params(emb))
        if on_rows:
            r_blk, col0, row_lists = batch.block_inputs(k, rows, lo, hi, torch.is_grad_enabled())
            link = {}                                  # RowSlotGradient → EmbeddingRows
            contrib, g_val = EmbeddingRows.apply(batch.emb_s[k], batch.emb_index[k], r_blk, col0,
                                                 row_lists, link, *params)     # T, [G; G']
            g_tan = None
        else:
            r_blk, col0, link = (batch.rhat[:, lo:hi] if rows is None
                                 else batch.rhat[rows, lo:hi]), 0, None
            contrib, g_val, g_tan = EmbeddingTangent.apply(                    # T [rows, 4, M]
                batch.emb_s[k], batch.emb_index[k], r_blk, *params)
        if rows is None:
            t_mat = contrib if t_mat is None else t_mat + contrib
        else:
            if t_mat is None:
                t_mat = torch.zeros(n_all, 4, contrib.shape[2], dtype=dtype, device=contrib.device)
            t_mat = t_mat.index_add(0, rows, contrib)
        embedded.append((t_j, rows, g_val, g_tan, r_blk, col0, link, batch.emb_index[k]))
    t_mat = t_mat / nnei
    if not t_mat.requires_grad:
        t_mat.requires_grad_(True)       # the fallback differentiates the fitting in Tᵀ
    m2 = net.axis_neuron
    kinds = [fitting_kinds(fit) for fit in net.fittings]
    if all(k is not None for k in kinds):
        d = Descriptor.apply(t_mat, m2)                                         # Tᵀ T[:, :M2]
        if batch.type_ranges is not None:       # sorted by type: one split, no gathers
            d_types = torch.split(d, [hi - lo for lo, hi in batch.type_ranges])
        # e and A = ∂e/∂D from one Function per centre type; Q = ∂E/∂T by the product rule
        per_type = []
        for t, fit in enumerate(net.fittings):
            idx = batch.type_index[t]
            if idx.numel():
                d_t = d.index_select(0, idx) if batch.type_ranges is None else d_types[t]
                e_t, a_t = FittingWithGrad.apply(d_t, kinds[t], *layer_params(fit))
                per_type.append((idx, e_t + net.energy_bias[t], a_t))
        if batch.type_ranges is not None:       # sorted by type: concatenate, no scatter
            atom_e = torch.cat([e for _, e, _ in per_type])
            grad_d = torch.cat([a for _, _, a in per_type]) if forces else None
        else:
            atom_e = torch.zeros(n_all, dtype=dtype, device=d.device)
            grad_d = torch.zeros_like(d) if forces else None
            for idx, e_t, a_t in per_type:
                atom_e = atom_e.index_put((idx,), e_t)
                if forces:
                    grad_d = grad_d.index_put((idx,), a_t)
        energy = atom_e.view(batch.n_frames, batch.n_atoms).sum(1)
        out = dict(energy=energy, atom_energy=atom_e)
        if not forces:
            return out
        a3 = grad_d.view(n_all, t_mat.shape[2], m2)                           # ∂e/∂D [A, M, M2]
        q = AxisProduct.apply(t_mat, a3) if create_graph else axis_product(t_mat, a3).detach()
    else:
        with torch.enable_grad():           # (validation runs without grad: D must be in the graph)
            d = symmetric_descriptor(t_mat, m2)
            atom_e = torch.zeros(n_all, dtype=dtype, device=d.device)
            for t, fit in enumerate(net.fittings):
                idx = batch.type_index[t]
                if idx.numel():
                    e_t = fit(d.index_select(0, idx)).squeeze(1) + net.energy_bias[t]
                    atom_e = atom_e.index_put((idx,), e_t)
            energy = atom_e.view(batch.n_frames, batch.n_atoms).sum(1)
            out = dict(energy=energy, atom_energy=atom_e)
            if not forces:
                return out
            (q,) = torch.autograd.grad(atom_e.sum(), t_mat, create_graph=create_graph)
    g_blocks: dict[int, torch.Tensor] = {}
    for t_j, rows, g_val, g_tan, r_blk, col0, link, index in embedded:
        q_rows = q if rows is None else q.index_select(0, rows)                 # [rows, 4, M]
        if on_rows:
            g_blk = RowSlotGradient.apply(g_val, index, q_rows, r_blk, col0, link)
        else:
            g_blk = SlotGradient.apply(g_val, g_tan, q_rows.transpose(1, 2), r_blk)
        if rows is not None:                                                   # [rows, Wt, 4]
            prev = g_blocks.get(t_j)
            if prev is None:
                prev = torch.zeros(n_all, *g_blk.shape[1:], dtype=dtype, device=g_blk.device)
            g_blk = prev.index_add(0, rows, g_blk)
        g_blocks[t_j] = g_blk
    parts = []
    for t, (lo, hi) in enumerate(batch.blocks):
        parts.append(g_blocks[t] if t in g_blocks else
                     torch.zeros(n_all, hi - lo, 4, dtype=dtype, device=q.device))
    g = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)              # [A, W, 4]
    g = g / nnei
    n_slots = g.shape[1]
    f = torch.bmm(g.view(-1, 1, 4), batch.jac.view(-1, 4, 3)).view(n_all, n_slots, 3)  # ∂E/∂r
    force = f.sum(1).scatter_add(0, batch.nbr.unsqueeze(1).expand(-1, 3), -f.reshape(-1, 3))
    out["force"] = force.view(batch.n_frames, batch.n_atoms, 3)
    if virial:
        w_atom = -torch.matmul(batch.rij.transpose(1, 2), f)                   # [A, 3, 3]
        out["virial"] = w_atom.view(batch.n_frames, batch.n_atoms, 9).sum(1)
    return out
