"""``gluonface eval``: load a model (run directory or exported file), run the requested protocols, write
``eval.json`` and the ROC / CMC plots, and return the results."""
import json
import os

import numpy as np

from gluonface.errors import GluonFaceError


def parse_ctx(text):
    """``'cpu'``, ``'gpu0'`` or ``'gpu0,gpu1'`` -> list of ``mx.Context``."""
    import mxnet as mx
    out = []
    for part in str(text or "cpu").split(","):
        part = part.strip().lower()
        if part == "cpu":
            out.append(mx.cpu())
        elif part.startswith("gpu") and part[3:].isdigit():
            if int(part[3:]) >= mx.context.num_gpus():
                raise GluonFaceError(f"--ctx {part}: this machine has {mx.context.num_gpus()} GPU(s) visible to "
                                     "MXNet; fix: use cpu or an existing gpuN")
            out.append(mx.gpu(int(part[3:])))
        else:
            raise GluonFaceError(f"--ctx {part!r} is not cpu or gpuN; fix: e.g. --ctx cpu or --ctx gpu0,gpu1")
    return out


def load_model(source, which="auto", ctx=None, backend="auto"):
    """A model to embed with: a run directory's backbone, a symbol checkpoint, an INT8 checkpoint or ONNX.

    ``backend`` applies to exported models (``FaceEmbedder.from_path``); a run directory's backbone runs as
    the Gluon network it is (``mxnet``; export it to run it on onnxruntime).

    Returns:
        (model usable by ``embed_images``, info dict with ``kind``, ``source``, ``input_size``, ...).
    """
    import mxnet as mx
    ctx = ctx or [mx.cpu()]
    source = str(source)
    from gluonface.export.embedder import check_backend
    check_backend(backend)
    if os.path.isdir(source):
        if backend == "onnxruntime":
            raise GluonFaceError(f"{source} is a run directory: its backbone runs as a Gluon network on MXNet; fix: "
                                 "--backend auto/mxnet, or `gluonface export RUN_DIR PREFIX --onnx` and evaluate "
                                 "PREFIX with --backend onnxruntime")
        from gluonface.engine.checkpoint import load_backbone
        from gluonface.export.run import resolve_which
        from gluonface.machine import mxnet_engine
        which = resolve_which(source, which)
        net, info = load_backbone(source, which, ctx)
        net.hybridize(static_alloc=True, static_shape=True)
        return net, {"kind": "run", "source": source, "which": which, "step": info.get("step"),
                     "config_hash": info.get("config_hash"), "backbone": info["model"].get("name"),
                     "input_size": [112, 112],
                     "backend": {"backend": "mxnet", "runs": {"all": "mxnet"}, "mxnet_engine": mxnet_engine()}}
    if source.endswith(".onnx") or os.path.isfile(source + "-symbol.json") or source.endswith("-symbol.json"):
        from gluonface.export.embedder import FaceEmbedder
        emb = FaceEmbedder.from_path(source, ctx=ctx[0], backend=backend)
        info = {"kind": emb.kind, "source": source, "backbone": emb.info.get("backbone"),
                "input_size": list(emb.input_size)}
        if emb.input_spec:  # what the ONNX model was fed (its metadata said so)
            info["onnx_input"] = emb.input_spec
        return emb, info
    raise GluonFaceError(f"{source} is neither a run directory, an exported PREFIX (PREFIX-symbol.json) nor an "
                         ".onnx file; fix: pass what `gluonface train` or `gluonface export` wrote")


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items() if k not in ("roc", "ranks")}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def evaluate(model, *, which="auto", bins=(), templates=None, template_pairs=None, identification=None,
             image_root=None, out_dir=None, batch_size=64, ctx=None, flip=True, nfolds=10, image_norm=True,
             progress=False, backend="auto"):
    """Run every protocol asked for on one model.

    Args:
        model: run directory, exported symbol prefix (fp32 or INT8) or ``.onnx`` file.
        bins: ``.bin`` pair sets (LFW-style verification).
        templates, template_pairs: IJB-style metadata and template pair files (both or neither).
        identification: gallery/probe list file.
        image_root: root of the image paths in the template / identification files (default: the
            directory of each list file).
        out_dir: where ``eval.json``, ``roc.png`` and ``cmc.png`` go (None: nothing written).
        ctx: list of ``mx.Context`` (``parse_ctx``).
        backend: exported models: ``auto``, ``mxnet`` or ``onnxruntime`` (``FaceEmbedder``); what ran is
            ``results["model"]["backend"]``.

    Returns:
        dict ``{"model": info, "verification": {name: metrics}, "templates": metrics, "identification":
        metrics}`` (only the protocols run).
    """
    from gluonface.evaluate.verification import verify_bin
    if bool(templates) != bool(template_pairs):
        raise GluonFaceError("template verification needs both --templates META and --template-pairs PAIRS; "
                             "fix: give both files")
    if not (bins or templates or identification):
        raise GluonFaceError("nothing to evaluate; fix: give --bin PAIRS.bin, --templates/--template-pairs or "
                             "--identification LIST")
    for path in list(bins) + [p for p in (templates, template_pairs, identification) if p]:
        if not os.path.isfile(path):
            raise GluonFaceError(f"{path} does not exist; fix: check the path")
    net, info = load_model(model, which, ctx, backend)
    size = tuple(info["input_size"])
    results = {"model": info}
    curves = {}
    if bins:
        results["verification"] = {}
        for path in bins:
            name = os.path.splitext(os.path.basename(path))[0]
            m = verify_bin(net, path, batch_size=batch_size, ctx=ctx, image_size=size, nfolds=nfolds, flip=flip,
                           progress=progress)
            results["verification"][name] = m
            curves[name] = m["roc"]
    if templates:
        from gluonface.evaluate.templates import evaluate_templates
        m = evaluate_templates(net, templates, template_pairs, image_root or os.path.dirname(templates), size,
                               batch_size, ctx, flip, image_norm, progress)
        results["templates"] = m
        curves["templates"] = m["roc"]
    if identification:
        from gluonface.evaluate.identification import evaluate_identification
        results["identification"] = evaluate_identification(
            net, identification, image_root or os.path.dirname(identification), size, batch_size, ctx, flip,
            progress=progress)
    if hasattr(net, "backend_report"):   # auto decides per batch size while embedding: report what ran
        info["backend"] = net.backend_report()
    if out_dir:
        from gluonface.evaluate.plots import plot_cmc, plot_roc
        os.makedirs(out_dir, exist_ok=True)
        files = {}
        if curves:
            files["roc_plot"] = plot_roc(curves, os.path.join(out_dir, "roc.png"), title=os.path.basename(str(model)))
        if identification:
            files["cmc_plot"] = plot_cmc({"identification": results["identification"]["cmc"]},
                                    os.path.join(out_dir, "cmc.png"))
        results["files"] = files
        with open(os.path.join(out_dir, "eval.json"), "w", encoding="utf-8") as f:
            json.dump(_jsonable(results), f, indent=2)
    return results


