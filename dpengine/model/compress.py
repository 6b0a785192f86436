"""Model compression: tabulate every embedding net as piecewise quintic polynomials.

On knots x_q = lo + q·h the table matches the network's value, first and second
derivative at both ends of each interval (quintic Hermite), so G, G' and G'' are
continuous. With y, y', y'' at the left knot and Δ = y₁ − y₀ − y₀'h − y₀''h²/2,
Δ' = y₁' − y₀' − y₀''h, Δ'' = y₁'' − y₀'':

    c₀ = y₀, c₁ = y₀', c₂ = y₀''/2,
    c₃ = (20Δ − 8Δ'h + Δ''h²)/(2h³), c₄ = (−30Δ + 14Δ'h − 2Δ''h²)/(2h⁴),
    c₅ = (12Δ − 6Δ'h + Δ''h²)/(2h⁵).

The range covers every normalised input the model can see: from an empty slot or a
neighbour at the cutoff (s = 0, x = −davg/dstd) up to a neighbour at ``min_distance``
(s = 1/r_min), with r_min = 0.6 × the closest distance in the training data. Inputs outside
it are detected at run time and that force call falls back to the network (exact).
"""
import io
from pathlib import Path

import numpy as np
import torch

from dpengine.model.io import HYPER_KEYS, eager_copy, load_network, read_metadata, save_model


#: The table reaches neighbours at this fraction of the model's minimum distance.
EXTRAPOLATE = 0.6


def table_range(net, min_distance: float) -> tuple[float, float]:
    """[lo, hi] of the normalised radial input x = (s − davg)/dstd over all centre types."""
    davg = net.davg[:, :, 0].detach().cpu().double()
    dstd = net.dstd[:, :, 0].detach().cpu().double()
    lo = float((-davg / dstd).min())
    hi = float(((1.0 / min_distance - davg) / dstd).max())
    return lo, hi


def _derivatives_tanh(mlp, x: torch.Tensor):
    """G, G', G'' of a tanh embedding net at x [K, 1] by forward-mode propagation.

    Per layer z = y·W + b, a = tanh z: a' = (1 − a²) z', a'' = (1 − a²) z'' − 2a(1 − a²) z'²,
    then × idt and + the residual (x or [x, x]) of value and derivatives alike.
    """
    y, dy, ddy = x, torch.ones_like(x), torch.zeros_like(x)
    for layer in mlp.layers:
        z, dz, ddz = y @ layer.matrix + layer.bias, dy @ layer.matrix, ddy @ layer.matrix
        if layer.activation == "tanh":
            a = torch.tanh(z)
            da = (1 - a * a) * dz
            dda = (1 - a * a) * ddz - 2 * a * (1 - a * a) * dz * dz
        else:  # "linear"
            a, da, dda = z, dz, ddz
        if layer.use_idt:
            a, da, dda = a * layer.idt, da * layer.idt, dda * layer.idt
        if layer.resnet and a.shape[-1] in (y.shape[-1], 2 * y.shape[-1]):
            rep = a.shape[-1] // y.shape[-1]
            a, da, dda = a + y.repeat(1, rep), da + dy.repeat(1, rep), dda + ddy.repeat(1, rep)
        y, dy, ddy = a, da, dda
    return y, dy, ddy


def _derivatives_autograd(net, k: int, x: torch.Tensor):
    """G, G', G'' of embedding net k at x [K, 1] by reverse mode, one channel at a time."""
    x = x.clone().requires_grad_(True)
    g = net.embed(k, x)
    d1, d2 = torch.zeros_like(g), torch.zeros_like(g)
    for m in range(g.shape[1]):  # rows are independent: column sums give per-row derivatives
        (gm,) = torch.autograd.grad(g[:, m].sum(), x, create_graph=True)
        (gmm,) = torch.autograd.grad(gm.sum(), x, retain_graph=True)
        d1[:, m], d2[:, m] = gm[:, 0].detach(), gmm[:, 0]
    return g.detach(), d1, d2


def tabulate(net, lo: float, hi: float, step: float) -> np.ndarray:
    """coeffs [n_emb, n_int, M, 6] of every embedding net on [lo, hi] with knot spacing step."""
    n_int = int(np.ceil((hi - lo) / step))
    knots = (lo + step * torch.arange(n_int + 1, dtype=torch.float64)).unsqueeze(1)
    tables = []
    for k, mlp in enumerate(net.embeddings):
        with torch.no_grad():
            if all(layer.activation in ("tanh", "linear") for layer in mlp.layers):
                g, dg, ddg = _derivatives_tanh(mlp, knots)
            else:
                g = None
        if g is None:
            g, dg, ddg = _derivatives_autograd(net, k, knots)
        y, dy, ddy = (a.numpy() for a in (g, dg, ddg))
        y0, y1, d0, dd0 = y[:-1], y[1:], dy[:-1], ddy[:-1]
        h = step
        delta = y1 - y0 - d0 * h - dd0 * h * h / 2
        delta1 = dy[1:] - d0 - dd0 * h
        delta2 = ddy[1:] - dd0
        coeffs = np.stack([y0, d0, dd0 / 2,
                           (20 * delta - 8 * delta1 * h + delta2 * h * h) / (2 * h ** 3),
                           (-30 * delta + 14 * delta1 * h - 2 * delta2 * h * h) / (2 * h ** 4),
                           (12 * delta - 6 * delta1 * h + delta2 * h * h) / (2 * h ** 5)], axis=-1)
        tables.append(coeffs)
    return np.stack(tables)


def compress_model(source, output, step: float = 0.01, min_distance: float | None = None) -> Path:
    """Write ``output``: the model ``source`` plus the tables of its embedding nets."""
    meta = read_metadata(source)
    if min_distance is None:
        min_distance = meta.get("min_nbor_dist")
    if min_distance is None or not min_distance > 0:
        raise ValueError(f"{source}: the model records no minimal neighbour distance; "
                         "give one with --min-distance (Å)")
    if not step > 0:
        raise ValueError(f"--step must be positive, got {step}")
    loaded, _ = load_network(source)
    net = eager_copy(loaded, meta)  # rebuilt so the file has every method of this version
    if net is None:
        raise ValueError(f"{source}: written by another dpengine version; re-freeze or re-import it")
    hyper = {k: meta[k] for k in HYPER_KEYS}
    # MD compresses bonds below the closest distance of the training data: tabulate down
    # to EXTRAPOLATE × r_min (water: 0.53 Å) so hot dynamics stays on the table
    lo, hi = table_range(net, EXTRAPOLATE * float(min_distance))
    lo, hi = lo - step, hi + step
    coeffs = tabulate(net, lo, hi, step)
    buf = io.BytesIO()
    np.save(buf, coeffs)
    extra = {k: v for k, v in meta.items() if k not in hyper and k not in
             ("format", "descriptor", "dpengine_version", "precision")}
    extra["compression"] = dict(step=step, lo=lo, hi=hi, min_distance=float(min_distance),
                                intervals=int(coeffs.shape[1]))
    return save_model(net, output, extra=extra, files={"compression.npy": buf.getvalue()})
