"""Build the engine's ``DeepPotSE`` for training, initialised as DeePMD-kit does.

DeePMD-kit's layers (``MLPLayer``): W ~ N(0, 1/(n_in + n_out)), b ~ N(0, 1), and, only in
layers whose output width equals or doubles the input width (those with a residual),
a timestep vector idt ~ N(0.1, 0.001²) when ``resnet_dt``. The energy bias and davg/dstd
are filled from the data (:mod:`.stats`) before training.
"""
from __future__ import annotations

import math

import torch

from dpengine.model.network import DeepPotSE

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def build_network(model: dict, sel: list[int]) -> DeepPotSE:
    """A ``DeepPotSE`` for the validated ``[model]`` table ``model`` (see :mod:`.config`)."""
    desc, fit = model["descriptor"], model["fitting"]
    # (DenseLayer gives idt only to layers where a residual can apply, DeePMD-kit's rule)
    return DeepPotSE(list(model["type_map"]), list(sel), desc["rcut"], desc["rcut_smth"],
                     list(desc["neuron"]), desc["axis_neuron"], list(fit["neuron"]),
                     type_one_side=desc["type_one_side"], embedding_resnet_dt=desc["resnet_dt"],
                     fitting_resnet_dt=fit["resnet_dt"], activation=desc["activation"],
                     fitting_activation=fit["activation"], dtype=DTYPES[model["precision"]])


def init_parameters(net: DeepPotSE, seed: int) -> None:
    """DeePMD-kit's default normal initialisation, from a ``torch.Generator`` seeded ``seed``."""
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for mlp in list(net.embeddings) + list(net.fittings):
            for layer in mlp.layers:
                n_in, n_out = layer.matrix.shape
                w = torch.randn(n_in, n_out, generator=gen, dtype=torch.float64)
                layer.matrix.copy_(w / math.sqrt(n_in + n_out))
                layer.bias.copy_(torch.randn(n_out, generator=gen, dtype=torch.float64))
                if layer.use_idt:
                    layer.idt.copy_(0.1 + 0.001 * torch.randn(n_out, generator=gen,
                                                              dtype=torch.float64))


def block_uniform(net: DeepPotSE) -> bool:
    """True if davg and dstd are the same for all slots of each type block (as DeePMD-kit makes them)."""
    for stat in (net.davg, net.dstd):
        for t in range(net.ntypes):
            block = stat[:, net.sec[t]:net.sec[t + 1]]
            if block.numel() and not torch.equal(block, block[:, :1].expand_as(block)):
                return False
    return True
