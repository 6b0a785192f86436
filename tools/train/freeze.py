"""``dpengine freeze``: a training checkpoint → the TorchScript model file ``dpengine run`` reads.

The model file is written by ``dpengine.model.io.save_model`` (the engine's own format):
the scripted ``DeepPotSE`` plus metadata — type map, cutoffs, sel, network sizes,
precision, dpengine version — extended here with the training input (``training_input``),
the number of steps trained (``training_steps``), the closest neighbour distance of the
training data (``min_nbor_dist``, Å, as DeePMD-kit records it; ``dpengine compress``
tabulates down to it) and ``source = "dpengine train"``.
"""
from __future__ import annotations

import os
from pathlib import Path

from .checkpoint import load_checkpoint
from .model import build_network


def network_from_checkpoint(path: str | os.PathLike):
    """(DeepPotSE with the checkpoint's weights and statistics, the checkpoint dict)."""
    state = load_checkpoint(path)
    net = build_network(state["config"]["model"], state["sel"])
    net.load_state_dict(state["model"])
    net.eval()
    return net, state


def freeze(checkpoint: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Write the model file ``output`` from ``checkpoint``; returns its path."""
    from dpengine.model.io import save_model

    net, state = network_from_checkpoint(checkpoint)
    extra = dict(source="dpengine train", training_steps=int(state["step"]),
                 training_input=state["config"])
    if state.get("min_nbor_dist") is not None:  # closest distance in the training data, Å
        extra["min_nbor_dist"] = float(state["min_nbor_dist"])
    return save_model(net, output, extra=extra)
