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
    parser.add_argument("--align", action="store_true",
                        help="detect (MTCNN) and warp each face to the ArcFace template at --size before "
                             "packing; images without a face are skipped and listed")
    parser.add_argument("--landmarks", metavar="FILE",
                        help="with --align: landmarks TSV (paths relative to SRC) to warp from instead of "
                             "detecting; images it does not list are skipped")
    parser.add_argument("--select", choices=("largest", "central"), default="largest",
                        help="with --align: face to keep when several are found (default largest)")
    parser.add_argument("--min-face", type=int, default=40, help="with --align: smallest face in px")


def _preprocess(args):
    """The per-image preprocess callable for ``pack`` (None: images are packed as they are)."""
    if not args.align:
        if args.landmarks:
            from gluonface.errors import GluonFaceError
            raise GluonFaceError("--landmarks only applies with --align; fix: add --align")
        return None
    from gluonface.align.preprocess import AlignPreprocess
    landmarks = None
    if args.landmarks:
        from gluonface.align.sources import read_landmarks_file
        landmarks = read_landmarks_file(args.landmarks)
    return AlignPreprocess(size=tuple(args.size), select=args.select, min_face=args.min_face,
                           landmarks=landmarks)


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
