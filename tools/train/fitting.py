"""The fitting net and its input gradient in one autograd Function (fast path of training).

For the rows (atoms) of one centre type, with hidden layers l = 1..L (h = tanh z,
d = 1 − h²) and a linear output layer (w_o, b_o):

    forward   z_l = x_{l−1} W_l + b_l,   x_l = idt_l·h_l + res(x_{l−1}),   e = x_L w_o + b_o
    reverse   a_L = w_oᵀ,   δ_l = a_l·idt_l·d_l,   a_{l−1} = δ_l W_lᵀ + resᵀ(a_l),   A = a_0 = ∂e/∂D

``FittingWithGrad`` returns (e [n], A = ∂e/∂D [n, K]) (the sweeps of
:mod:`dpengine.model.fitting_sweep`) and differentiates both by hand
(the adjoint of the reverse sweep, then of the forward sweep), so the force loss — which
depends on A — needs no double backpropagation through autograd:

    adjoint of the reverse sweep, l = 1..L (ā_0 = Ā):
        δ̄_l = ā_{l−1} W_l,   W̄_l += ā_{l−1}ᵀ δ_l,   ā_l = res(ā_{l−1}) + δ̄_l·idt_l·d_l,
        idt̄_l += Σ δ̄_l·a_l·d_l,   h̄_l = −2 h_l·δ̄_l·a_l·idt_l;      w̄_o += Σ_rows ā_L
    adjoint of the forward sweep, l = L..1 (x̄_L = ē w_oᵀ):
        h̄_l += idt_l·x̄_l,   idt̄_l += Σ x̄_l·h_l,   z̄_l = h̄_l·d_l,
        W̄_l += x_{l−1}ᵀ z̄_l,   b̄_l = Σ z̄_l,   x̄_{l−1} = z̄_l W_lᵀ + resᵀ(x̄_l),   D̄ = x̄_0

res(x) is x (equal widths), [x, x] (doubled width) or nothing; resᵀ its adjoint. tanh z
is evaluated as 2·sigmoid(2z) − 1 (equal to round-off, half the cost in float64).
"""
from __future__ import annotations

import torch

from dpengine.model.fitting_sweep import _res, _res_t, fitting_sweeps


class FittingWithGrad(torch.autograd.Function):
    """(e [n], ∂e/∂D [n, K]) of a tanh fitting net at inputs D [n, K]; see the module docstring."""

    @staticmethod
    def forward(ctx, d, kinds, *params):
        e, a, saved = fitting_sweeps(d, kinds, *params)
        ctx.kinds = kinds
        ctx.save_for_backward(*saved, *params)
        return e, a

    @staticmethod
    def backward(ctx, ebar, abar):
        kinds = ctx.kinds
        L = len(kinds)
        saved = ctx.saved_tensors
        xs, hs, ds = saved[:L + 1], saved[L + 1:2 * L + 1], saved[2 * L + 1:3 * L + 1]
        avals, deltas = saved[3 * L + 1:4 * L + 1], saved[4 * L + 1:5 * L + 1]
        params = saved[5 * L + 1:]
        grads = [None] * len(params)
        w_o = params[3 * L]
        n = xs[0].shape[0]
        wgrad = [None] * L        # W̄_l: the first product writes it, the second adds
        idt_grad = [None] * L
        hbar_rev = [None] * L
        w_o_grad = torch.zeros_like(w_o)
        if abar is not None:                               # adjoint of the reverse sweep
            ab = abar
            for l in range(L):
                res, use_idt = kinds[l]
                w, idt = params[3 * l], params[3 * l + 2]
                dbar = torch.mm(ab, w)                      # δ̄_l
                wgrad[l] = torch.mm(ab.t(), deltas[l])
                nxt = _res(ab, res)
                sd = ds[l] * idt if use_idt else ds[l]
                nxt = dbar * sd if nxt is None else torch.addcmul(nxt, dbar, sd)
                da = dbar * avals[l]
                if use_idt:
                    idt_grad[l] = (da * ds[l]).sum(0)
                    da = da * idt
                hbar_rev[l] = da.mul_(hs[l]).mul_(-2.0)
                ab = nxt
            w_o_grad += ab.sum(0).unsqueeze(1)
        if ebar is None:
            ebar = torch.zeros(n, dtype=w_o.dtype, device=w_o.device)
        xbar = ebar.unsqueeze(1) * w_o.t()                  # adjoint of the forward sweep
        w_o_grad.addmm_(xs[L].t(), ebar.unsqueeze(1))
        grads[3 * L], grads[3 * L + 1] = w_o_grad, ebar.sum().reshape(1)
        for l in range(L - 1, -1, -1):
            res, use_idt = kinds[l]
            w, idt = params[3 * l], params[3 * l + 2]
            hbar = xbar * idt if use_idt else xbar
            if use_idt:
                g_idt = (xbar * hs[l]).sum(0)
                idt_grad[l] = g_idt if idt_grad[l] is None else idt_grad[l] + g_idt
            if hbar_rev[l] is not None:
                hbar = hbar + hbar_rev[l]
            zbar = hbar * ds[l]
            wgrad[l] = (torch.mm(xs[l].t(), zbar) if wgrad[l] is None
                        else wgrad[l].addmm_(xs[l].t(), zbar))
            grads[3 * l], grads[3 * l + 1] = wgrad[l], zbar.sum(0)
            grads[3 * l + 2] = idt_grad[l] if use_idt else None
            skip = _res_t(xbar, res, w.shape[0])
            xbar = torch.mm(zbar, w.t()) if skip is None else torch.addmm(skip, zbar, w.t())
        return (xbar, None, *grads)
