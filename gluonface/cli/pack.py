"""Pack an identity-folder tree or a .lst file into an insightface rec (train.rec/.idx + property).

SRC is root/<identity>/<images> (identities labelled 0..K-1 in sorted name order) or a .lst in the
mxnet im2rec ('index<TAB>label<TAB>path') or insightface face2rec2 ('aligned<TAB>path<TAB>label') layout.
OUT_PREFIX is e.g. data/train (writes data/train.rec, data/train.idx, data/property, and beside them
train.identities.tsv and train.skipped.tsv). Unreadable images are skipped and listed; the exit status is
non-zero when nothing was packed, or with --strict when anything was skipped. Output is byte-identical
for the same input and options, whatever --workers is.
"""
import os


def add_arguments(parser):
    parser.add_argument("src", help="identity folder tree or .lst file")
    parser.add_argument("out_prefix", help="output prefix, e.g. data/train (or a folder: folder/train)")
    parser.add_argument("--size", type=int, nargs=2, default=[112, 112], metavar=("H", "W"),
                        help="resize every image to H W (default 112 112)")
    parser.add_argument("--keep-size", action="store_true",
                        help="do not resize (all images must then share one size)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality when re-encoding (default 95)")
    parser.add_argument("--reencode", action="store_true",
                        help="re-encode JPEGs that already have the right size (default: keep their bytes)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="worker processes")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 if any file was skipped")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    # --- alignment hook: `gluonface align` adds its `--align ...` options here (see _preprocess). ---


def _preprocess(args):
    """The per-image preprocess callable for ``pack`` (None: images are packed as they are)."""
    return None


def run(args) -> int:
    from gluonface.data.pack import pack
    report = pack(args.src, args.out_prefix, size=None if args.keep_size else tuple(args.size),
                  quality=args.quality, workers=args.workers, reencode=args.reencode,
                  preprocess=_preprocess(args), progress=not args.quiet)
    print(report.summary())
    if args.strict and report.skipped:
        print(f"--strict: {len(report.skipped)} file(s) were skipped; see {report.report_path}")
        return 1
    return 0
