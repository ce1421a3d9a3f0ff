"""Show counts and check the integrity of a rec (PREFIX, .rec or folder) or a .bin pair set.

For a rec: images, identities, images per identity (min/median/max), image size, and a full pass
(every record decodes, labels in range and consistent with the identity ranges). For a .bin: pairs,
positives/negatives, image size. --grid out.png writes a contact sheet (sample identities or pairs).
Exits 1 when the integrity pass finds problems.
"""


def add_arguments(parser):
    parser.add_argument("path", help="rec prefix (data/train), .rec file, folder holding train.rec, or a .bin")
    parser.add_argument("--grid", metavar="OUT.png", default=None, help="write a contact sheet PNG")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from gluonface.data.inspect import inspect
    report = inspect(args.path, grid=args.grid, progress=not args.quiet)
    print(report.text())
    return 0 if report.ok else 1
