"""The TOML input of ``dpengine train``: schema, validation and defaults.

Tables and keys (DeePMD-kit's names in brackets; defaults are DeePMD-kit's or its water
example's)::

    [model]              type_map (required), precision = "float64" | "float32"
    [model.descriptor]   type = "se_e2_a", rcut = 6.0 Å, rcut_smth = 0.5 Å,
                         sel = "auto" | "auto:1.1" | [46, 92], neuron = [25, 50, 100],
                         axis_neuron = 16, type_one_side = true, resnet_dt = false,
                         activation = "tanh", set_davg_zero = false
    [model.fitting]      neuron = [240, 240, 240], resnet_dt = true, activation = "tanh"
    [data]               train = [paths] (required), validation = [paths],
                         batch_size = "auto" | "auto:N" | n, validation_batch_size,
                         validation_batches (numb_btch) = 1, stat_batches (data_stat_nbatch) = 10
    [learning_rate]      start_lr = 1e-3, stop_lr = 3.51e-8, decay_steps = 5000
    [loss]               start_pref_e = 0.02, limit_pref_e = 1, start_pref_f = 1000,
                         limit_pref_f = 1, start_pref_v = 0, limit_pref_v = 0
    [training]           steps (numb_steps, required), seed = 1, display_interval
                         (disp_freq) = 1000, checkpoint_interval (save_freq) = 10000,
                         lcurve = "lcurve.out", checkpoint = "model.ckpt",
                         max_checkpoints = 5, device = "cpu" | "cuda", threads = 0 (all)

Data paths are taken relative to the TOML file's folder. Errors are
:class:`dpengine.config.ConfigError` with one line naming the file, the table and the
key, and the nearest valid key for a misspelt one.
"""
from __future__ import annotations

import difflib
import math
import os
import re
from pathlib import Path
from typing import Any

from dpengine.config import ConfigError, read_toml

REQUIRED = object()

#: (key, kind, default, description) per table. Kinds: str:a|b, int, int+ (≥1), int0 (≥0),
#: float+ (>0), float0 (≥0), bool, list[str], list[int+], paths, sel, batch.
SCHEMA: dict[str, list[tuple[str, str, Any, str]]] = {
    "model": [
        ("type_map", "list[str]", REQUIRED, "element names of the model's types"),
        ("precision", "str:float64|float32", "float64", "floating-point precision of the networks"),
    ],
    "model.descriptor": [
        ("type", "str:se_e2_a", "se_e2_a", "descriptor type"),
        ("rcut", "float+", 6.0, "cutoff radius r_c (Å)"),
        ("rcut_smth", "float0", 0.5, "start of the smooth switch r_s (Å)"),
        ("sel", "sel", "auto", "neighbours kept per type, or \"auto[:ratio]\" from the data"),
        ("neuron", "list[int+]", [25, 50, 100], "embedding net widths"),
        ("axis_neuron", "int+", 16, "columns M2 of the descriptor"),
        ("type_one_side", "bool", True, "embedding nets by neighbour type only"),
        ("resnet_dt", "bool", False, "timestep vector in residual embedding layers"),
        ("activation", "str:tanh", "tanh", "embedding activation (the training fast path "
         "differentiates tanh embedding nets)"),
        ("set_davg_zero", "bool", False, "keep the environment mean at zero"),
    ],
    "model.fitting": [
        ("neuron", "list[int+]", [240, 240, 240], "fitting net hidden widths"),
        ("resnet_dt", "bool", True, "timestep vector in residual fitting layers"),
        ("activation", "str:tanh|gelu|relu|softplus|sigmoid|silu|relu6", "tanh",
         "fitting activation"),
    ],
    "data": [
        ("train", "paths", REQUIRED, "training systems (deepmd/npy folders)"),
        ("validation", "paths", [], "validation systems"),
        ("batch_size", "batch", "auto", "frames per batch: n, \"auto\" or \"auto:N\" (N/atoms)"),
        ("validation_batch_size", "batch", "auto", "frames per validation batch"),
        ("validation_batches", "int+", 1, "validation batches per lcurve line (numb_btch)"),
        ("stat_batches", "int+", 10, "batches per system for the statistics (data_stat_nbatch)"),
    ],
    "learning_rate": [
        ("start_lr", "float+", 1e-3, "learning rate at step 0"),
        ("stop_lr", "float+", 3.51e-8, "learning rate reached at the last step"),
        ("decay_steps", "int+", 5000, "steps between learning-rate decays"),
    ],
    "loss": [
        ("start_pref_e", "float0", 0.02, "energy prefactor at step 0"),
        ("limit_pref_e", "float0", 1.0, "energy prefactor at lr → 0"),
        ("start_pref_f", "float0", 1000.0, "force prefactor at step 0"),
        ("limit_pref_f", "float0", 1.0, "force prefactor at lr → 0"),
        ("start_pref_v", "float0", 0.0, "virial prefactor at step 0"),
        ("limit_pref_v", "float0", 0.0, "virial prefactor at lr → 0"),
    ],
    "training": [
        ("steps", "int+", REQUIRED, "number of training steps"),
        ("seed", "int0", 1, "seed of initialisation and sampling"),
        ("display_interval", "int+", 1000, "steps between lcurve lines (disp_freq)"),
        ("checkpoint_interval", "int+", 10000, "steps between checkpoints (save_freq)"),
        ("lcurve", "str", "lcurve.out", "learning-curve file"),
        ("checkpoint", "str", "model.ckpt", "checkpoint file prefix"),
        ("max_checkpoints", "int+", 5, "checkpoints kept"),
        ("device", "str:cpu|cuda", "cpu", "device of the training"),
        ("threads", "int0", 0, "CPU threads (0: torch's default)"),
    ],
}


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f'string "{value}"'
    if isinstance(value, dict):
        return "a table"
    return f"{type(value).__name__} {value!r}"


