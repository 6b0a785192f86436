"""Tests of dpengine.config: schema, validation, defaults, paths, messages, docs."""
from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import pytest

from dpengine import config as cfg
from dpengine.config import ConfigError, load_config, parse_override, schema_markdown

REPO = Path(__file__).resolve().parents[1]

MINIMAL = """\
[system]
structure = "conf.lmp"

[potential]
model = "model.pth"

[md]
steps = 100
"""


@pytest.fixture
def case(tmp_path, monkeypatch):
    """A folder with conf.lmp, model.pth, m1.pth, m2.pth; returns a TOML writer.

    The current directory is another folder, so that relative paths must be resolved
    against the TOML file's folder.
    """
    folder = tmp_path / "inputs"
    folder.mkdir()
    for name in ("conf.lmp", "model.pth", "m1.pth", "m2.pth"):
        (folder / name).write_text("x\n")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    def write(text: str, name: str = "water.toml") -> Path:
        path = folder / name
        path.write_text(text)
        return path

    return write


def error(path, overrides=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def with_md(extra: str) -> str:
    return MINIMAL.replace("steps = 100\n", f"steps = 100\n{extra}\n")


# --------------------------------------------------------------------------- valid files
def test_minimal_defaults_and_paths(case):
    path = case(MINIMAL)
    c = load_config(path)
    folder = path.parent
    assert c.source == path
    assert c.system.structure == folder / "conf.lmp" and c.system.structure.is_absolute()
    assert c.potential.model == folder / "model.pth"
    assert c.system.format is None and c.system.frame == 0 and c.system.type_map is None
    assert c.system.masses is None
    assert (c.potential.precision, c.potential.device) == ("float64", "cpu")
    assert c.md.ensemble == "nve" and c.md.timestep == 0.5 and c.md.steps == 100
    assert c.md.temperature == 0.0 and c.md.seed == 12345
    assert c.neighbor.skin == 2.0
    o = c.output
    assert o.trajectory == Path("traj.nc") and not o.trajectory.is_absolute()
    assert (o.trajectory_interval, o.velocities, o.forces) == (100, False, False)
    assert (o.thermo, o.thermo_interval) == (Path("thermo.log"), 10)
    assert (o.restart, o.restart_interval) == (Path("restart.ncrst"), 1000)
    assert o.progress_interval == 100
    assert c.model_deviation is None


def test_full_file(case):
    path = case("""\
[system]
structure = "conf.lmp"
format = "lammps-data"
frame = 0
type_map = ["O", "H"]
masses = {H = 2.014, O = 16}

[potential]
model = "./model.pth"
precision = "float32"
device = "cuda"

[md]
ensemble = "nve"
timestep = 1        # an integer is a valid number
steps = 0
temperature = 300.0
seed = 7

[neighbor]
skin = 0

[output]
trajectory = "out/traj.nc"
trajectory_interval = 5
velocities = true
forces = true
thermo = "out/thermo.log"
thermo_interval = 1
restart = "/tmp/abs.ncrst"
restart_interval = 50
progress_interval = 2

[model_deviation]
models = ["m1.pth", "m2.pth"]
interval = 10
output = "devi.out"
""")
    c = load_config(path)
    folder = path.parent
    assert c.system.type_map == ("O", "H")
    assert c.system.masses == {"H": 2.014, "O": 16.0} and isinstance(c.system.masses["O"], float)
    assert c.potential.model == folder / "model.pth"
    assert c.potential.precision == "float32" and c.potential.device == "cuda"
    assert c.md.timestep == 1.0 and isinstance(c.md.timestep, float)
    assert c.md.steps == 0 and c.md.seed == 7 and c.neighbor.skin == 0.0
    assert c.output.trajectory == Path("out/traj.nc")
    assert c.output.restart == Path("/tmp/abs.ncrst")
    assert c.output.velocities is True and c.output.forces is True
    md = c.model_deviation
    assert md.models == (folder / "m1.pth", folder / "m2.pth")
    assert md.interval == 10 and md.output == Path("devi.out")


def test_frozen_to_dict_and_pickle(case):
    c = load_config(case(MINIMAL + "[model_deviation]\nmodels = [\"m1.pth\"]\n"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.md.steps = 5
    d = c.to_dict()
    assert set(d) == {"system", "potential", "md", "neighbor", "output", "model_deviation"}
    assert d["md"]["steps"] == 100 and d["output"]["trajectory"] == "traj.nc"
    assert isinstance(d["model_deviation"]["models"], list)
    assert "format" not in d["system"]          # None values are left out
    assert pickle.loads(pickle.dumps(c)) == c
    assert "model_deviation" not in load_config(case(MINIMAL)).to_dict()


def test_to_dict_loads_again(case, tmp_path):
    c = load_config(case(with_md("timestep = 0.25")))
    d = c.to_dict()
    lines = []
    for table, values in d.items():  # JSON scalars and string lists are valid TOML values
        lines += [f"[{table}]"] + [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    other = tmp_path / "again.toml"
    other.write_text("\n".join(lines) + "\n")
    again = load_config(other)
    assert again.to_dict() == d


def test_overrides(case, tmp_path):
    path = case(MINIMAL)
    c = load_config(path, {"md.steps": 7, "md": {"timestep": 2.0}, "output.forces": True,
                           "system": {"type_map": ["O", "H"]}})
    assert c.md.steps == 7 and c.md.timestep == 2.0 and c.output.forces is True
    assert c.system.type_map == ("O", "H")
    # overridden input paths are relative to the current directory
    (Path.cwd() / "here.pth").write_text("x")
    c = load_config(path, {"potential.model": "here.pth"})
    assert c.potential.model == Path.cwd() / "here.pth"
    c = load_config(path, {"system.masses.H": 2.0})
    assert c.system.masses == {"H": 2.0}
    message = error(path, {"md.steps": -1})
    assert message == "water.toml (override): [md] steps must be >= 0, got -1".replace(
        "water.toml", str(path))
    message = error(path, {"md.timestpe": 1.0})
    assert "[md] unknown key 'timestpe'; did you mean 'timestep'?" in message
    assert "override 'steps' must name a table and a key" in error(path, {"steps": 1})


def test_parse_override():
    assert parse_override("md.steps=10") == ("md.steps", 10)
    assert parse_override("md.timestep = 0.25") == ("md.timestep", 0.25)
    assert parse_override("output.forces=true") == ("output.forces", True)
    assert parse_override('system.type_map=["O","H"]') == ("system.type_map", ["O", "H"])
    assert parse_override("potential.device=cuda") == ("potential.device", "cuda")
    assert parse_override('potential.device="cpu"') == ("potential.device", "cpu")
    with pytest.raises(ConfigError, match="expected table.key=value"):
        parse_override("md.steps")


# --------------------------------------------------------------------------- errors
def test_unknown_key_suggests(case):
    path = case(with_md("timestpe = 1.0"))
    assert error(path) == f"{path}: [md] unknown key 'timestpe'; did you mean 'timestep'?"


def test_unknown_key_of_another_table(case):
    path = case(with_md("skin = 1.0"))
    assert error(path) == f"{path}: [md] unknown key 'skin'; 'skin' belongs in [neighbor]"
    path = case(with_md("colour = 1"))
    assert error(path) == f"{path}: [md] unknown key 'colour'"


def test_unknown_table_suggests(case):
    path = case(MINIMAL + "[nieghbor]\nskin = 1.0\n")
    assert error(path) == f"{path}: unknown table [nieghbor]; did you mean [neighbor]?"
    path = case(MINIMAL + "[thermostat]\ntau = 1.0\n")
    assert error(path) == f"{path}: unknown table [thermostat]"


def test_key_outside_tables(case):
    path = case("steps = 10\n" + MINIMAL)
    assert error(path) == f"{path}: key 'steps' outside of any table; put it in [md]"


def test_table_that_is_not_a_table(case):
    path = case("neighbor = 2.0\n" + MINIMAL)
    assert error(path) == f"{path}: 'neighbor' must be a table [neighbor], got float 2.0"


def test_wrong_type_number(case):
    path = case(with_md('timestep = "fast"'))
    assert error(path) == f'{path}: [md] timestep must be a number (fs), got string "fast"'


def test_bool_is_not_an_integer(case):
    path = case(MINIMAL.replace("steps = 100", "steps = true"))
    assert error(path) == f"{path}: [md] steps must be an integer, got boolean true"
    path = case(with_md("temperature = false"))
    assert "[md] temperature must be a number (K), got boolean false" in error(path)


def test_float_is_not_an_integer(case):
    path = case(MINIMAL.replace("steps = 100", "steps = 1e3"))
    assert error(path) == f"{path}: [md] steps must be an integer, got float 1000.0"


def test_wrong_type_bool_string_list(case):
    path = case(MINIMAL + '[output]\nforces = "yes"\n')
    assert error(path) == f'{path}: [output] forces must be true or false, got string "yes"'
    path = case(MINIMAL.replace('model = "model.pth"', 'model = "model.pth"\nprecision = 64'))
    assert error(path) == f"{path}: [potential] precision must be a string, got integer 64"
    path = case(MINIMAL.replace('structure = "conf.lmp"',
                                'structure = "conf.lmp"\ntype_map = "O H"'))
    assert error(path) == (f'{path}: [system] type_map must be a list of strings, '
                           f'got string "O H"')
    path = case(MINIMAL.replace('structure = "conf.lmp"',
                                'structure = "conf.lmp"\ntype_map = ["O", 1]'))
    assert error(path) == f"{path}: [system] type_map[1] must be a string, got integer 1"
    path = case(MINIMAL.replace('structure = "conf.lmp"',
                                'structure = "conf.lmp"\ntype_map = []'))
    assert error(path) == f"{path}: [system] type_map must have at least 1 entry, got 0"
    path = case(MINIMAL.replace('structure = "conf.lmp"', "structure = 3"))
    assert error(path) == f"{path}: [system] structure must be a path (string), got integer 3"


def test_masses_table(case):
    path = case(MINIMAL.replace('structure = "conf.lmp"',
                                'structure = "conf.lmp"\nmasses = {O = -1.0}'))
    assert error(path) == f"{path}: [system] masses.O must be > 0 (amu), got -1"
    path = case(MINIMAL.replace('structure = "conf.lmp"',
                                'structure = "conf.lmp"\nmasses = {H = "heavy"}'))
    assert error(path) == (f'{path}: [system] masses.H must be a number (amu), '
                           f'got string "heavy"')
    path = case(MINIMAL.replace('structure = "conf.lmp"',
                                'structure = "conf.lmp"\nmasses = 2.0'))
    assert error(path) == (f"{path}: [system] masses must be a table of element = number "
                           f"(amu), got float 2.0")


def test_out_of_range(case):
    path = case(with_md("timestep = -0.5"))
    assert error(path) == f"{path}: [md] timestep must be > 0 (fs), got -0.5"
    path = case(with_md("timestep = 0"))
    assert error(path) == f"{path}: [md] timestep must be > 0 (fs), got 0"
    path = case(with_md("temperature = -1"))
    assert error(path) == f"{path}: [md] temperature must be >= 0 (K), got -1"
    path = case(MINIMAL + "[output]\nthermo_interval = 0\n")
    assert error(path) == f"{path}: [output] thermo_interval must be >= 1, got 0"
    path = case(MINIMAL + "[neighbor]\nskin = -0.1\n")
    assert error(path) == f"{path}: [neighbor] skin must be >= 0 (Å), got -0.1"
    path = case(with_md("timestep = inf"))
    assert error(path) == f"{path}: [md] timestep must be a finite number (fs), got inf"
    path = case(with_md("timestep = nan"))
    assert "[md] timestep must be a finite number (fs), got nan" in error(path)


def test_choices_suggest(case):
    path = case(with_md('ensemble = "nvx"'))
    assert error(path).startswith(f'{path}: [md] ensemble must be one of "nve", "nvt"')
    assert error(path).endswith('got string "nvx"; did you mean "nvt"?')
    path = case(with_md('ensemble = "NVE"'))
    assert error(path).endswith('got string "NVE"; did you mean "nve"?')
    path = case(MINIMAL.replace('model = "model.pth"', 'model = "model.pth"\ndevice = "gpu"'))
    assert error(path) == (f'{path}: [potential] device must be one of "cpu", "cuda", '
                           f'got string "gpu"; did you mean "cpu"?')
    path = case(MINIMAL.replace('model = "model.pth"',
                                'model = "model.pth"\nprecision = "float16"'))
    assert "did you mean \"float" in error(path)
    path = case(MINIMAL.replace('structure = "conf.lmp"',
                                'structure = "conf.lmp"\nformat = "lammps"'))
    assert error(path).endswith('got string "lammps"; did you mean "lammps-data"?')


def test_missing_required(case):
    path = case(MINIMAL.replace("steps = 100\n", ""))
    assert error(path) == f"{path}: [md] missing required key 'steps' (number of MD steps to run)"
    path = case(MINIMAL.replace('[potential]\nmodel = "model.pth"\n', ""))
    assert error(path) == f"{path}: missing table [potential] (required keys: model)"
    path = case(MINIMAL + "[model_deviation]\ninterval = 5\n")
    assert error(path).startswith(f"{path}: [model_deviation] missing required key 'models'")
    path = case(MINIMAL + "[model_deviation]\nmodels = []\n")
    assert error(path) == f"{path}: [model_deviation] models must have at least 1 entry, got 0"


def test_missing_input_files(case):
    path = case(MINIMAL.replace("conf.lmp", "nothere.lmp"))
    expect = path.parent / "nothere.lmp"
    assert error(path) == f"{path}: [system] structure: file not found: {expect}"
    path = case(MINIMAL.replace("model.pth", "../models/model.pth"))
    expect = path.parent.parent / "models" / "model.pth"
    assert error(path) == f"{path}: [potential] model: file not found: {expect}"
    path = case(MINIMAL + '[model_deviation]\nmodels = ["m1.pth", "m9.pth"]\n')
    expect = path.parent / "m9.pth"
    assert error(path) == f"{path}: [model_deviation] models[1]: file not found: {expect}"
    path = case(MINIMAL.replace('"conf.lmp"', '""'))
    assert error(path) == f"{path}: [system] structure must be a non-empty path"


def test_toml_file_problems(case, tmp_path):
    path = case(MINIMAL + "[md]\ntimestep = \n")
    message = error(path)
    assert message.startswith(f"{path}: TOML syntax error: ")
    assert "line" in message and "column" in message
    missing = tmp_path / "nothere.toml"
    assert error(missing) == f"{missing}: file not found"
    path = case("")
    path.write_bytes(b'[system]\nstructure = "\xff"\n')
    assert "not valid UTF-8" in error(path)


def test_output_files_must_differ(case):
    path = case(MINIMAL + '[output]\nthermo = "traj.nc"\n')
    assert error(path) == (f'{path}: [output] thermo = "traj.nc" is also [output] trajectory; '
                           'output files must differ')
    path = case(MINIMAL + '[model_deviation]\nmodels = ["m1.pth"]\noutput = "./thermo.log"\n')
    assert "[model_deviation] output = \"thermo.log\" is also [output] thermo" in error(path)


# --------------------------------------------------------------------------- schema, docs
def test_defaults_satisfy_their_own_checks(tmp_path):
    for table in cfg.SCHEMA:
        checker = cfg._Checker("schema", table)
        for key in table.keys:
            assert key.doc and "\n" not in key.doc
            if key.required or key.default is None:
                continue
            value = list(key.default) if isinstance(key.default, tuple) else key.default
            expect = Path(key.default) if key.type == "outpath" else key.default
            assert checker.check(key, value, tmp_path) == expect


def test_adding_a_key_is_one_entry(case, monkeypatch):
    md = cfg._TABLES["md"]
    extra = cfg.Key("friction", "float", 0.01, "Langevin friction", unit="1/fs", gt=0)
    table = dataclasses.replace(md, keys=md.keys + (extra,))
    schema = tuple(table if t.name == "md" else t for t in cfg.SCHEMA)
    monkeypatch.setattr(cfg, "SCHEMA", schema)
    monkeypatch.setitem(cfg._TABLES, "md", table)
    monkeypatch.setitem(cfg.SECTION_CLASSES, "md", cfg._make_section_class(table))
    c = load_config(case(with_md("friction = 0.1")))
    assert c.md.friction == 0.1
    assert load_config(case(MINIMAL)).md.friction == 0.01
    assert "| `friction` | float, 1/fs | `0.01` | > 0 | Langevin friction |" in schema_markdown()


def test_structure_formats_agree():
    from dpengine.structure import FORMATS
    assert cfg.STRUCTURE_FORMATS == FORMATS


def test_docs_are_generated():
    text = schema_markdown()
    assert text.startswith("<!-- Generated by `python -m dpengine.config > docs/input.md`")
    for table in cfg.SCHEMA:
        assert f"## [{table.name}]" in text
        for key in table.keys:
            assert f"| `{key.name}` |" in text
    assert "| `timestep` | float, fs | `0.5` | > 0 | integration time step |" in text
    assert "| `steps` | int | **required** | ≥ 0 |" in text
    assert (REPO / "docs" / "input.md").read_text(encoding="utf-8") == text


def test_docs_example_is_valid(tmp_path):
    text = cfg._EXAMPLE
    for name in ("conf.lmp", "frozen_model.pth"):
        (tmp_path / name).write_text("x")
    (tmp_path / "example.toml").write_text(text)
    c = load_config(tmp_path / "example.toml")
    assert c.md.steps == 10000 and c.system.type_map == ("O", "H")
