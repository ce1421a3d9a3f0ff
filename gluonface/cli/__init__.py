"""The ``gluonface`` command: one subcommand per module in this package.

Each subcommand module defines ``add_arguments(parser)`` and ``run(args) -> int`` and its module docstring's
first line is the subcommand's help text. Subcommand modules import heavy libraries (MXNet) inside ``run``
so that ``gluonface --help`` stays fast. ``run`` parses nothing itself and calls one library function.
"""
import argparse
import importlib
import sys

# Order is the order shown in ``gluonface --help``.
COMMANDS = [
    "synth", "align", "pack", "inspect", "pairs",
    "flops", "train", "launch", "eval", "export", "embed", "doctor",
]


def _available():
    for name in COMMANDS:
        try:
            yield name, importlib.import_module(f"gluonface.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"gluonface.cli.{name}":
                raise


def build_parser():
    parser = argparse.ArgumentParser(
        prog="gluonface",
        description="Face recognition on MXNet Gluon: pack, align, train, launch, evaluate, export.")
    from gluonface import __version__
    parser.add_argument("--version", action="version", version=f"gluonface {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _available():
        doc = (module.__doc__ or name).strip().splitlines()[0]
        p = sub.add_parser(name, help=doc, description=(module.__doc__ or doc).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv=None):
    from gluonface.errors import GluonFaceError
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    try:
        return int(args._module.run(args) or 0)
    except GluonFaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
