"""A tanh embedding net's value and input derivative at scalar inputs, by one forward sweep.

The embedding net G = N_emb(ŝ) [M] has a scalar input, so G' = dG/dŝ comes from
forward-mode differentiation alongside G. Activations are feature-major, [width, U] for
U inputs (MKL multiplies such operands markedly faster than [U, width] ones); value and
tangent are stacked, X = [x; ẋ] [2, width, U], so a layer is two GEMMs with one weight
matrix. Per layer (h = tanh z, d = 1 − h²):

    z = Wᵀx + b,   ż = Wᵀẋ,   y = idt·h + res(x),   ẏ = idt·d·ż + res(ẋ),   (x, ẋ) = (ŝ, 1)

res(x) is x (equal widths), [x; x] (doubled width) or nothing; tanh z is evaluated as
2·sigmoid(2z) − 1 (equal to round-off, half the cost of torch.tanh in float64). Used by
the MD force path (dpengine.deeppot) and by training's hand-differentiated
``EmbeddingTangent`` (tools/train/fastpath.py), which keeps the per-layer activations.
"""
from __future__ import annotations

import torch

from dpengine.model.fitting_sweep import _DOUBLE, _EQUAL


def embedding_tangent(s: torch.Tensor, kinds, params, saved: list | None = None,
                      workspace=None) -> torch.Tensor:
    """[G; G'] [2, M, U] of the embedding net at inputs s [U] (its dtype).

    ``kinds`` from :func:`dpengine.model.fitting_sweep.tanh_layer_kinds`, ``params`` the
    layers' (W [n_in, n_out], b [n_out], idt [n_out]) in order. If ``saved`` is a list,
    (x, h, d, ż) of every layer are appended to it (for a hand-written backward).
    ``workspace(name, shape, dtype)`` gives the temporaries when set (reused storage; the
    result is then valid until the next call with that workspace; not with ``saved``).
    """
    n = s.shape[0]
    opts = dict(dtype=s.dtype, device=s.device)
    if workspace is None:
        def new(name, *shape):
            return torch.empty(*shape, **opts)
    else:
        def new(name, *shape):
            return workspace(f"sweep_{name}", shape, s.dtype)
    x = new("input", 2, 1, n)
    x[0, 0] = s
    x[1] = 1.0
    for l, (res, use_idt) in enumerate(kinds):
        w, b, idt = params[3 * l], params[3 * l + 1], params[3 * l + 2]
        width, n_in = w.shape[1], w.shape[0]
        z = new(f"z{l}", 2, width, n)
        torch.addmm(b.unsqueeze(1), w.t(), x[0], beta=2.0, alpha=2.0, out=z[0])   # 2z
        torch.mm(w.t(), x[1], out=z[1])                                             # ż
        h = torch.sigmoid_(z[0]).mul_(2.0).sub_(1.0)                                # tanh z
        zt = z[1]
        d = torch.addcmul(torch.ones((), **opts), h, h, value=-1.0, out=new(f"d{l}", width, n))
        y = new(f"y{l}", 2, width, n)
        if use_idt:
            torch.mul(h, idt.unsqueeze(1), out=y[0])
            torch.mul(d, zt, out=y[1]).mul_(idt.unsqueeze(1))
            if res == _EQUAL:
                y.add_(x)
            elif res == _DOUBLE:
                y.view(2, 2, n_in, n).add_(x.unsqueeze(1))
        elif res == _EQUAL:
            torch.add(h, x[0], out=y[0])
            torch.addcmul(x[1], d, zt, out=y[1])
        elif res == _DOUBLE:
            torch.add(h.view(2, n_in, n), x[0].unsqueeze(0), out=y[0].view(2, n_in, n))
            torch.addcmul(x[1].unsqueeze(0), d.view(2, n_in, n), zt.view(2, n_in, n),
                          out=y[1].view(2, n_in, n))
        else:
            y[0].copy_(h)
            torch.mul(d, zt, out=y[1])
        if saved is not None:
            saved += [x, h, d, zt]
        x = y
    return x
