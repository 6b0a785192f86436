"""dpengine model files: a TorchScript ``DeepPotSE`` plus JSON metadata in one ``.pt``.

The metadata (``dpengine.json`` inside the TorchScript archive) holds the type map,
cutoffs, sel, network sizes, the precision the model was made in, the dpengine
version, and where the model came from (training input or imported file).
"""
import io
import json
import os
from pathlib import Path

import numpy as np
import torch

from dpengine import __version__
from dpengine.model.network import DeepPotSE

MODEL_FORMAT = "dpengine/se_e2_a/1"
_META = "dpengine.json"
_TABLES = "compression.npy"


def save_model(module: DeepPotSE, path: str | os.PathLike, extra: dict | None = None,
               files: dict | None = None) -> Path:
    """Script ``module`` and write it with its metadata to ``path`` (atomically).

    ``files`` adds named byte strings to the archive (e.g. compression tables)."""
    meta = dict(format=MODEL_FORMAT, descriptor="se_e2_a", dpengine_version=__version__,
                precision=str(module.davg.dtype).replace("torch.", ""), **module.hyper)
    meta.update(extra or {})
    scripted = torch.jit.script(module)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.jit.save(scripted, str(tmp), _extra_files={_META: json.dumps(meta, indent=1),
                                                     **(files or {})})
    os.replace(tmp, path)
    return path


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata of a dpengine model file; ValueError if ``path`` is not one."""
    files = {_META: ""}
    try:
        torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    except Exception as exc:  # torch raises RuntimeError with a long C++ trace
        raise ValueError(f"{path}: not a TorchScript model file ({str(exc).splitlines()[0]})") from None
    if not files[_META]:
        raise ValueError(f"{path}: a TorchScript file but not a dpengine model (no {_META}); "
                         "convert DeePMD-kit models with `dpengine import-deepmd`")
    return json.loads(files[_META])


def load_network(path: str | os.PathLike, device: str = "cpu",
                 dtype: torch.dtype = torch.float64) -> tuple[torch.jit.ScriptModule, dict]:
    """Load the TorchScript network of a dpengine model file on ``device`` in ``dtype``.

    A compressed model's tables come back as ``meta["compression"]["coeffs"]`` (float64
    tensor [n_emb, n_intervals, M, 6] on ``device``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    files = {_META: "", _TABLES: ""}
    try:
        net = torch.jit.load(str(path), map_location=device, _extra_files=files)
    except Exception as exc:
        raise ValueError(f"{path}: not a TorchScript model file ({str(exc).splitlines()[0]})") from None
    if not files[_META]:
        raise ValueError(f"{path}: a TorchScript file but not a dpengine model (no {_META}); "
                         "convert DeePMD-kit models with `dpengine import-deepmd`")
    meta = json.loads(files[_META])
    if "compression" in meta:
        if not files[_TABLES]:
            raise ValueError(f"{path}: compressed model without its tables ({_TABLES})")
        coeffs = np.load(io.BytesIO(files[_TABLES]))
        meta["compression"]["coeffs"] = torch.as_tensor(coeffs, device=device)
    net = net.to(dtype)
    net.eval()
    return net, meta


HYPER_KEYS = ("type_map", "sel", "rcut", "rcut_smth", "neuron", "axis_neuron", "fitting_neuron",
              "type_one_side", "embedding_resnet_dt", "fitting_resnet_dt", "activation")


def eager_copy(scripted: torch.jit.ScriptModule, meta: dict) -> DeepPotSE | None:
    """The same network as a plain (eager) ``DeepPotSE`` with the scripted module's weights.

    Eager autograd runs the force call ~1.4× faster than the TorchScript interpreter on
    the CPU (measured on the water model); the file stays TorchScript for portability.
    Every layer takes the scripted layer's activation and residual flag (the fitting nets'
    activation may differ from the embedding nets', as in DeePMD-kit). None when the
    metadata or weights do not fit this version's class.
    """
    if any(k not in meta for k in HYPER_KEYS):
        return None
    state = scripted.state_dict()
    dtype = next(iter(state.values())).dtype
    net = DeepPotSE(**{k: meta[k] for k in HYPER_KEYS}, dtype=dtype,
                    fitting_activation=meta.get("fitting_activation"))
    try:
        net.load_state_dict(state)
    except RuntimeError:
        return None
    layers = dict(net.named_modules())
    for name, layer in scripted.named_modules():
        if hasattr(layer, "activation") and name in layers:
            layers[name].activation = layer.activation
            layers[name].resnet = layer.resnet
    return net.to(next(iter(state.values())).device).eval()
