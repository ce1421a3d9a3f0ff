"""Detect faces (MTCNN) and warp them to the ArcFace template: SRC tree or list -> DST tree of crops.

Writes the same relative paths under DST, plus DST/landmarks.tsv (template points of every crop) and
DST/align_report.tsv (every image with no face, several faces, unreadable, ..., with the reason).

Examples:
  gluonface align photos/ aligned/ --workers 2
  gluonface align raw/ aligned/ --landmarks raw/landmarks.tsv      # known points (e.g. gluonface synth --raw)
  gluonface align /data/root aligned/ --lst train.lst --size 112x96
"""


def add_arguments(parser):
    parser.add_argument("src", metavar="SRC", help="root folder of the source images (identity folders)")
    parser.add_argument("dst", metavar="DST", help="output root for the aligned crops")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--landmarks", metavar="FILE",
                        help="landmarks TSV (path x1 y1 ... x5 y5) relative to SRC: warp from these points, "
                             "no detection")
    source.add_argument("--lst", metavar="FILE",
                        help="face2rec2 (flag path label [bbox [x1..x5 y1..y5]]) or im2rec list of images "
                             "relative to SRC")
    parser.add_argument("--size", default="112", help="crop size: 112, 128, 112x96 (HxW) (default 112)")
    parser.add_argument("--select", choices=("largest", "central"), default="largest",
                        help="face to keep when several are found (default largest)")
    parser.add_argument("--min-face", type=int, default=40, metavar="N",
                        help="smallest face the detector looks for, in px (default 40; >= 12)")
    parser.add_argument("--thresholds", default="0.6,0.7,0.8", metavar="P,R,O",
                        help="MTCNN face-probability thresholds of P-Net, R-Net, O-Net (default 0.6,0.7,0.8)")
    parser.add_argument("--max-side", type=int, default=1280, metavar="N",
                        help="detect on a copy downscaled to this longer side; crops use full resolution")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="worker processes (default 1 = in this process); each extra process pays "
                             "MXNet's start-up (~4 s CPU), so use it for large trees")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _numbers(text):
    from gluonface.errors import GluonFaceError
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise GluonFaceError(f"--thresholds {text!r} is not a comma-separated list of numbers; "
                             f"fix: e.g. --thresholds 0.6,0.7,0.8") from None


def run(args):
    from gluonface.align.batch import align_tree
    summary = align_tree(args.src, args.dst, landmarks=args.landmarks, lst=args.lst, size=args.size,
                         select=args.select, min_face=args.min_face, max_side=args.max_side,
                         thresholds=_numbers(args.thresholds),
                         workers=args.workers, progress=not args.no_progress)
    print(summary.format())
    return 0 if summary.written else 1