def _suggest(word: str, options) -> str:
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""


def _check(origin: str, table: str, key: str, kind: str, value: Any, base: Path) -> Any:
    where = f"{origin}: [{table}] {key}"
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind.startswith("str"):
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {_describe(value)}")
        if ":" in kind:
            choices = kind.split(":", 1)[1].split("|")
            if value not in choices:
                raise ConfigError(f"{where} must be one of {', '.join(choices)}, got "
                                  f"{_describe(value)}{_suggest(value, choices)}")
        return value
    if kind.startswith("int"):
        low = 1 if kind == "int+" else 0
        if not is_int or value < low:
            raise ConfigError(f"{where} must be an integer >= {low}, got {_describe(value)}")
        return value
    if kind.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where} must be a number, got {_describe(value)}")
        if kind == "float+" and value <= 0 or kind == "float0" and value < 0:
            raise ConfigError(f"{where} must be {'> 0' if kind == 'float+' else '>= 0'}, got {value}")
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {_describe(value)}")
        return value
    if kind in ("list[str]", "list[int+]", "paths"):
        if not isinstance(value, list) or not value and kind != "paths":
            raise ConfigError(f"{where} must be a non-empty list, got {_describe(value)}")
        item = {"list[str]": "str", "list[int+]": "int+", "paths": "str"}[kind]
        out = [_check(origin, table, f"{key}[{i}]", item, v, base) for i, v in enumerate(value)]
        if kind == "paths":
            out = [Path(os.path.normpath(base / p)) for p in out]
            for i, p in enumerate(out):
                if not p.exists():
                    raise ConfigError(f"{where}[{i}]: no such file or folder: {p}")
            out = [str(p) for p in out]
        return out
    if kind == "sel":
        if isinstance(value, str):
            m = re.fullmatch(r"auto(?::(\d+(?:\.\d*)?))?", value)
            if not m or (m.group(1) and float(m.group(1)) < 1.0):
                raise ConfigError(f"{where} must be \"auto\", \"auto:RATIO\" (RATIO >= 1) or a list "
                                  f"of integers, got {_describe(value)}")
            return value
        return _check(origin, table, key, "list[int+]", value, base)
    if kind == "batch":
        if is_int and value >= 1:
            return value
        if isinstance(value, str) and re.fullmatch(r"auto(?::\d+)?", value) and value != "auto:0":
            return value
        raise ConfigError(f"{where} must be an integer >= 1, \"auto\" or \"auto:N\", got "
                          f"{_describe(value)}")
    raise AssertionError(kind)


