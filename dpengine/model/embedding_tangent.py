"""A tanh embedding net's value and input derivative at scalar inputs, by one forward sweep.

The embedding net G = N_emb(ŝ) [M] has a scalar input, so G' = dG/dŝ comes from
forward-mode differentiation alongside G. Activations are row-major, [U, width] for U
inputs, value and tangent stacked, X = [x; ẋ] [2, U, width]: the result is already the
row store [2, U, M] the slot-sum kernels read (no transposing copy), and every layer is
two GEMMs with one weight matrix W [n_in, width]. Per layer (h = tanh z, d = 1 − h²):

    z = xW + b,   ż = ẋW,   y = idt·h + res(x),   ẏ = idt·d·ż + res(ẋ),   (x, ẋ) = (ŝ, 1)

res(x) is x (equal widths), [x, x] (doubled width) or nothing. The first layer, whose
input is the scalar ŝ, is an outer product, z = ŝ w + b and ż = w (a broadcast row, no
GEMM). tanh z is evaluated as 2·sigmoid(2z) − 1 (equal to round-off, half the cost of
torch.tanh in float64). Used by the MD force path (dpengine.deeppot) and by training's
hand-differentiated ``EmbeddingTangent`` (tools/train/fastpath.py), which keeps the
per-layer activations.
"""
from __future__ import annotations

import torch

from dpengine.model.fitting_sweep import _DOUBLE, _EQUAL, tanh_from_doubled_

CPU_PASS_ROWS = 4000   # embedding inputs per sweep pass on the CPU
GPU_PASS_ROWS = 1 << 20   # embedding inputs per sweep pass on a GPU


def embedding_tangent(s: torch.Tensor, kinds, params, saved: list | None = None,
                      workspace=None, out: torch.Tensor | None = None) -> torch.Tensor:
    """[G; G'] [2, U, M] of the embedding net at inputs s [U] (its dtype).

    ``kinds`` from :func:`dpengine.model.fitting_sweep.tanh_layer_kinds`, ``params`` the
    layers' (W [n_in, n_out], b [n_out], idt [n_out]) in order. If ``saved`` is a list,
    (x, h, d, ż) of every layer are appended to it (for a hand-written backward; the first
    layer's ż is its weight row w expanded over the rows, no storage). ``workspace(name, shape,
    dtype)`` gives the temporaries when set (reused storage; the result is then valid until
    the next call with that workspace; not with ``saved``). ``out`` [2, U, M] (each half
    contiguous) receives the result when given.
    """
    n = s.shape[0]
    opts = dict(dtype=s.dtype, device=s.device)
    if workspace is None:
        def new(name, *shape):
            return torch.empty(*shape, **opts)
    else:
        def new(name, *shape):
            return workspace(f"sweep_{name}", shape, s.dtype)
    x = new("input", 2, n, 1)
    x[0, :, 0] = s
    x[1] = 1.0
    last = len(kinds) - 1
    for l, (res, use_idt) in enumerate(kinds):
        w, b, idt = params[3 * l], params[3 * l + 1], params[3 * l + 2]
        n_in, width = w.shape
        if l == 0:                      # scalar input: 2z = ŝ (2w) + 2b, ż = w
            if n_in != 1:
                raise ValueError(f"embedding net input width {n_in}, expected 1")
            z = torch.addcmul(b + b, x[0], w + w, out=new("z0", n, width))
            zt = w.expand(n, width)
        else:
            z = new(f"z{l}", 2, n, width)
            torch.addmm(b, x[0], w, beta=2.0, alpha=2.0, out=z[0])              # 2z
            torch.mm(x[1], w, out=z[1])                                          # ż
            z, zt = z[0], z[1]
        h = tanh_from_doubled_(z)                                                # tanh z
        d = torch.addcmul(torch.ones((), **opts), h, h, value=-1.0, out=new(f"d{l}", n, width))
        y = out if l == last and out is not None else new(f"y{l}", 2, n, width)
        if use_idt:
            torch.mul(h, idt, out=y[0])
            torch.mul(d, zt, out=y[1]).mul_(idt)
            if res == _EQUAL:
                y.add_(x)
            elif res == _DOUBLE:
                y.view(2, n, 2, n_in).add_(x.unsqueeze(2))
        elif res == _EQUAL:
            torch.add(h, x[0], out=y[0])
            torch.addcmul(x[1], d, zt, out=y[1])
        elif res == _DOUBLE:
            torch.add(h.view(n, 2, n_in), x[0].unsqueeze(1), out=y[0].view(n, 2, n_in))
            torch.addcmul(x[1].unsqueeze(1), d.view(n, 2, n_in), zt.view(n, 2, n_in),
                          out=y[1].view(n, 2, n_in))
        else:
            y[0].copy_(h)
            torch.mul(d, zt, out=y[1])
        if saved is not None:
            saved += [x, h, d, zt]
        x = y
    return x


def _balanced_pass(count: int, per_pass: int) -> int:
    """Rows per pass when ``count`` rows go through in passes of ≤ ``per_pass``: equal
    passes, no small tail."""
    passes = -(-count // max(per_pass, 1))
    return max(1, -(-count // max(passes, 1)))


def embedding_tangent_passes(s: torch.Tensor, kinds, params, out: torch.Tensor,
                             saved: list | None = None, workspace=None) -> None:
    """out [2, U, M] ← [G; G'] of the embedding net at s [U], :func:`embedding_tangent`
    over equal passes of ≤ CPU_PASS_ROWS rows on the CPU (a pass's [2, rows, width]
    temporaries stay in cache: 2–3× faster per row than one pass over 8k rows here;
    GPU_PASS_ROWS on a GPU). If ``saved`` is a list, (lo, hi, activations) of every pass
    are appended to it."""
    step = _balanced_pass(s.shape[0], CPU_PASS_ROWS if s.device.type == "cpu" else GPU_PASS_ROWS)
    for lo in range(0, s.shape[0], step):
        hi = min(lo + step, s.shape[0])
        acts = None if saved is None else []
        embedding_tangent(s[lo:hi], kinds, params, acts, workspace, out=out[:, lo:hi])
        if saved is not None:
            saved.append((lo, hi, acts))
