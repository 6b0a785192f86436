"""A tanh fitting net's energy and its gradient in the input, by two explicit sweeps.

For the rows (atoms) of one centre type, with hidden layers l = 1..L (h = tanh z,
d = 1 − h²) and a linear output layer (w_o, b_o):

    forward   z_l = x_{l−1} W_l + b_l,   x_l = idt_l·h_l + res(x_{l−1}),   e = x_L w_o + b_o
    reverse   a_L = w_oᵀ,   δ_l = a_l·idt_l·d_l,   a_{l−1} = δ_l W_lᵀ + resᵀ(a_l),   A = a_0 = ∂e/∂D

res(x) is x (equal widths), [x, x] (doubled width) or nothing; resᵀ its adjoint. tanh z
is evaluated as 2·sigmoid(2z) − 1 (equal to round-off, half the cost in float64). The MD
force call uses (e, A) directly (no autograd graph); training differentiates both sweeps
by hand (tools/train/fitting.py).
"""
from __future__ import annotations

import torch

_NONE, _EQUAL, _DOUBLE = 0, 1, 2


def tanh_from_doubled_(z2: torch.Tensor) -> torch.Tensor:
    """tanh z in place from z2 = 2z, as 2σ(2z) − 1: in float64 on the CPU about half the
    cost of torch.tanh, equal to round-off; the affine step is one pass."""
    minus_one = torch.full((), -1.0, dtype=z2.dtype, device=z2.device)
    return torch.add(minus_one, torch.sigmoid_(z2), alpha=2.0, out=z2)


def tanh_layer_kinds(layers) -> tuple[tuple[int, bool], ...] | None:
    """(residual kind, uses idt) of each layer, or None if one of them is not a tanh layer."""
    kinds = []
    for layer in layers:
        if layer.activation != "tanh":
            return None
        n_in, n_out = layer.matrix.shape
        res = _NONE
        if layer.resnet and n_in == n_out:
            res = _EQUAL
        elif layer.resnet and 2 * n_in == n_out:
            res = _DOUBLE
        kinds.append((res, bool(layer.use_idt)))
    return tuple(kinds)


def fitting_kinds(mlp) -> tuple[tuple[int, bool], ...] | None:
    """(residual kind, uses idt) per hidden layer, or None if the fast path does not apply
    (a non-tanh hidden layer, or an output layer that is not linear)."""
    layers = list(mlp.layers)
    if layers[-1].activation != "linear" or layers[-1].resnet or layers[-1].use_idt:
        return None
    return tanh_layer_kinds(layers[:-1])


def layer_params(mlp) -> list[torch.Tensor]:
    """(W, b, idt) of every layer of an ``MLP``, flat (as the sweeps and Functions take them)."""
    out = []
    for layer in mlp.layers:
        out += [layer.matrix, layer.bias, layer.idt]
    return out


def _res(x: torch.Tensor, kind: int) -> torch.Tensor | None:
    if kind == _EQUAL:
        return x
    if kind == _DOUBLE:
        return torch.cat([x, x], 1)
    return None


def _res_t(a: torch.Tensor, kind: int, n_in: int) -> torch.Tensor | None:
    if kind == _EQUAL:
        return a
    if kind == _DOUBLE:
        return a[:, :n_in] + a[:, n_in:]
    return None


def fitting_sweeps(d: torch.Tensor, kinds, *params):
    """(e [n] (eV, without the type's energy bias), A = ∂e/∂D [n, K], saved) of a fitting
    net at inputs D [n, K]; ``kinds`` from :func:`fitting_kinds`, ``params`` from
    :func:`layer_params`; ``saved`` = the per-layer x, h, d, a, δ (for a hand-written
    backward)."""
    n_hidden = len(kinds)
    x = d
    xs, hs, ds = [d], [], []
    for l, (res, use_idt) in enumerate(kinds):
        w, b, idt = params[3 * l: 3 * l + 3]
        h = tanh_from_doubled_(torch.addmm(b, x, w, beta=2.0, alpha=2.0))
        dd = torch.addcmul(torch.ones((), dtype=h.dtype, device=h.device), h, h, value=-1.0)
        y = h * idt if use_idt else h
        skip = _res(x, res)
        x = y + skip if skip is not None else y.clone() if y is h else y
        xs.append(x)
        hs.append(h)
        ds.append(dd)
    w_o, b_o = params[3 * n_hidden], params[3 * n_hidden + 1]
    e = torch.addmm(b_o, x, w_o).squeeze(1)
    a = w_o.t().expand(d.shape[0], -1)
    avals, deltas = [], []
    for l in range(n_hidden - 1, -1, -1):
        res, use_idt = kinds[l]
        w, idt = params[3 * l], params[3 * l + 2]
        scale = ds[l] * idt if use_idt else ds[l]
        delta = a * scale
        skip = _res_t(a, res, w.shape[0])
        a_prev = torch.mm(delta, w.t()) if skip is None else torch.addmm(skip, delta, w.t())
        avals.append(a)
        deltas.append(delta)
        a = a_prev
    avals.reverse()
    deltas.reverse()
    return e, a, (*xs, *hs, *ds, *avals, *deltas)
