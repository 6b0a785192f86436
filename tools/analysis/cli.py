"""``dpengine analyze``: structure and dynamics of an AMBER NetCDF trajectory.

Kept light at import (argparse only): ``dpengine``'s CLI imports this module to build its
parser; numpy, Taichi and matplotlib are imported when an analysis runs.
"""
from __future__ import annotations

import argparse
import sys

HELP = "analyse a trajectory: RDF, ADF, Steinhardt, MSD/diffusion, density, VACF, thermo plots"

DESCRIPTION = """\
Analyse an AMBER NetCDF trajectory (written by dpengine run or any other program) and a
thermo log. Each analysis writes a CSV table (units in the header) and a PNG plot to
--output-dir, prints a short summary, or the key numbers as JSON with --json.

  rdf        radial distribution g_AB(r), coordination number n_AB(r)
  adf        bond-angle distribution of triplets j-i-k within a cutoff (centre: 2nd type)
  steinhardt per-atom Q4, Q6 and Lechner-Dellago averages Q4bar, Q6bar
  msd        mean-squared displacement (unwrapped) and diffusion coefficient D +- error
  density    mass density over time and its average
  vacf       velocity autocorrelation and its power spectrum (needs velocities)
  thermo     plots and averages of the columns of a thermo log

Atom types (AMBER files carry no names): --input RUN.toml (the dpengine run input), or
--types-file FILE (LAMMPS data with --type-map, extxyz, POSCAR, deepmd/npy folder, or a
text file with one element per atom per line; numeric types per line with --type-map).
Triclinic cells and cells that change (NPT) are handled. Units: Å, ps, g/cm³, degree.

Examples:
  dpengine analyze rdf out/traj.nc --input inputs/water/water.toml --types O O
  dpengine analyze adf out/traj.nc --input inputs/water/water.toml --types O O O --cutoff 3.5
  dpengine analyze msd out/traj.nc --input inputs/water/water.toml --types O --json
  dpengine analyze thermo out/thermo.log
"""

ANALYSES = ("rdf", "adf", "steinhardt", "msd", "density", "vacf", "thermo")


