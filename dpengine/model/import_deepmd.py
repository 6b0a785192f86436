"""Convert a DeePMD-kit v3 (PyTorch backend) frozen se_e2_a model into a dpengine model.

The frozen ``.pth`` is TorchScript; its submodules keep their attributes, so the
conversion reads hyper-parameters (rcut, rcut_smth, sel, neuron, axis_neuron,
type_one_side, activation), the statistics (davg/dstd), the network weights, and the
per-type energy bias (fitting ``bias_atom_e`` + atomic model ``out_bias``) directly.
"""
import os
import re
from pathlib import Path

import torch

from dpengine.model.io import save_model
from dpengine.model.network import DeepPotSE


class ImportError_(ValueError):
    """The file is not a DeePMD-kit model that dpengine can represent."""


def _layers(network) -> list:
    return [layer for _, layer in network.layers.named_children()]


def _activation(layer) -> str:
    """dpengine's name of a DeePMD-kit layer's activation ("gelu_tf" is the same tanh-form
    GELU as "gelu" in DeePMD-kit's PyTorch backend; "none" is linear)."""
    act = str(layer.activate.activation).lower() if layer.activate.activation else "linear"
    return {"none": "linear", "gelu_tf": "gelu"}.get(act, act)


def _copy_mlp(dst, src_layers, what: str) -> None:
    if len(dst.layers) != len(src_layers):
        raise ImportError_(f"{what}: {len(src_layers)} layers, expected {len(dst.layers)}")
    for ours, theirs in zip(dst.layers, src_layers):
        if tuple(ours.matrix.shape) != tuple(theirs.matrix.shape):
            raise ImportError_(f"{what}: layer shape {tuple(theirs.matrix.shape)} "
                               f"!= {tuple(ours.matrix.shape)}")
        ours.activation = _activation(theirs)
        ours.resnet = bool(theirs.resnet)
        with torch.no_grad():
            ours.matrix.copy_(theirs.matrix.to(torch.float64))
            ours.bias.copy_(theirs.bias.to(torch.float64).reshape(-1))
            if theirs.idt is not None:
                ours.use_idt = True
                ours.idt = torch.nn.Parameter(theirs.idt.detach().to(torch.float64).clone())
            else:
                ours.use_idt = False
                ours.idt = torch.nn.Parameter(torch.ones(0, dtype=torch.float64))


def convert_deepmd(frozen: str | os.PathLike) -> DeepPotSE:
    """Build a ``DeepPotSE`` equal to the DeePMD-kit frozen model at ``frozen``."""
    frozen = Path(frozen)
    if not frozen.is_file():
        raise ImportError_(f"{frozen}: file not found")
    try:
        dp = torch.jit.load(str(frozen), map_location="cpu")
    except Exception as exc:
        reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        custom_op = re.search(r"Unknown builtin op: (deepmd::\w+)", str(exc))
        if custom_op:
            raise ImportError_(f"{frozen}: needs DeePMD-kit's custom operator {custom_op.group(1)} "
                               "(a model compressed with `dp compress`); import the frozen model "
                               "from before compression, then `dpengine compress` it") from None
        raise ImportError_(f"{frozen}: not a TorchScript file; DeePMD-kit's TensorFlow .pb models "
                           f"must be converted with `dp convert-backend model.pb model.pth` first "
                           f"({reason})") from None
    try:
        atomic = dp.atomic_model
        descrpt = atomic.descriptor
    except AttributeError:
        raise ImportError_(f"{frozen}: not a DeePMD-kit v3 standard model "
                           "(no atomic_model.descriptor)") from None
    dtype_name = descrpt.original_name
    if dtype_name != "DescrptSeA":
        raise ImportError_(f"{frozen}: descriptor type {dtype_name!r} is not supported; "
                           "dpengine imports se_e2_a (DescrptSeA) models only")
    fit = atomic.fitting_net
    if fit.original_name != "EnergyFittingNet":
        raise ImportError_(f"{frozen}: fitting {fit.original_name!r} is not supported "
                           "(energy fitting only)")
    sea = descrpt.sea
    if not sea.emask.no_exclusion:
        raise ImportError_(f"{frozen}: exclude_types are not supported")
    if float(sea.env_protection) != 0.0:
        raise ImportError_(f"{frozen}: env_protection != 0 is not supported")
    if int(fit.numb_fparam) or int(fit.numb_aparam):
        raise ImportError_(f"{frozen}: frame/atomic parameters (fparam/aparam) are not supported")
    type_map = list(dp.get_type_map())
    emb_nets = [net for _, net in sea.filter_layers.networks.named_children()]
    fit_nets = [net for _, net in fit.filter_layers.networks.named_children()]
    emb_layers = [_layers(n) for n in emb_nets]
    fit_layers = [_layers(n) for n in fit_nets]
    act, fit_act = (_activation(layers[0][0]) for layers in (emb_layers, fit_layers))
    model = DeepPotSE(
        type_map=type_map, sel=list(sea.sel), rcut=float(sea.rcut), rcut_smth=float(sea.rcut_smth),
        neuron=list(sea.neuron), axis_neuron=int(sea.axis_neuron),
        fitting_neuron=list(fit.neuron), type_one_side=bool(sea.type_one_side),
        embedding_resnet_dt=bool(sea.resnet_dt), fitting_resnet_dt=bool(fit.resnet_dt),
        activation=act, fitting_activation=fit_act, dtype=torch.float64)
    if len(emb_nets) != len(model.embeddings) or len(fit_nets) != len(model.fittings):
        raise ImportError_(f"{frozen}: {len(emb_nets)} embedding / {len(fit_nets)} fitting nets, "
                           f"expected {len(model.embeddings)} / {len(model.fittings)}")
    for k, (ours, theirs) in enumerate(zip(model.embeddings, emb_layers)):
        _copy_mlp(ours, theirs, f"{frozen}: embedding net {k}")
    for k, (ours, theirs) in enumerate(zip(model.fittings, fit_layers)):
        _copy_mlp(ours, theirs, f"{frozen}: fitting net {k}")
    bias = fit.bias_atom_e.to(torch.float64).reshape(len(type_map), -1)[:, 0]
    out_bias = getattr(atomic, "out_bias", None)
    if out_bias is not None:
        bias = bias + out_bias.to(torch.float64)[0, :, 0]
    with torch.no_grad():
        model.davg.copy_(sea.mean.to(torch.float64))
        model.dstd.copy_(sea.stddev.to(torch.float64))
        model.energy_bias.copy_(bias)
    return model


def import_deepmd(frozen: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Convert ``frozen`` and write the dpengine model file ``output``."""
    model = convert_deepmd(frozen)
    extra = dict(source=f"import-deepmd {Path(frozen).name}")
    min_dist = getattr(torch.jit.load(str(frozen), map_location="cpu"), "min_nbor_dist", None)
    if min_dist is not None and float(min_dist) > 0:
        extra["min_nbor_dist"] = float(min_dist)
    return save_model(model, output, extra=extra)
