"""The TOML input of ``dpengine run FILE.toml``: schema, validation, defaults, reference docs.

The schema is declarative: :data:`SCHEMA` is a tuple of :class:`Table` entries, each a
tuple of :class:`Key` entries, and everything else (type checks, range checks, defaults,
path resolution, error messages, the ``Config`` dataclasses and ``docs/input.md``) is
derived from it. Adding a key is one ``Key(...)`` line; adding a choice is one more
string in its ``choices``.

Units follow the engine (:mod:`dpengine.units`): Å, eV, amu, fs, K, bar.

Input paths (the structure, the models) are resolved against the folder of the TOML
file (paths given as overrides: against the current directory) and must exist; output
paths are kept as written (relative ones are resolved by the run against
``--output-dir``).

Regenerate the reference documentation with ``python -m dpengine.config > docs/input.md``.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "Key", "Table", "SCHEMA", "Config", "load_config", "parse_override",
           "schema_markdown"]


class ConfigError(Exception):
    """An invalid input file; the message is one line naming the file, table and key."""


class _Required:
    """Sentinel default of keys that must be given."""

    def __repr__(self) -> str:
        return "REQUIRED"


#: Default of a key that has to be given.
REQUIRED: Any = _Required()

# type name -> (what "must be ..." says, name shown in the docs)
_TYPES: dict[str, tuple[str, str]] = {
    "str": ("a string", "string"),
    "int": ("an integer", "int"),
    "float": ("a number", "float"),
    "bool": ("true or false", "bool"),
    "list[str]": ("a list of strings", "list of strings"),
    "list[float]": ("a list of numbers", "list of floats"),
    "inpath": ("a path (string)", "path (input)"),
    "outpath": ("a path (string)", "path (output)"),
    "list[inpath]": ("a list of paths (strings)", "list of paths (input)"),
    "map[float]": ("a table of element = number", "table element → float"),
    "str|list[str]": ("a string or a list of strings", "string or list of strings"),
    "float|map[float]": ("a number or a table of name = number", "float or table name → float"),
}


@dataclass(frozen=True)
class Key:
    """One key of a table.

    ``type`` is one of ``str int float bool list[str] list[float] inpath outpath
    list[inpath] map[float] str|list[str] float|map[float]`` (``inpath``: an input file,
    resolved against the TOML file's folder and checked to exist; ``outpath``: an output
    file, kept as written; ``str|list[str]`` is always converted to a tuple of strings).
    ``default`` is :data:`REQUIRED` for keys that must be given, ``None`` for optional
    keys without a default. ``gt/ge/le`` bound numbers (and every number of a list or
    table); ``choices`` lists the allowed strings; ``min_len`` the minimum list length.
    ``doc`` is a one-line description; ``unit`` is shown in the docs and messages.
    """

    name: str
    type: str
    default: Any
    doc: str
    unit: str = ""
    gt: float | None = None
    ge: float | None = None
    le: float | None = None
    choices: tuple[str, ...] | None = None
    min_len: int = 0

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            raise ValueError(f"Key {self.name!r}: unknown type {self.type!r}")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class Table:
    """One TOML table: its keys, a one-line doc, and whether it may be left out.

    An ``optional`` table that is absent gives ``None`` as the Config attribute; a
    non-optional table without required keys may be left out (all defaults).
    """

    name: str
    doc: str
    keys: tuple[Key, ...]
    optional: bool = False

    def key(self, name: str) -> Key | None:
        return next((k for k in self.keys if k.name == name), None)


#: Structure formats understood by :func:`dpengine.structure.read_structure`.
STRUCTURE_FORMATS = ("lammps-data", "extxyz", "vasp", "deepmd-npy")
#: Ensembles of ``[md] ensemble``.
ENSEMBLES = ("nve", "nvt", "npt", "minimize")
#: Thermostats of ``[md] thermostat`` (dpengine.nvt).
THERMOSTATS = ("langevin", "csvr", "nose-hoover-chain", "berendsen")
#: Barostats of ``[md] barostat`` (dpengine.npt).
BAROSTATS = ("mtk", "c-rescale", "berendsen")
#: Cell couplings of barostats and of the cell relaxation.
COUPLINGS = ("isotropic", "anisotropic", "triclinic")
#: Terms of ``[potential] type``; a list of several is their sum.
POTENTIAL_TYPES = ("deep", "lj", "springs")
#: Suzuki–Yoshida orders of the Nosé–Hoover chain integrator.
YOSHIDA_ORDERS = (1, 3, 5, 7)

SCHEMA: tuple[Table, ...] = (
    Table("system", "The starting structure and its elements.", (
        Key("structure", "inpath", REQUIRED, "structure file, or deepmd/npy system folder"),
        Key("format", "str", None, "structure format; default: guessed from the file name",
            choices=STRUCTURE_FORMATS),
        Key("frame", "int", 0, "frame of a multi-frame file or deepmd/npy system (0-based)",
            ge=0),
        Key("type_map", "list[str]", None,
            "element names of LAMMPS types 1..n; default: the model's type map", min_len=1),
        Key("masses", "map[float]", None,
            "mass per element, e.g. {H = 2.014}; default: ase.data.atomic_masses",
            unit="amu", gt=0),
    )),
    Table("potential", "The potential energy: a Deep Potential model, reference potentials "
          "(Lennard-Jones, harmonic springs), or their sum.", (
        Key("type", "str|list[str]", ("deep",),
            "term(s) of the potential; a list is their sum, e.g. [\"deep\", \"springs\"]",
            choices=POTENTIAL_TYPES, min_len=1),
        Key("model", "inpath", None,
            "TorchScript Deep Potential model file (required by type \"deep\")"),
        Key("precision", "str", "float64", "floating-point precision of the model evaluation",
            choices=("float64", "float32")),
        Key("device", "str", "cpu", "device the model and kernels run on",
            choices=("cpu", "cuda")),
        Key("epsilon", "map[float]", None,
            "Lennard-Jones ε per element pair, e.g. {Ar-Ar = 0.0104} or {Ar = 0.0104}; "
            "unlike pairs not given: Lorentz-Berthelot mixing (type \"lj\")", unit="eV", ge=0),
        Key("sigma", "map[float]", None, "Lennard-Jones σ per element pair (type \"lj\")",
            unit="Å", gt=0),
        Key("cutoff", "float|map[float]", None,
            "Lennard-Jones cutoff r_c, one value or per element pair (type \"lj\")",
            unit="Å", gt=0),
        Key("truncation", "str", "shift",
            "Lennard-Jones truncation: \"cut\" (plain), \"shift\" (energy shifted to 0 at "
            "r_c), \"tail\" (plain + tail corrections to energy and pressure)",
            choices=("cut", "shift", "tail")),
        Key("spring_constant", "float|map[float]", None,
            "harmonic springs tethering each atom to its site, one k or per element "
            "(type \"springs\")", unit="eV/Å²", ge=0),
        Key("spring_sites", "inpath", None,
            "structure file with the spring sites (same atoms, same order); default: the "
            "starting structure"),
    )),
    Table("md", "Molecular dynamics or minimisation: ensemble, time step, length, "
          "thermostat, barostat, minimiser.", (
        Key("ensemble", "str", "nve", "statistical ensemble, or \"minimize\" (energy "
            "minimisation; with a pressure, also of the cell)", choices=ENSEMBLES),
        Key("timestep", "float", 0.5, "integration time step", unit="fs", gt=0),
        Key("steps", "int", REQUIRED, "number of MD steps to run", ge=0),
        Key("temperature", "float", 0.0,
            "target temperature of the thermostat, and initial Maxwell-Boltzmann "
            "temperature if the structure has no velocities", unit="K", ge=0),
        Key("seed", "int", 12345, "seed of the random streams (initial velocities, Langevin "
            "and stochastic rescaling noise)", ge=0),
        Key("thermostat", "str", None, "thermostat of nvt/npt; \"berendsen\" is not "
            "canonical (equilibration only)", choices=THERMOSTATS),
        Key("tau_t", "float", 100.0, "thermostat time constant (csvr, nose-hoover-chain, "
            "berendsen)", unit="fs", gt=0),
        Key("langevin_friction", "float", 1.0, "Langevin friction γ (thermostat "
            "\"langevin\")", unit="1/ps", gt=0),
        Key("chain_length", "int", 3, "Nosé-Hoover chain length (thermostat)", ge=1),
        Key("chain_steps", "int", 1, "Nosé-Hoover chain sub-steps per half step", ge=1),
        Key("yoshida_order", "int", 3, "Suzuki-Yoshida order of the chain integrator: 1, 3, "
            "5 or 7", ge=1),
        Key("barostat", "str", None, "barostat of npt: \"mtk\" (Martyna-Tobias-Klein, "
            "needs thermostat \"nose-hoover-chain\"), \"c-rescale\" (stochastic cell "
            "rescaling), \"berendsen\" (not isobaric, equilibration only)", choices=BAROSTATS),
        Key("pressure", "float", None, "target pressure (npt; minimize: relax the cell too)",
            unit="bar"),
        Key("tau_p", "float", 1000.0, "barostat time constant", unit="fs", gt=0),
        Key("coupling", "str", "isotropic", "cell degrees of freedom: \"isotropic\", "
            "\"anisotropic\" (x, y, z independently), \"triclinic\" (mtk, berendsen, "
            "minimize)", choices=COUPLINGS),
        Key("compressibility", "float", 4.5e-5, "isothermal compressibility β_T that sets "
            "the c-rescale and berendsen coupling", unit="1/bar", gt=0),
        Key("barostat_chain_length", "int", 3, "Nosé-Hoover chain length on the MTK "
            "barostat", ge=1),
        Key("minimizer", "str", "fire", "minimisation algorithm (ensemble \"minimize\"; [md] "
            "steps bounds the iterations)", choices=("fire", "lbfgs")),
        Key("force_tolerance", "float", 0.01, "minimize: converged when every atomic force "
            "is below this", unit="eV/Å", gt=0),
        Key("stress_tolerance", "float", 10.0, "minimize with a pressure: converged when "
            "every pressure component is within this of the target", unit="bar", gt=0),
    )),
    Table("neighbor", "Neighbor list.", (
        Key("skin", "float", 2.0, "Verlet skin added to the model cutoff", unit="Å", ge=0),
    )),
    Table("output", "Output files (relative paths are taken in --output-dir).", (
        Key("trajectory", "outpath", "traj.nc", "AMBER NetCDF trajectory"),
        Key("trajectory_interval", "int", 100, "steps between trajectory frames", ge=1),
        Key("velocities", "bool", False, "write velocities to the trajectory"),
        Key("forces", "bool", False, "write forces to the trajectory"),
        Key("thermo", "outpath", "thermo.log", "thermodynamic log"),
        Key("thermo_interval", "int", 10, "steps between thermo lines", ge=1),
        Key("restart", "outpath", "restart.ncrst", "AMBER NetCDF restart file"),
        Key("restart_interval", "int", 1000, "steps between restart writes", ge=1),
        Key("progress_interval", "int", 100,
            "steps between plain-text progress lines (batch jobs)", ge=1),
    )),
    Table("model_deviation",
          "Model deviation of a committee of models; leave the table out to skip it.", (
        Key("models", "list[inpath]", REQUIRED, "TorchScript model files of the committee",
            min_len=1),
        Key("interval", "int", 100, "steps between model-deviation lines", ge=1),
        Key("output", "outpath", "model_devi.out", "model-deviation file (DeePMD format)"),
    ), optional=True),
)

_TABLES = {t.name: t for t in SCHEMA}


# --------------------------------------------------------------------------- dataclasses
def _to_plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


def _section_to_dict(self) -> dict[str, Any]:
    """The table as a TOML-shaped dict (paths as strings, lists as lists, ``None`` left out)."""
    return {f.name: _to_plain(getattr(self, f.name)) for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None}


def _config_to_dict(self) -> dict[str, Any]:
    """The configuration as a TOML-shaped dict that :func:`load_config` accepts again
    (input paths absolute, absent optional keys and tables left out, no ``source``)."""
    return {t.name: getattr(self, t.name).to_dict() for t in SCHEMA
            if getattr(self, t.name) is not None}


def _make_section_class(table: Table) -> type:
    name = "".join(p.capitalize() for p in table.name.split("_")) + "Config"
    doc = (f"Validated ``[{table.name}]`` table (frozen). {table.doc}\n\nAttributes: "
           + ", ".join(f"{k.name} ({_TYPES[k.type][1]}{', ' + k.unit if k.unit else ''})"
                       for k in table.keys))
    cls = dataclasses.make_dataclass(name, [(k.name, Any) for k in table.keys], frozen=True,
                                     namespace={"__doc__": doc, "to_dict": _section_to_dict})
    cls.__module__ = __name__
    return cls


#: Section dataclass of every table, by table name (also module attributes, for pickle).
SECTION_CLASSES: dict[str, type] = {t.name: _make_section_class(t) for t in SCHEMA}
globals().update({cls.__name__: cls for cls in SECTION_CLASSES.values()})

Config = dataclasses.make_dataclass(
    "Config", [(t.name, Any) for t in SCHEMA] + [("source", Path)], frozen=True,
    namespace={"to_dict": _config_to_dict, "__doc__": (
        "A validated input file (frozen): one attribute per table (``config.md.timestep``, "
        "``config.output.trajectory``, ...; ``config.model_deviation`` is None when the "
        "table is absent), and ``source``, the TOML path. Lists are tuples, paths "
        "pathlib.Path (input paths absolute, output paths as written).")})
Config.__module__ = __name__


# --------------------------------------------------------------------------- validation
def _describe(value: Any) -> str:
    """How a TOML value is named in messages: 'string "fast"', 'integer 3', ..."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value!r}"
    if isinstance(value, str):
        return f"string {json.dumps(value, ensure_ascii=False)}"
    if isinstance(value, (list, tuple)):
        text = json.dumps(_to_plain(value), ensure_ascii=False, default=str)
        return f"array {text if len(text) <= 40 else text[:37] + '...'}"
    if isinstance(value, dict):
        return "a table"
    return f"{type(value).__name__} {value}"


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _unit(key: Key) -> str:
    return f" ({key.unit})" if key.unit else ""


