"""Evaluate a model: .bin pair verification, IJB-style template 1:1 and 1:N identification.

MODEL is a `gluonface train` run directory (checkpoint chosen by --which), an exported PREFIX (float32 or
INT8) or an .onnx file. Protocols (any combination):
  --bin X.bin            10-fold accuracy (threshold chosen on the other folds), TAR@FAR 1e-1..1e-4, AUC
  --templates META --template-pairs PAIRS
                         META lines `image_path template_id media_id`, PAIRS lines `template_a template_b
                         label`; TAR@FAR 1e-6..1e-1 (IJB-B/C style: media-averaged, template-summed)
  --identification LIST  LIST lines `image_path subject_id gallery|probe`; rank-1/rank-5 and the CMC
Image paths are relative to --image-root (default: the list file's directory) and must be aligned faces.
With --out DIR: eval.json, roc.png and cmc.png are written there.
"""
from gluonface.export.names import BACKENDS


def add_arguments(parser):
    parser.add_argument("model", metavar="MODEL", help="run directory, exported PREFIX or .onnx")
    parser.add_argument("--which", default="auto", help="run checkpoint: auto, best, latest or a step number")
    parser.add_argument("--bin", action="append", default=[], metavar="PAIRS.bin", help="pair set (repeatable)")
    parser.add_argument("--templates", metavar="META", help="template metadata file")
    parser.add_argument("--template-pairs", metavar="PAIRS", help="template pair list")
    parser.add_argument("--identification", metavar="LIST", help="gallery/probe list")
    parser.add_argument("--image-root", help="root of the image paths in META / LIST")
    parser.add_argument("--out", metavar="DIR", help="write eval.json and plots here")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--ctx", default="cpu", help="cpu, gpu0 or gpu0,gpu1 (batches split across devices)")
    parser.add_argument("--backend", default="auto", choices=BACKENDS,
                        help="exported models: auto (per batch size the faster of MXNet and onnxruntime, for "
                             "INT8 models of MXNet and gluonface's INT8 runner, measured on the first batches), "
                             "mxnet, onnxruntime or native (the INT8 runner); eval.json says which ran")
    parser.add_argument("--nfolds", type=int, default=10)
    parser.add_argument("--no-flip", action="store_true", help="skip flip test-time augmentation")
    parser.add_argument("--keep-image-norm", action="store_true",
                        help="templates: pool unnormalised image embeddings (norm as quality weight)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args):
    from gluonface.machine import use_inference_engine
    use_inference_engine(args.ctx)   # before MXNet loads (gluonface.machine)
    from gluonface.evaluate.run import evaluate_and_report
    return evaluate_and_report(args.model, which=args.which, bins=args.bin, templates=args.templates,
                               template_pairs=args.template_pairs, identification=args.identification,
                               image_root=args.image_root, out_dir=args.out, batch_size=args.batch_size,
                               ctx=args.ctx, flip=not args.no_flip, nfolds=args.nfolds,
                               image_norm=not args.keep_image_norm, progress=not args.no_progress,
                               backend=args.backend)
