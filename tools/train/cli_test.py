"""``dpengine test -m MODEL -s SYSTEM ...``: a model's errors on labelled data (``dp test``)."""

HELP = "energy, force and virial errors of a model on deepmd/npy systems"
DESCRIPTION = """\
Evaluate a model file on deepmd/npy systems and print, per system and weighted over all,
the energy MAE/RMSE (eV and eV/atom), force MAE/RMSE (eV/A) and, where the data has
virial.npy, the virial MAE/RMSE — as DeePMD-kit's `dp test`. --detail PREFIX writes
PREFIX.e.out, PREFIX.e_peratom.out, PREFIX.f.out (and PREFIX.v.out, PREFIX.v_peratom.out):
data and prediction columns with one '# system: ...' header per system.
"""


def add_arguments(parser) -> None:
    parser.add_argument("-m", "--model", required=True, help="model file (.pt)")
    parser.add_argument("-s", "--systems", required=True, nargs="+", metavar="SYSTEM",
                        help="deepmd/npy system folders (or folders that contain systems)")
    parser.add_argument("-n", "--frames", type=int, default=0, metavar="FRAMES",
                        help="test the first FRAMES frames of each system (default: all)")
    parser.add_argument("--detail", metavar="PREFIX", help="write PREFIX.e.out, PREFIX.f.out, ...")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device")


def main(args) -> int:
    from dpengine_tools.train.data import DataError
    from dpengine_tools.train.test import run_test

    if args.frames < 0:
        raise ValueError(f"-n must be >= 0, got {args.frames}")
    try:
        run_test(args.model, args.systems, args.frames or None, args.detail, args.device)
    except DataError as exc:
        raise ValueError(str(exc)) from None
    return 0