def format_results(results):
    """Human-readable summary lines of ``evaluate``'s results."""
    lines = [f"model: {results['model']['source']} ({results['model']['kind']})"]
    backend = results["model"].get("backend")
    if backend:
        runs = ", ".join(f"batch {c}: {n}" if c != "all" else n for c, n in sorted(backend["runs"].items()))
        lines[0] += f", backend {backend['backend']}" + (f" ({runs})" if backend["backend"] == "auto" else "")
    spec = results["model"].get("onnx_input")
    if spec:
        lines[0] += (f", fed (RGB - {spec['mean']:g}) / {spec['std']:g} ({spec['convention']} convention, from "
                     f"{spec['source']})")
    for name, m in results.get("verification", {}).items():
        tars = "  ".join(f"TAR@FAR={far:g}: {tar:.4f}" for far, tar in sorted(m["tar_at_far"].items()))
        lines.append(f"{name}: accuracy {100 * m['accuracy']:.2f} ± {100 * m['accuracy_std']:.2f} %  "
                     f"threshold {m['threshold']:.4f}  AUC {m['auc']:.4f}  {tars}  ({m['num_pairs']} pairs)")
    if "templates" in results:
        m = results["templates"]
        tars = "  ".join(f"TAR@FAR={far:g}: {tar:.4f}" for far, tar in sorted(m["tar_at_far"].items()))
        lines.append(f"templates: {m['num_templates']} templates, {m['num_pairs']} pairs  AUC {m['auc']:.4f}  "
                     f"{tars}")
    if "identification" in results:
        m = results["identification"]
        r5 = "n/a" if m["rank5"] is None else f"{100 * m['rank5']:.2f} %"
        lines.append(f"identification: rank-1 {100 * m['rank1']:.2f} %  rank-5 {r5}  ({m['num_probes']} probes, "
                     f"{m['num_gallery_subjects']} gallery subjects, {m['num_unmated_probes']} unmated)")
    for kind, path in results.get("files", {}).items():
        lines.append(f"{kind} plot: {path}")
    return "\n".join(lines)


def evaluate_and_report(model, ctx="cpu", **kw):
    """``evaluate`` with ``ctx`` given as text (``parse_ctx``) and print the summary (``gluonface eval``)."""
    results = evaluate(model, ctx=parse_ctx(ctx), **kw)
    print(format_results(results))
    return 0
