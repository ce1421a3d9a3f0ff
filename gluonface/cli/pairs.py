"""Build a verification pair set (.bin) of balanced positive/negative pairs from a folder tree or a rec.

Pairs are drawn with --seed (half negatives, the rest positives, shuffled, no repeats). Use
--exclude-identities-of PREFIX to leave out identities packed into a training rec (by name, from
PREFIX.identities.tsv), so the pairs test identities the model never saw.
"""


def add_arguments(parser):
    parser.add_argument("src", help="identity folder tree (root/<identity>/<images>) or a rec prefix/folder")
    parser.add_argument("out", help="output .bin path")
    parser.add_argument("--pairs", type=int, default=1000, help="number of pairs (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--exclude-identities-of", metavar="PREFIX", default=None,
                        help="leave out identities present in this packed rec (e.g. the training set)")


def run(args) -> int:
    from gluonface.data.pairs import build_pairs
    from gluonface.errors import GluonFaceError
    if args.pairs < 2:
        raise GluonFaceError(f"--pairs {args.pairs} is too small; fix: ask for at least 2 pairs")
    n, pos, ids = build_pairs(args.src, args.out, args.pairs, args.seed, args.exclude_identities_of)
    print(f"wrote {n} pairs ({pos} positive, {n - pos} negative) from {ids} identities to {args.out}")
    return 0
