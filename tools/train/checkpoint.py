"""Training checkpoints: one ``torch.save`` file per saved step.

Contents (a dict): ``format``, ``step`` (steps done), ``config`` (the validated training
input), ``sel``, ``model`` (the ``DeepPotSE`` state dict: weights, davg, dstd, energy
bias), ``optimizer`` (Adam state), ``sampler`` (frame-sampling generator and orders),
``validation_sampler``, ``torch_rng``, ``min_nbor_dist`` (closest neighbour distance of
the training data, Å), ``dpengine_version``. Files are
``PREFIX-STEP.pt``; ``PREFIX.pt`` is a link to (or copy of) the newest; the oldest are
deleted beyond ``max_checkpoints``.
"""
from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import torch

FORMAT = "dpengine-train-checkpoint/1"


def save_checkpoint(state: dict, out_dir: Path, prefix: str, step: int, keep: int) -> Path:
    """Write ``state`` as ``out_dir/prefix-step.pt`` (atomically), update the latest link."""
    from dpengine import __version__

    out_dir = Path(out_dir)
    path = out_dir / f"{prefix}-{step}.pt"
    tmp = path.with_name(path.name + ".tmp")
    torch.save(dict(state, format=FORMAT, step=step, dpengine_version=__version__), tmp)
    os.replace(tmp, path)
    latest = out_dir / f"{prefix}.pt"
    tmp_link = out_dir / f".{prefix}.pt.tmp"
    if tmp_link.is_symlink() or tmp_link.exists():
        tmp_link.unlink()
    try:
        os.symlink(path.name, tmp_link)
    except OSError:                     # file systems without symlinks
        shutil.copyfile(path, tmp_link)
    os.replace(tmp_link, latest)
    old = sorted(out_dir.glob(f"{prefix}-*.pt"), key=lambda p: _step_of(p, prefix))
    for p in old[:-keep] if keep > 0 else []:
        if _step_of(p, prefix) >= 0 and p != path:
            p.unlink()
    return path


def _step_of(path: Path, prefix: str) -> int:
    tail = path.name[len(prefix) + 1:-3]
    return int(tail) if tail.isdigit() else -1


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; ValueError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if _is_torchscript(path):
        raise ValueError(f"{path}: a TorchScript model file, not a dpengine training checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ValueError(f"{path}: not a checkpoint file ({str(exc).splitlines()[0]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a dpengine training checkpoint (expected format {FORMAT})")
    return state


def _is_torchscript(path: Path) -> bool:
    """True for a TorchScript archive (it holds ``code/``; a ``torch.save`` file does not)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/", 2)[1:2] == ["code"] for name in archive.namelist())
