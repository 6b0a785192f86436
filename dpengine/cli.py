"""The ``dpengine`` command."""
import argparse
import sys
import warnings

from dpengine import __version__

RUN_HELP = """\
Run molecular dynamics as described by a TOML input file.

Every key of the input file is documented in docs/input.md. Relative paths in the
file are taken relative to the file's folder; output files are written to
--output-dir. Units: Å, eV, fs (time step), ps (trajectory time), K, bar, amu.

Outputs: an AMBER NetCDF trajectory, a thermo log (numpy.loadtxt-readable), an AMBER
NetCDF restart file (written every [output] restart_interval steps, at the end, and on
SIGINT/SIGTERM), and model_devi.out when [model_deviation] is present.

Exit codes: 0 done; 2 bad input (nothing written); 130/143 stopped by SIGINT/SIGTERM
(restart written, continue with --restart).
"""


def _cmd_run(args) -> int:
    from dpengine.config import parse_override
    from dpengine.run import run
    overrides = dict(parse_override(text) for text in args.set or [])
    return run(args.input, steps=args.steps, output_dir=args.output_dir, restart=args.restart,
               progress=not args.quiet, overrides=overrides)


def _cmd_import(args) -> int:
    from dpengine.model.import_deepmd import import_deepmd
    path = import_deepmd(args.frozen, args.output)
    print(f"wrote {path}")
    return 0


def _cmd_compress(args) -> int:
    from dpengine.model.compress import compress_model
    path = compress_model(args.model, args.output, step=args.step, min_distance=args.min_distance)
    print(f"wrote {path}")
    return 0


def _cmd_info(args) -> int:
    import json
    from dpengine.model.io import read_metadata
    print(json.dumps(read_metadata(args.model), indent=2))
    return 0


#: Subcommands implemented in the tools package (``tools/`` installed as ``dpengine_tools``).
#: Each module provides ``HELP`` (one line), ``add_arguments(parser)`` and
#: ``main(args) -> int``; it is imported only when its subcommand is parsed.
TOOL_COMMANDS: dict[str, str] = {
    "train": "dpengine_tools.train.cli_train",
    "freeze": "dpengine_tools.train.cli_freeze",
    "test": "dpengine_tools.train.cli_test",
    "analyze": "dpengine_tools.analysis.cli",
}


def _tool_module(name: str):
    import importlib
    return importlib.import_module(TOOL_COMMANDS[name])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dpengine", description="Molecular dynamics with Deep "
                                     "Potential models (Taichi kernels, TorchScript networks).")
    parser.add_argument("--version", action="version", version=f"dpengine {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("run", help="run MD from a TOML input file", description=RUN_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="TOML input file (keys: docs/input.md)")
    p.add_argument("--steps", type=int, metavar="N",
                   help="total number of MD steps, replacing [md] steps; a restarted run "
                        "continues from its saved step up to N")
    p.add_argument("--output-dir", "-o", default=".", metavar="DIR",
                   help="folder for the trajectory, logs and restart file (default: .)")
    p.add_argument("--restart", metavar="FILE",
                   help="continue from this restart file (.ncrst written by dpengine run)")
    p.add_argument("--set", action="append", metavar="TABLE.KEY=VALUE",
                   help="override one input key, e.g. --set md.timestep=0.25 (repeatable)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("import-deepmd", help="convert a DeePMD-kit v3 (PyTorch) se_e2_a model",
                       description="Convert a DeePMD-kit v3 frozen model (.pth, PyTorch backend, "
                                   "se_e2_a descriptor) into a dpengine model file.")
    p.add_argument("frozen", help="DeePMD-kit frozen model (.pth)")
    p.add_argument("-o", "--output", required=True, help="dpengine model file to write (.pt)")
    p.set_defaults(func=_cmd_import)

    p = sub.add_parser("compress", help="tabulate the embedding nets (faster MD)",
                       description="Tabulate each embedding net as piecewise quintic polynomials "
                                   "(value, first and second derivatives continuous) over the "
                                   "range the model can see; MD then evaluates R̂ᵀG in one fused "
                                   "kernel without storing G.")
    p.add_argument("model", help="dpengine model file")
    p.add_argument("-o", "--output", required=True, help="compressed model file to write")
    p.add_argument("--step", type=float, default=0.01,
                   help="knot spacing of the tables in the normalised input (default 0.01)")
    p.add_argument("--min-distance", type=float, default=None, metavar="R",
                   help="smallest neighbour distance to tabulate for, Å (default: the model's "
                        "recorded min_nbor_dist)")
    p.set_defaults(func=_cmd_compress)

    p = sub.add_parser("info", help="print a model file's metadata")
    p.add_argument("model", help="dpengine model file")
    p.set_defaults(func=_cmd_info)

    for name in TOOL_COMMANDS:
        try:
            module = _tool_module(name)
        except ImportError as exc:  # a tool whose optional dependency is missing
            p = sub.add_parser(name, help=f"(unavailable: {exc})")
            p.set_defaults(func=lambda args, exc=exc: _unavailable(exc))
            continue
        p = sub.add_parser(name, help=module.HELP, description=getattr(module, "DESCRIPTION", None),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(func=module.main)
    return parser


def _unavailable(exc) -> int:
    print(f"dpengine: error: {exc}", file=sys.stderr)
    return 2


def _choose_omp_wait_policy(command: str) -> None:
    """``dpengine train``: OpenMP threads wait actively (unless the user chose a policy).

    A training step is hundreds of small torch ops (the geometry is cached once), so
    spinning threads save a wake-up per op (2 cores: 0.103 -> 0.093 s/step on the water
    example). Its few Taichi kernels (the CPU slot sums, ~10 ms of a ~75 ms step) did not
    run measurably slower beside the spinning threads than with dpengine's bounded spin
    (three alternating 180-step runs each: 73–86 ms/step both). Must run before torch is
    imported."""
    import os

    import dpengine
    if command == "train" and not dpengine.OMP_WAIT_POLICY_FROM_USER \
            and "torch" not in sys.modules:
        os.environ.pop("GOMP_SPINCOUNT", None)     # dpengine's bounded spin (see __init__)
        os.environ["OMP_WAIT_POLICY"] = "ACTIVE"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _choose_omp_wait_policy(args.command)
    from dpengine.config import ConfigError
    from dpengine.run import InputError
    from dpengine.model.import_deepmd import ImportError_
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            return args.func(args)
    except (ConfigError, InputError, ImportError_) as exc:
        print(f"dpengine: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"dpengine: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