def _common(p: argparse.ArgumentParser, trajectory: bool = True) -> None:
    if trajectory:
        p.add_argument("trajectory", help="AMBER NetCDF trajectory (.nc)")
        g = p.add_argument_group("atom types")
        g.add_argument("--input", metavar="RUN.toml", help="dpengine run input: its structure "
                       "and type map name the atoms")
        g.add_argument("--types-file", metavar="FILE", help="structure file (LAMMPS data, "
                       "extxyz, POSCAR, deepmd/npy) or text file, one element (or 0-based "
                       "type with --type-map) per atom per line")
        g.add_argument("--type-map", nargs="+", metavar="NAME",
                       help="element names of numeric types (LAMMPS types 1.., type.raw 0..)")
    f = p.add_argument_group("frames" if trajectory else "rows")
    f.add_argument("--skip", type=int, default=0, metavar="N", help="leave out the first N "
                   + ("frames" if trajectory else "rows") + " (equilibration; default 0)")
    f.add_argument("--stride", type=int, default=1, metavar="N", help="use every N-th one")
    f.add_argument("--stop", type=int, metavar="N", help="stop before this 0-based index")
    o = p.add_argument_group("output")
    o.add_argument("--output-dir", "-o", default=".", metavar="DIR",
                   help="folder for the table and the plot (default: .)")
    o.add_argument("--prefix", default="", help="prefix of the output file names")
    o.add_argument("--json", action="store_true", help="print the key numbers as JSON")
    o.add_argument("--no-plot", action="store_true", help="write the table only")
    o.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the analyses as sub-subcommands of ``parser`` (``dpengine analyze``)."""
    raw = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="analysis", metavar="ANALYSIS")
    sub.required = True

    p = sub.add_parser("rdf", help="radial distribution function and coordination number",
                       formatter_class=raw, description="g_AB(r) = <V c(r)>/(N_A N_B 4πr²dr) "
                       "over ordered pairs (self excluded); n_AB(r): mean number of B within r "
                       "of an A. First peak, first minimum and coordination number reported.")
    _common(p)
    p.add_argument("--types", nargs=2, required=True, metavar=("A", "B"),
                   help="element names of the centre and partner atoms, e.g. O H")
    p.add_argument("--rmax", type=float, metavar="R", help="largest distance, Å (default and "
                   "maximum: half the smallest cell width)")
    p.add_argument("--bins", type=int, default=200, metavar="N", help="bins (default 200)")
    p.add_argument("--method", choices=("auto", "pairs", "nlist"), default="auto",
                   help="pair search: all pairs, or the engine's cell list (default: auto)")

    p = sub.add_parser("adf", help="bond-angle distribution of triplets within a cutoff",
                       formatter_class=raw, description="P(θ) of the angle j-i-k, centre i of "
                       "the second type, |r_ij| and |r_ik| below --cutoff; ∫P dθ = 1.")
    _common(p)
    p.add_argument("--types", nargs=3, required=True, metavar=("J", "I", "K"),
                   help="element names j, centre i, k, e.g. O O O")
    p.add_argument("--cutoff", type=float, required=True, metavar="R",
                   help="largest bond length, Å (e.g. 3.5 for O-O-O of water)")
    p.add_argument("--bins", type=int, default=180, metavar="N", help="bins on 0-180 degree")

    p = sub.add_parser("steinhardt", help="Steinhardt Q_l and Lechner-Dellago Q̄_l per atom",
                       formatter_class=raw, description="Per-atom distributions of Q_l and "
                       "Q̄_l (neighbours: atoms of the same selection within --cutoff).")
    _common(p)
    p.add_argument("--types", nargs=1, required=True, metavar="A",
                   help="element name of the atoms (or 'all'), e.g. O")
    p.add_argument("--cutoff", type=float, required=True, metavar="R", help="neighbour "
                   "cutoff, Å (e.g. 3.5 for water oxygens; between shells for crystals)")
    p.add_argument("--degrees", type=int, nargs="+", default=[4, 6], metavar="L",
                   help="degrees l (default 4 6)")
    p.add_argument("--bins", type=int, default=100, metavar="N", help="bins on [0, 1]")

    p = sub.add_parser("msd", help="mean-squared displacement and diffusion coefficient",
                       formatter_class=raw, description="MSD of unwrapped positions "
                       "(centre-of-mass drift removed); D from MSD = 6 D t + b on the fit "
                       "window, error from --blocks independent segments.")
    _common(p)
    p.add_argument("--types", nargs=1, required=True, metavar="A", help="element (or 'all')")
    p.add_argument("--fit", type=float, nargs=2, metavar=("T0", "T1"), help="fit window, ps "
                   "(default 20%%-80%% of one segment)")
    p.add_argument("--max-lag", type=float, metavar="PS", help="longest lag, ps (default half)")
    p.add_argument("--blocks", type=int, default=5, metavar="B", help="segments for σ_D")
    p.add_argument("--origins", type=int, default=250, metavar="N",
                   help="time origins kept in the lag window (memory: N x atoms x 24 bytes)")
    p.add_argument("--no-drift-correction", action="store_true",
                   help="keep the centre-of-mass motion")

    p = sub.add_parser("density", help="mass density over time and its average",
                       formatter_class=raw, description="ρ(t) = Σm / V(t) in g/cm³; average "
                       "with a block standard error.")
    _common(p)
    p.add_argument("--blocks", type=int, default=5, metavar="B", help="blocks for the error")

    p = sub.add_parser("vacf", help="velocity autocorrelation and its power spectrum",
                       formatter_class=raw, description="C(t) = <v(0)·v(t)> and its Hann-"
                       "windowed spectrum; D = ⅓∫C dt (Green-Kubo). Needs velocities.")
    _common(p)
    p.add_argument("--types", nargs=1, required=True, metavar="A", help="element (or 'all')")
    p.add_argument("--max-lag", type=float, metavar="PS", help="longest lag, ps (default half)")
    p.add_argument("--origins", type=int, default=250, metavar="N", help="time origins kept")

    p = sub.add_parser("thermo", help="plots and averages of a thermo log's columns",
                       formatter_class=raw, description="Each column of a thermo log "
                       "(header '# name[unit] ...') against time, with mean ± block error.")
    p.add_argument("log", help="thermo log (dpengine run's thermo.log)")
    _common(p, trajectory=False)
    p.add_argument("--columns", nargs="+", metavar="NAME", help="columns to plot (default all)")
    p.add_argument("--blocks", type=int, default=5, metavar="B", help="blocks for the errors")
    parser.set_defaults(func=main)


def main(args) -> int:
    """Run the analysis chosen by ``args.analysis``; print a summary or JSON; return 0."""
    from . import runners
    from .output import to_json

    result = getattr(runners, f"run_{args.analysis}")(args)
    summary = result.pop("summary")
    print(to_json(result) if args.json else "\n".join(summary))
    return 0


if __name__ == "__main__":  # pragma: no cover
    p = argparse.ArgumentParser(prog="dpengine analyze", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    a = p.parse_args()
    sys.exit(a.func(a))
