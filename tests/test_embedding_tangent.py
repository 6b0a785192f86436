"""The embedding nets' tangent sweep (dpengine.model.embedding_tangent) and training's
hand-differentiated EmbeddingTangent (tools/train/fastpath.py) against autograd."""
import pytest
import torch

import dpengine.model.embedding_tangent as sweep
from dpengine.model.fitting_sweep import layer_params, tanh_layer_kinds
from dpengine.model.network import embedding_net
from tools.train.fastpath import EmbeddingTangent

# widths with a residual at the first layer (1 → 1, 1 → 2), equal and doubled widths
NEURONS = [[25, 50, 100], [2, 4, 8], [1, 1, 2], [8, 8, 16, 16]]


def _net(neurons, resnet_dt, seed):
    torch.manual_seed(seed)
    net = embedding_net(neurons, resnet_dt, "tanh", torch.float64)
    for p in net.parameters():
        p.data.normal_(0.0, 0.5)
    return net


def _autograd_tangent(net, s):
    """G [U, M] and G' = dG/ds [U, M] by autograd, differentiable in the parameters."""
    s = s.detach().clone().requires_grad_(True)
    g = net(s.unsqueeze(1))
    g_prime = torch.stack([torch.autograd.grad(g[:, m].sum(), s, create_graph=True)[0]
                           for m in range(g.shape[1])], 1)
    return g, g_prime


@pytest.mark.parametrize("neurons", NEURONS)
@pytest.mark.parametrize("resnet_dt", [False, True])
@pytest.mark.parametrize("rows_per_pass", [4000, 7])
def test_tangent_sweep_and_its_backward_match_autograd(monkeypatch, neurons, resnet_dt,
                                                       rows_per_pass):
    monkeypatch.setattr(sweep, "CPU_PASS_ROWS", rows_per_pass)
    net = _net(neurons, resnet_dt, seed=len(neurons) + 10 * resnet_dt)
    kinds = tanh_layer_kinds(net.layers)
    s = torch.rand(37, dtype=torch.float64) * 3.0 - 0.5
    g_ref, gp_ref = _autograd_tangent(net, s)
    out = torch.empty(2, 37, g_ref.shape[1], dtype=torch.float64)
    with torch.no_grad():
        sweep.embedding_tangent_passes(s, kinds, [p.detach() for p in layer_params(net)], out)
    assert torch.allclose(out[0], g_ref, rtol=0, atol=1e-13)
    assert torch.allclose(out[1], gp_ref, rtol=0, atol=1e-13)

    # a loss of T = Σ r̂ᵀG, G and G' over slots that repeat rows: parameter gradients
    index = torch.randint(0, 37, (5, 9))
    rhat = torch.randn(5, 9, 4, dtype=torch.float64)

    def loss_of(t_mat, g_val, g_tan):
        return (t_mat ** 2).sum() + (g_val * g_tan).sum() + (g_tan ** 3).sum()

    params = [p.detach().clone().requires_grad_(True) for p in layer_params(net)]
    loss = loss_of(*EmbeddingTangent.apply(s, index, rhat, kinds, *params))
    used = [p for p in params if p.numel()]
    grads = torch.autograd.grad(loss, used)
    flat = index.reshape(-1)
    g_val, g_tan = g_ref[flat].view(5, 9, -1), gp_ref[flat].view(5, 9, -1)
    ref_loss = loss_of(torch.bmm(rhat.transpose(1, 2), g_val), g_val, g_tan)
    ref_grads = torch.autograd.grad(ref_loss, [p for p in layer_params(net) if p.numel()])
    assert abs(loss.item() - ref_loss.item()) < 1e-10 * abs(ref_loss.item())
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)