def _table(origin: str, name: str, raw: Any, base: Path, sub: tuple[str, ...] = ()) -> dict:
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: '{name}' must be a table [{name}], got {_describe(raw)}")
    spec = SCHEMA[name]
    names = [k for k, *_ in spec]
    for key in raw:
        if key not in names and key not in sub:
            owner = [t for t, keys in SCHEMA.items() if key in [k for k, *_ in keys]]
            hint = _suggest(key, names + list(sub)) or (f"; '{key}' belongs in [{owner[0]}]"
                                                        if owner else "")
            raise ConfigError(f"{origin}: [{name}] unknown key '{key}'{hint}")
    out = {}
    for key, kind, default, doc in spec:
        if key in raw:
            out[key] = _check(origin, name, key, kind, raw[key], base)
        elif default is REQUIRED:
            raise ConfigError(f"{origin}: [{name}] missing required key '{key}' ({doc})")
        else:
            out[key] = list(default) if isinstance(default, list) else default
    return out


def parse_config(data: dict, origin: str = "<input>", base: Path | None = None) -> dict:
    """Validate a training configuration given as a dict (the parsed TOML).

    Returns a plain nested dict with every default filled in (paths absolute strings).
    """
    base = Path(base or Path.cwd())
    tops = ("model", "data", "learning_rate", "loss", "training")
    for name, value in data.items():
        if name not in tops:
            kind = "table" if isinstance(value, dict) else "key"
            raise ConfigError(f"{origin}: unknown {kind} '{name}'{_suggest(name, tops)}")
    for name in ("model", "data", "training"):
        if name not in data:
            raise ConfigError(f"{origin}: missing table [{name}]")
    model_raw = data["model"]
    cfg = {"model": _table(origin, "model", model_raw, base, sub=("descriptor", "fitting"))}
    for sub in ("descriptor", "fitting"):
        cfg["model"][sub] = _table(origin, f"model.{sub}", model_raw.get(sub, {}), base)
    for name in tops[1:]:
        cfg[name] = _table(origin, name, data.get(name, {}), base)
    desc = cfg["model"]["descriptor"]
    ntypes = len(cfg["model"]["type_map"])
    if len(set(cfg["model"]["type_map"])) != ntypes:
        raise ConfigError(f"{origin}: [model] type_map has repeated elements")
    if desc["rcut_smth"] >= desc["rcut"]:
        raise ConfigError(f"{origin}: [model.descriptor] rcut_smth ({desc['rcut_smth']}) must be "
                          f"smaller than rcut ({desc['rcut']})")
    if isinstance(desc["sel"], list) and len(desc["sel"]) != ntypes:
        raise ConfigError(f"{origin}: [model.descriptor] sel has {len(desc['sel'])} entries but "
                          f"type_map has {ntypes}")
    if desc["axis_neuron"] > desc["neuron"][-1]:
        raise ConfigError(f"{origin}: [model.descriptor] axis_neuron ({desc['axis_neuron']}) "
                          f"exceeds the last embedding width ({desc['neuron'][-1]})")
    if not cfg["data"]["train"]:
        raise ConfigError(f"{origin}: [data] train must name at least one system")
    lr = cfg["learning_rate"]
    if lr["stop_lr"] > lr["start_lr"]:
        raise ConfigError(f"{origin}: [learning_rate] stop_lr ({lr['stop_lr']}) exceeds start_lr "
                          f"({lr['start_lr']})")
    return cfg


def load_config(path: str | os.PathLike) -> dict:
    """Read and validate the training TOML file ``path`` (see the module docstring)."""
    path = Path(path)
    return parse_config(read_toml(path), str(path), path.absolute().parent)