def _suggest(word: str, options: list[str], fmt: str = "'{}'") -> str:
    match = difflib.get_close_matches(word.lower(), options, n=1, cutoff=0.6)
    return f"; did you mean {fmt.format(match[0])}?" if match else ""


class _Checker:
    """Validates one table's values; ``origin`` is the message prefix (the file name)."""

    def __init__(self, origin: str, table: Table) -> None:
        self.origin, self.table = origin, table

    def fail(self, what: str) -> ConfigError:
        return ConfigError(f"{self.origin}: [{self.table.name}] {what}")

    def number(self, key: Key, label: str, value: Any, integer: bool) -> int | float:
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok:
            what = "an integer" if integer else "a number"
            raise self.fail(f"{label} must be {what}{_unit(key)}, got {_describe(value)}")
        if not integer:
            value = float(value)
            if not math.isfinite(value):
                raise self.fail(f"{label} must be a finite number{_unit(key)}, got {value}")
        for bound, op, holds in ((key.gt, ">", lambda b: value > b),
                                 (key.ge, ">=", lambda b: value >= b),
                                 (key.le, "<=", lambda b: value <= b)):
            if bound is not None and not holds(bound):
                raise self.fail(f"{label} must be {op} {_num(bound)}{_unit(key)}, "
                                f"got {_num(value)}")
        return value

    def string(self, key: Key, label: str, value: Any, what: str = "a string") -> str:
        if not isinstance(value, str):
            raise self.fail(f"{label} must be {what}, got {_describe(value)}")
        if key.choices is not None and value not in key.choices:
            allowed = ", ".join(f'"{c}"' for c in key.choices)
            raise self.fail(f"{label} must be one of {allowed}, got {_describe(value)}"
                            + _suggest(value, list(key.choices), fmt='"{}"'))
        return value

    def path(self, key: Key, label: str, value: Any, base: Path | None) -> Path:
        text = self.string(key, label, value, what="a path (string)")
        if not text.strip():
            raise self.fail(f"{label} must be a non-empty path")
        path = Path(text).expanduser()
        if base is None:  # output path: kept as written
            return path
        path = Path(os.path.normpath(base / path))
        if not path.exists():
            raise self.fail(f"{label}: file not found: {path}")
        return path

    def check(self, key: Key, value: Any, base: Path) -> Any:
        """The converted value of ``key`` (lists become tuples, paths Path objects)."""
        name, kind = key.name, key.type
        if kind == "bool":
            if not isinstance(value, bool):
                raise self.fail(f"{name} must be true or false, got {_describe(value)}")
            return value
        if kind in ("int", "float"):
            return self.number(key, name, value, integer=kind == "int")
        if kind == "str":
            return self.string(key, name, value)
        if kind in ("inpath", "outpath"):
            return self.path(key, name, value, base if kind == "inpath" else None)
        if kind == "str|list[str]":
            if isinstance(value, str):
                return (self.string(key, name, value),)
            if not isinstance(value, list):
                raise self.fail(f"{name} must be {_TYPES[kind][0]}, got {_describe(value)}")
            if len(value) < key.min_len:
                raise self.fail(f"{name} must have at least {key.min_len} "
                                f"entr{'y' if key.min_len == 1 else 'ies'}, got {len(value)}")
            out = tuple(self.string(key, f"{name}[{i}]", v) for i, v in enumerate(value))
            if len(set(out)) != len(out):
                raise self.fail(f"{name} lists an entry twice: {_describe(value)}")
            return out
        if kind == "float|map[float]":
            if isinstance(value, dict):
                return {k: self.number(key, f"{name}.{k}", v, integer=False)
                        for k, v in value.items()}
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.fail(f"{name} must be {_TYPES[kind][0]}{_unit(key)}, "
                                f"got {_describe(value)}")
            return self.number(key, name, value, integer=False)
        if kind.startswith("list["):
            if not isinstance(value, list):
                raise self.fail(f"{name} must be {_TYPES[kind][0]}{_unit(key)}, "
                                f"got {_describe(value)}")
            if len(value) < key.min_len:
                raise self.fail(f"{name} must have at least {key.min_len} "
                                f"entr{'y' if key.min_len == 1 else 'ies'}, got {len(value)}")
            item = kind[5:-1]
            out = []
            for i, v in enumerate(value):
                label = f"{name}[{i}]"
                if item == "float":
                    out.append(self.number(key, label, v, integer=False))
                elif item == "str":
                    out.append(self.string(key, label, v))
                else:
                    out.append(self.path(key, label, v, base))
            return tuple(out)
        # map[float]
        if not isinstance(value, dict):
            raise self.fail(f"{name} must be {_TYPES[kind][0]}{_unit(key)}, "
                            f"got {_describe(value)}")
        return {k: self.number(key, f"{name}.{k}", v, integer=False) for k, v in value.items()}


