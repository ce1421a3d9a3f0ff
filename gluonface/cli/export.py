"""Export a run's backbone as an MXNet symbol checkpoint (and optionally ONNX and oneDNN INT8).

Writes OUT_PREFIX-symbol.json + OUT_PREFIX-0000.params (input `data` (N, 3, 112, 112) raw RGB 0..255,
normalised in-graph; output node `fc1`), OUT_PREFIX.onnx with --onnx (dynamic batch, checked with the onnx
checker and onnxruntime), OUT_PREFIX-int8-symbol.json/-0000.params with --int8 (calibrated on images from
--calib REC), and export.json beside them (backbone, sizes, config hash, parity checks, verification).
Every artefact is compared with the training network before the command succeeds.

The ONNX input convention (--onnx-input): `raw` (default) takes RGB 0..255 and starts with the Sub/Mul
nodes by which insightface's model_zoo recognises raw-pixel models; `normalized` takes (RGB - 127.5) / 127.5
like arcface_torch's models. Both record it in the model's metadata_props (input_mean, input_std, ...).

Example: gluonface export runs/r50 models/r50 --onnx --int8 --calib data/train.rec --pairs data/lfw.bin
"""


def add_arguments(parser):
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a `gluonface train` output directory")
    parser.add_argument("out_prefix", metavar="OUT_PREFIX", help="output prefix, e.g. models/r50")
    parser.add_argument("--which", default="auto",
                        help="checkpoint: auto (best if kept, else latest), best, latest or a step number")
    parser.add_argument("--onnx", action="store_true", help="also write OUT_PREFIX.onnx")
    parser.add_argument("--onnx-input", choices=["raw", "normalized"], default=None,
                        help="what the ONNX model takes (implies --onnx): raw = RGB 0..255 (default; insightface "
                             "detects it), normalized = (RGB - 127.5) / 127.5 (arcface_torch's convention)")
    parser.add_argument("--int8", action="store_true", help="also write an INT8 model (needs --calib)")
    parser.add_argument("--calib", metavar="REC", help="rec whose images calibrate the INT8 ranges")
    parser.add_argument("--calib-images", type=int, default=256, help="calibration images drawn from --calib")
    parser.add_argument("--calib-mode", default="naive", choices=["naive", "entropy"],
                        help="naive = activation min/max (fast); entropy = KL thresholds (slow)")
    parser.add_argument("--pairs", metavar="BIN", help="verification .bin: accuracy of each form in export.json")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size for --pairs")


def run(args):
    from gluonface.machine import use_inference_engine
    use_inference_engine("cpu")   # before MXNet loads (gluonface.machine)
    from gluonface.export.run import export_and_report
    return export_and_report(args.run_dir, args.out_prefix, which=args.which,
                             onnx=args.onnx or args.onnx_input is not None, onnx_input=args.onnx_input or "raw",
                             int8=args.int8,
                             calib=args.calib, calib_images=args.calib_images, calib_mode=args.calib_mode,
                             pairs=args.pairs, batch_size=args.batch_size)
