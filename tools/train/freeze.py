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
    min_dist = state.get("min_nbor_dist")       # closest distance in the training data, Å
    if min_dist is None:                        # checkpoints of dpengine before it recorded it
        min_dist = _closest_training_distance(state["config"])
    if min_dist is not None:
        extra["min_nbor_dist"] = float(min_dist)
    return save_model(net, output, extra=extra)


def _closest_training_distance(config: dict) -> float | None:
    """The closest pair distance (Å) in the training systems named by ``config``, or None
    when they cannot be read any more."""
    from .data import load_systems
    from .stats import neighbor_statistics

    model = config["model"]
    try:
        systems = load_systems(config["data"]["train"], model["type_map"])
    except (OSError, ValueError):
        return None
    _, closest = neighbor_statistics(systems, model["descriptor"]["rcut"], len(model["type_map"]))
    return closest if closest < float("inf") else None