def _check_table(origin: str, table: Table, raw: dict[str, Any], base: Path,
                 overridden: set[str], override_base: Path) -> Any:
    checker = _Checker(origin, table)
    names = [k.name for k in table.keys]
    for name in raw:
        if name not in names:
            hint = _suggest(name, names)
            if not hint:
                owner = [t.name for t in SCHEMA if t.key(name) is not None]
                hint = f"; '{name}' belongs in [{owner[0]}]" if owner else ""
            raise checker.fail(f"unknown key '{name}'{hint}")
    values = {}
    for key in table.keys:
        if key.name not in raw:
            if key.required:
                raise checker.fail(f"missing required key '{key.name}' ({key.doc})")
            default = key.default
            if default is not None:  # defaults go through the same conversion
                default = checker.check(key, list(default) if isinstance(default, tuple)
                                        else default, base)
            values[key.name] = default
            continue
        if key.name in overridden:
            values[key.name] = _Checker(f"{origin} (override)", table).check(
                key, raw[key.name], override_base)
        else:
            values[key.name] = checker.check(key, raw[key.name], base)
    return SECTION_CLASSES[table.name](**values)


def _apply_overrides(data: dict[str, Any], overrides: dict[str, Any],
                     origin: str) -> set[tuple[str, str]]:
    """Merge ``overrides`` into ``data``; returns the (table, key) pairs overridden."""
    done: set[tuple[str, str]] = set()

    def put(parts: list[str], value: Any) -> None:
        if len(parts) < 2:
            raise ConfigError(f"{origin}: override '{'.'.join(parts)}' must name a table and "
                              "a key, e.g. 'md.steps'")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{origin}: override '{'.'.join(parts)}': "
                                  f"'{part}' is not a table")
        node[parts[-1]] = value
        done.add((parts[0], parts[1]))

    def walk(prefix: list[str], value: Any) -> None:
        if isinstance(value, dict) and len(prefix) < 2:
            for k, v in value.items():
                walk(prefix + str(k).split("."), v)
        else:
            put(prefix, value)

    walk([], overrides)
    return done


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Parse the TOML file ``path``; unreadable or invalid files raise a one-line ConfigError."""
    origin = str(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{origin}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{origin}: is a folder, not a TOML file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{origin}: not valid UTF-8 text ({exc.reason} at byte "
                          f"{exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: TOML syntax error: {exc}") from None


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> Any:
    """Read, validate and complete the TOML input file ``path``.

    ``overrides`` replaces values of the file: ``{"md.steps": 10}`` or
    ``{"md": {"steps": 10}}`` (see :func:`parse_override` for ``table.key=value``
    strings); overridden input paths are relative to the current directory. Returns a
    frozen :data:`Config`; raises :class:`ConfigError` with a one-line message.
    """
    path = Path(path)
    origin = str(path)
    data = read_toml(path)
    overridden = _apply_overrides(data, overrides or {}, origin)

    for name, value in data.items():
        if name in _TABLES:
            continue
        if isinstance(value, dict):
            raise ConfigError(f"{origin}: unknown table [{name}]"
                              + _suggest(name, list(_TABLES), fmt="[{}]"))
        owner = [t.name for t in SCHEMA if t.key(name) is not None]
        where = f"; put it in [{owner[0]}]" if owner else ""
        raise ConfigError(f"{origin}: key '{name}' outside of any table{where}")

    base = path.absolute().parent
    sections: dict[str, Any] = {}
    for table in SCHEMA:
        raw = data.get(table.name)
        if raw is None:
            required = [k.name for k in table.keys if k.required]
            if table.optional:
                sections[table.name] = None
                continue
            if required:
                raise ConfigError(f"{origin}: missing table [{table.name}] (required keys: "
                                  f"{', '.join(required)})")
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{origin}: '{table.name}' must be a table [{table.name}], "
                              f"got {_describe(raw)}")
        keys = {k for t, k in overridden if t == table.name}
        sections[table.name] = _check_table(origin, table, raw, base, keys, Path.cwd())

    _check_outputs_distinct(origin, sections)
    _check_consistency(origin, sections, present={t: set(data.get(t) or {}) for t in _TABLES})
    return Config(**sections, source=path)


def _check_outputs_distinct(origin: str, sections: dict[str, Any]) -> None:
    seen: dict[Path, str] = {}
    for table in SCHEMA:
        section = sections[table.name]
        for key in table.keys:
            if key.type != "outpath" or section is None:
                continue
            where = f"[{table.name}] {key.name}"
            target = Path(os.path.normpath(getattr(section, key.name)))
            if target in seen:
                raise ConfigError(f"{origin}: {where} = \"{target}\" is also {seen[target]}; "
                                  "output files must differ")
            seen[target] = where


def _check_consistency(origin: str, sections: dict[str, Any],
                       present: dict[str, set[str]]) -> None:
    """Checks that involve several keys: the potential's terms and their parameters; the
    ensemble, thermostat and barostat. Raises ConfigError naming the table and key."""
    pot, md = sections["potential"], sections["md"]

    def fail(table: str, what: str) -> ConfigError:
        return ConfigError(f"{origin}: [{table}] {what}")

    types = pot.type
    if "deep" in types and pot.model is None:
        if not present["potential"]:
            raise ConfigError(f"{origin}: missing table [potential] (required keys: model)")
        raise fail("potential", "missing required key 'model' (TorchScript Deep Potential "
                                "model file, needed by type \"deep\")")
    if "deep" not in types and pot.model is not None:
        raise fail("potential", f"model is given but type = {_describe(list(types))} has no "
                                "\"deep\" term")
    if "lj" in types:
        for name in ("epsilon", "sigma", "cutoff"):
            if getattr(pot, name) is None:
                raise fail("potential", f"missing key '{name}' (needed by type \"lj\")")
    else:
        for name in ("epsilon", "sigma", "cutoff"):
            if getattr(pot, name) is not None:
                raise fail("potential", f"{name} is given but type = {_describe(list(types))} "
                                        "has no \"lj\" term")
    if "springs" in types:
        if pot.spring_constant is None:
            raise fail("potential", "missing key 'spring_constant' (needed by type \"springs\")")
    else:
        for name in ("spring_constant", "spring_sites"):
            if getattr(pot, name) is not None:
                raise fail("potential", f"{name} is given but type = {_describe(list(types))} "
                                        "has no \"springs\" term")

    ens, thermo, baro = md.ensemble, md.thermostat, md.barostat
    if md.yoshida_order not in YOSHIDA_ORDERS:
        raise fail("md", f"yoshida_order must be one of 1, 3, 5, 7, got {md.yoshida_order}")
    if ens in ("nvt", "npt"):
        if thermo is None:
            raise fail("md", f"ensemble = \"{ens}\" needs a thermostat: set thermostat = "
                             + ", ".join(f'"{t}"' for t in THERMOSTATS[:-1])
                             + f' or "{THERMOSTATS[-1]}"')
        if not md.temperature > 0:
            raise fail("md", f"ensemble = \"{ens}\" needs temperature > 0 (K), the "
                             "thermostat's target")
    elif thermo is not None:
        raise fail("md", f"thermostat = \"{thermo}\" is given but ensemble = \"{ens}\" has no "
                         "thermostat; use ensemble = \"nvt\" or \"npt\"")
    if ens == "npt":
        if baro is None:
            raise fail("md", "ensemble = \"npt\" needs a barostat: set barostat = \"mtk\", "
                             "\"c-rescale\" or \"berendsen\", and pressure (bar)")
        if md.pressure is None:
            raise fail("md", f"barostat = \"{baro}\" needs a target pressure: set pressure (bar)")
        if baro == "mtk" and thermo != "nose-hoover-chain":
            raise fail("md", f"barostat = \"mtk\" integrates its own Nosé-Hoover chains: set "
                             f"thermostat = \"nose-hoover-chain\" (got \"{thermo}\")")
        if baro != "mtk" and thermo == "nose-hoover-chain":
            raise fail("md", f"thermostat = \"nose-hoover-chain\" runs with barostat = "
                             f"\"mtk\" only (got \"{baro}\"); or choose thermostat \"csvr\" "
                             "or \"langevin\"")
        if baro == "c-rescale" and md.coupling == "triclinic":
            raise fail("md", "barostat = \"c-rescale\" supports coupling = \"isotropic\" or "
                             "\"anisotropic\"; use barostat = \"mtk\" for a triclinic cell")
    elif baro is not None:
        raise fail("md", f"barostat = \"{baro}\" is given but ensemble = \"{ens}\"; use "
                         "ensemble = \"npt\"")
    elif md.pressure is not None and ens != "minimize":
        raise fail("md", f"pressure = {_num(md.pressure)} (bar) is given but there is no "
                         "barostat: set ensemble = \"npt\" and barostat = \"mtk\", "
                         "\"c-rescale\" or \"berendsen\"")


def parse_override(text: str) -> tuple[str, Any]:
    """Split a command-line override ``"table.key=value"`` into ``("table.key", value)``.

    The value is read as a TOML value (``10``, ``0.5``, ``true``, ``["O", "H"]``,
    ``"x"``); text that is no TOML value is taken as a string (``device=cuda``).
    """
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ConfigError(f"override {text!r}: expected table.key=value, e.g. md.steps=1000")
    try:
        return name, tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return name, value.strip()


# --------------------------------------------------------------------------- documentation
_EXAMPLE = '''\
[system]
structure = "conf.lmp"          # LAMMPS data file, relative to this file
type_map = ["O", "H"]           # elements of LAMMPS types 1, 2

[potential]
model = "frozen_model.pth"

[md]
timestep = 0.5                  # fs
steps = 10000
temperature = 300.0             # K, initial velocities

[output]
trajectory_interval = 100
'''


_ENSEMBLES_DOC = """\
## Ensembles, thermostats and barostats

