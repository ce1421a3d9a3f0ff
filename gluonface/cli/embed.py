"""Embed aligned face images with an exported model and write them to a .npy file.

IMAGES are aligned face files (the model's input size, e.g. 112x112) or directories searched recursively.
The .npy holds (N, E) float32 L2-normalised embeddings (flip test-time augmentation unless --no-flip);
OUT.txt beside it lists the image paths in the same order. MODEL is PREFIX (PREFIX-symbol.json +
PREFIX-0000.params, float32 or INT8) or MODEL.onnx, as written by `gluonface export`. The backend that ran
(MXNet, onnxruntime or gluonface's INT8 runner; --backend) is printed at the end.
"""
from gluonface.export.names import BACKENDS


def add_arguments(parser):
    parser.add_argument("images", nargs="+", metavar="IMAGES", help="aligned image files or directories")
    parser.add_argument("--model", required=True, metavar="PREFIX", help="exported PREFIX or .onnx file")
    parser.add_argument("--out", required=True, help="output .npy file")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-flip", action="store_true", help="skip flip test-time augmentation")
    parser.add_argument("--backend", default="auto", choices=BACKENDS,
                        help="auto: per batch size the faster of MXNet and onnxruntime (INT8 models: of MXNet "
                             "and gluonface's INT8 runner), measured on the first batches; mxnet / onnxruntime / "
                             "native (the INT8 runner): that one only")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args):
    from gluonface.machine import use_inference_engine
    use_inference_engine("cpu")   # before MXNet loads (gluonface.machine)
    from gluonface.export.embed_files import embed_files
    embed_files(args.images, args.model, args.out, batch_size=args.batch_size, flip=not args.no_flip,
                progress=not args.no_progress, backend=args.backend)
    return 0
