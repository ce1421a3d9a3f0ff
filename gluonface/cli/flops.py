"""Count parameters and multiply-accumulates (MACs) of a backbone at a given input size.

Example: gluonface flops iresnet50   →   iresnet50 @112x112: 43.63 M parameters, 6.31 G MACs (512-d)
MACs count convolutions and dense layers (1 MAC = one multiply + one add; FLOPs ≈ 2 × MACs).
"""


def add_arguments(parser):
    parser.add_argument("name", help="model name (see `gluonface flops --list`)", nargs="?")
    parser.add_argument("--size", type=int, default=112, help="square input size in pixels (default 112)")
    parser.add_argument("--embedding-size", type=int, default=512, help="embedding width (default 512)")
    parser.add_argument("--list", action="store_true", help="list the registered model names and exit")


def run(args):
    from gluonface.errors import GluonFaceError
    from gluonface.models import list_models
    from gluonface.models.flops import model_cost
    if args.list:
        print("\n".join(list_models()))
        return 0
    if not args.name:
        raise GluonFaceError("no model name given; fix: gluonface flops iresnet50 (or --list)")
    cost = model_cost(args.name, size=args.size, embedding_size=args.embedding_size)
    print(f"{cost.name} @{cost.size}x{cost.size}: {cost.params / 1e6:.2f} M parameters, "
          f"{cost.macs / 1e9:.2f} G MACs, output {cost.embedding_shape}")
    return 0