`[md] ensemble` picks the integrator (`dpengine.integrators`); the thermo log's `conserved`
column is its invariant, which stays constant up to integration error (check its drift):

| ensemble | thermostat / barostat | integrator | `conserved` column |
|---|---|---|---|
| `"nve"` | — | velocity Verlet | K + U |
| `"nvt"` | `"langevin"` | BAOAB, friction `langevin_friction` (1/ps) | K + U + heat given to the bath |
| `"nvt"` | `"csvr"` | stochastic velocity rescaling (Bussi et al. 2007), `tau_t` | K + U + heat |
| `"nvt"` | `"nose-hoover-chain"` | Nosé-Hoover chains (`chain_length`, `chain_steps`, `yoshida_order`), `tau_t` | K + U + chain energy |
| `"nvt"` | `"berendsen"` | weak coupling, `tau_t`; **not canonical** | K + U + heat |
| `"npt"` | `"nose-hoover-chain"` + `"mtk"` | Martyna-Tobias-Klein, `coupling` isotropic / anisotropic / triclinic, `tau_p`, `barostat_chain_length` | K + U + PV + cell kinetic energy + chain energies |
| `"npt"` | `"csvr"`, `"langevin"` or `"berendsen"` + `"c-rescale"` | stochastic cell rescaling (Bernetti & Bussi 2020), isotropic / anisotropic, `tau_p`, `compressibility` | K + U + PV + heat + barostat work |
| `"npt"` | `"csvr"`, `"langevin"` or `"berendsen"` + `"berendsen"` | Berendsen barostat, any coupling; **not isobaric** | K + U + PV + heat (not conserved) |
| `"minimize"` | — | `minimizer` FIRE or L-BFGS; with `pressure`, the cell too (`coupling`) | U + PV (enthalpy at 0 K) |

