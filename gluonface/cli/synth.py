"""Render synthetic face identities into an identity-folder tree with true 5-point landmarks.

Writes OUT/s<seed>_id00000/000.jpg ... and OUT/landmarks.tsv. By default faces are aligned near the ArcFace
112x112 template; --raw writes unaligned faces on larger canvases for `gluonface align`.
Same --seed gives byte-identical files for any --workers.
"""
import os


def add_arguments(parser):
    parser.add_argument("out", help="output folder (created; must not already hold identity folders)")
    parser.add_argument("--identities", type=int, default=100, help="number of identities (default 100)")
    parser.add_argument("--images-per-id", type=int, default=20, help="images per identity (default 20)")
    parser.add_argument("--size", type=int, default=112, help="aligned image size in pixels (default 112)")
    parser.add_argument("--seed", type=int, default=0, help="seed; different seeds give different identities")
    parser.add_argument("--raw", action="store_true",
                        help="unaligned faces on 160-250 px canvases (landmarks in canvas pixels)")
    parser.add_argument("--nuisance", type=float, default=1.0,
                        help="strength of per-image variation (pose, lighting, blur, noise, occlusion)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="worker processes")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from gluonface.data.synthetic import SynthSpec, generate
    spec = SynthSpec(identities=args.identities, images_per_id=args.images_per_id, size=args.size,
                     seed=args.seed, raw=args.raw, nuisance=args.nuisance)
    counts = generate(args.out, spec, workers=args.workers, progress=not args.quiet)
    print(f"wrote {counts['images']} images of {counts['identities']} identities to {args.out} "
          f"(landmarks: {os.path.join(args.out, 'landmarks.tsv')})")
    return 0
