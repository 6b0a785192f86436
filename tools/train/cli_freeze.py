"""``dpengine freeze CKPT -o MODEL.pt``: export a training checkpoint as a model file."""

HELP = "write the model file of a training checkpoint (for dpengine run)"
DESCRIPTION = """\
Export a checkpoint written by `dpengine train` (model.ckpt.pt or model.ckpt-STEP.pt) as a
TorchScript model file that `dpengine run`, `dpengine test` and dpengine.load_model read.
The file carries its metadata (type map, cutoffs, sel, precision, the training input, the
dpengine version); `dpengine info MODEL.pt` prints it.
"""


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="training checkpoint (.pt written by dpengine train)")
    parser.add_argument("-o", "--output", default="model.pt", help="model file to write "
                        "(default: model.pt)")


def main(args) -> int:
    from dpengine_tools.train.freeze import freeze

    path = freeze(args.checkpoint, args.output)
    print(f"wrote {path}")
    return 0