The thermo `temp` uses 3N − 3 degrees of freedom (3N with Langevin noise or springs, which
do not conserve the total momentum). Stochastic methods draw their noise from a
counter-based generator keyed by (`seed`, step, atom): a run does not depend on the number
of threads, and `--restart` continues it exactly; the extended variables (chains, cell
momenta, accumulated heat) are saved in the restart file. The anisotropic stochastic cell
rescaling needs a box whose first vector is along x and second in the xy plane (as LAMMPS
writes it). `compressibility` sets only the relaxation rate of `c-rescale` (any positive
value samples the right ensemble; the true value gives a volume relaxation time ≈ `tau_p`).
"""


def _toml_literal(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_literal(v) for v in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def _allowed(key: Key) -> str:
    parts = []
    if key.choices:
        parts.append(", ".join(f"`{_toml_literal(c)}`" for c in key.choices))
    for bound, op in ((key.gt, ">"), (key.ge, "≥"), (key.le, "≤")):
        if bound is not None:
            parts.append(f"{op} {_num(bound)}")
    if key.min_len:
        parts.append(f"≥ {key.min_len} entr{'y' if key.min_len == 1 else 'ies'}")
    return "; ".join(parts) or ""


def schema_markdown() -> str:
    """The reference documentation of every table and key, as Markdown (ends with a newline)."""
    lines = [
        "<!-- Generated by `python -m dpengine.config > docs/input.md`; do not edit. -->",
        "# Input file reference",
        "",
        "`dpengine run FILE.toml` reads a [TOML](https://toml.io) file. Units: Å, eV, amu, fs,"
        " K, bar.",
        "Input paths are relative to the folder of the TOML file and must exist; output paths"
        " are relative to `--output-dir`.",
        "Unknown tables and keys are errors.",
        "",
        "## Example",
        "",
        "```toml",
        *_EXAMPLE.rstrip("\n").split("\n"),
        "```",
    ]
    for table in SCHEMA:
        note = " (optional table)" if table.optional else ""
        lines += ["", f"## [{table.name}]{note}", "", table.doc, "",
                  "| key | type | default | allowed | description |",
                  "|---|---|---|---|---|"]
        for key in table.keys:
            if key.required:
                default = "**required**"
            elif key.default is None:
                default = "—"
            else:
                default = f"`{_toml_literal(key.default)}`"
            kind = _TYPES[key.type][1] + (f", {key.unit}" if key.unit else "")
            doc = key.doc.replace("|", "\\|")
            lines.append(f"| `{key.name}` | {kind} | {default} | {_allowed(key)} | {doc} |")
    lines += ["", *_ENSEMBLES_DOC.rstrip("\n").split("\n")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(schema_markdown(), end="")
