"""``dpengine train TRAIN.toml``: fit a Deep Potential to deepmd/npy data."""

HELP = "train a Deep Potential (se_e2_a) on deepmd/npy data"
DESCRIPTION = """\
Train a DeepPot-SE (se_e2_a) model on energies and forces in DeePMD-kit's deepmd/npy
layout, with DeePMD-kit's semantics: statistics and energy bias from the data, stepped
exponential learning-rate decay, energy/force/virial prefactors that follow the learning
rate, Adam, systems drawn in proportion to their frames. The input file's tables and keys
are listed in dpengine_tools.train.config (see README, "Training"); inputs/water/train.toml
is an example. Relative data paths are taken from the TOML file's folder.

Writes to --output-dir: lcurve.out (DeePMD-kit's columns: step, validation and training
RMSE of the loss, of the energy per atom and of the force, learning rate) and
checkpoints PREFIX-STEP.pt (PREFIX.pt = newest). Continue with --restart PREFIX.pt; export
with `dpengine freeze PREFIX.pt -o model.pt`.

Exit codes: 0 done, 2 bad input (one-line message).
"""


def add_arguments(parser) -> None:
    parser.add_argument("input", help="training TOML file")
    parser.add_argument("--restart", metavar="CKPT", help="continue from this checkpoint")
    parser.add_argument("--init-model", metavar="MODEL", help="start from the weights and "
                        "statistics of this model file or checkpoint")
    parser.add_argument("--output-dir", "-o", default=".", metavar="DIR",
                        help="folder for lcurve.out and the checkpoints (default: .)")
    parser.add_argument("--steps", type=int, metavar="N", help="replace [training] steps")
    parser.add_argument("--time-limit", type=float, metavar="SECONDS",
                        help="stop with a checkpoint after this much training time (batch jobs)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress output")


def main(args) -> int:
    from dpengine.config import ConfigError
    from dpengine_tools.train.config import load_config
    from dpengine_tools.train.data import DataError
    from dpengine_tools.train.trainer import Trainer

    if args.restart and args.init_model:
        raise ConfigError("give either --restart or --init-model, not both")
    cfg = load_config(args.input)
    if args.steps is not None:
        if args.steps < 1:
            raise ConfigError(f"--steps must be >= 1, got {args.steps}")
        cfg["training"]["steps"] = args.steps
    try:
        trainer = Trainer(cfg, args.output_dir, restart=args.restart, init_model=args.init_model,
                          progress=not args.quiet,
                          log=(lambda msg: None) if args.quiet else print)
    except DataError as exc:
        raise ConfigError(str(exc)) from None
    trainer.run(time_limit=args.time_limit)
    return 0
