"""``export_run`` on a run directory: symbol, ONNX and INT8 artefacts checked with plain MXNet/onnxruntime."""
import json
import os

import cv2
import mxnet as mx
import numpy as np
import pytest

from gluonface.config import build_config, save_config
from gluonface.data.record import RecordWriter
from gluonface.engine.checkpoint import load_backbone, save_best
from gluonface.errors import GluonFaceError
from gluonface.export.embedder import FaceEmbedder
from gluonface.export.run import export_run
from gluonface.models import get_model
from tolerance import assert_close_scaled, assert_same_direction

pytestmark = pytest.mark.cpu_paths   # INT8 and oneDNN kernels: run again on the AVX2 code path

EMB = 32


def _make_run(run_dir, seed=0, name="iresnet_tiny"):
    """A run directory as `gluonface train` lays it out, holding a randomly initialised backbone whose BN
    statistics and fixed gammas are far from their defaults (so a missed graph fix changes the output)."""
    cfg = build_config({"model": {"name": name, "embedding_size": EMB}})
    os.makedirs(run_dir, exist_ok=True)
    save_config(cfg, os.path.join(run_dir, "config.yaml"))
    net = get_model(name, embedding_size=EMB)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 112, 112)))
    rng = np.random.default_rng(seed)
    for p in net.collect_params().values():
        if p.name.endswith(("running_var", "gamma")):
            p.set_data(mx.nd.array(rng.uniform(0.5, 2.0, p.shape)))
        elif p.name.endswith(("running_mean", "beta", "alpha")):
            p.set_data(mx.nd.array(rng.normal(0, 0.2, p.shape)))
    save_best(run_dir, net, {"step": 7})
    return cfg


def _make_rec(prefix, n=24, seed=0):
    rng = np.random.default_rng(seed)
    w = RecordWriter(prefix)
    for i in range(n):
        img = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
        w.add_image(cv2.imencode(".png", img)[1].tobytes(), i // 4)
    w.close(image_size=(112, 112))
    return prefix


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    run_dir = str(root / "run")
    _make_run(run_dir)
    rec = _make_rec(str(root / "calib" / "train"))
    meta = export_run(run_dir, str(root / "out" / "model"), onnx=True, int8=True, calib=rec)
    net, _ = load_backbone(run_dir, "best")
    return root, run_dir, net, meta


def _ref(net, x):
    return net(mx.nd.array(x)).asnumpy()


def _batch(n, seed=3):
    return np.random.default_rng(seed).uniform(0, 255, (n, 3, 112, 112)).astype(np.float32)


def test_symbol_loads_with_plain_mxnet(exported):
    root, _, net, meta = exported
    prefix = str(root / "out" / "model")
    x = _batch(3)
    ref = _ref(net, x)
    blk = mx.gluon.SymbolBlock.imports(prefix + "-symbol.json", ["data"], prefix + "-0000.params")
    assert_close_scaled(blk(mx.nd.array(x)).asnumpy(), ref)   # the folded graph: another summation order
    sym, arg, aux = mx.model.load_checkpoint(prefix, 0)
    sym = sym.get_internals()["fc1_output"]
    mod = mx.mod.Module(sym, data_names=["data"], label_names=None, context=mx.cpu())
    mod.bind(data_shapes=[("data", x.shape)], for_training=False)
    mod.set_params(arg, aux)
    mod.forward(mx.io.DataBatch([mx.nd.array(x)]), is_train=False)
    out = mod.get_outputs()[0].asnumpy()
    # Module binds through oneDNN's fused subgraph (another summation order, tests/tolerance.py).
    assert_close_scaled(out, ref)
    assert_same_direction(out, ref)
    # Only what the folded graph reads is exported (no classifier, no optimiser state; the statistics of the
    # BatchNorms after a convolution or the dense layer went into its weights), so fewer values than the
    # training block holds. The IR units' first BatchNorm (before a padded convolution) stays.
    saved = {k.split(":", 1)[1]: v for k, v in mx.nd.load(prefix + "-0000.params").items()}
    assert set(saved) == set(sym.list_inputs()) - {"data"}
    stats = lambda names: sum(k.endswith("running_mean") for k in names)  # noqa: E731
    assert stats(saved) == 3 < stats(net.collect_params().keys())
    assert sum(v.size for v in saved.values()) < sum(int(np.prod(p.shape)) for p in net.collect_params().values())


def test_onnx_graph_fixes_and_parity(exported):
    import onnx
    import onnxruntime as ort
    root, _, net, meta = exported
    path = str(root / "out" / "model.onnx")
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    inits = {i.name: i for i in model.graph.initializer}
    assert [i.name for i in model.graph.input] == ["data"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert "data" not in inits and len(inits) > 0
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for n in (1, 5):  # the batch dimension is dynamic
        x = _batch(n, seed=n)
        assert_close_scaled(sess.run(None, {"data": x})[0], _ref(net, x))
    assert meta["checks"]["onnx_max_abs_diff"] <= 1e-4


def test_int8_and_export_json(exported):
    root, run_dir, net, meta = exported
    on_disk = json.load(open(root / "out" / "export.json"))
    assert on_disk["backbone"] == "iresnet_tiny" and on_disk["embedding_size"] == EMB
    assert on_disk["input_size"] == [112, 112] and on_disk["step"] == 7
    cfg_line = open(os.path.join(run_dir, "config.yaml")).readline()
    assert on_disk["config_hash"] in cfg_line
    assert set(on_disk["files"]) == {"symbol", "params", "onnx", "int8_symbol", "int8_params"}
    q = FaceEmbedder.from_path(str(root / "out" / "model-int8"))
    assert q.kind == "int8"
    x = _batch(4)
    a, b = q(x), _ref(net, x)
    cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    # Random weights on noise are the hardest case for 8-bit ranges; trained models stay closer.
    assert cos.min() > 0.9
    calib = meta["checks"]["int8_vs_fp32_on_calibration"]   # checked at export on all 24 calibration images
    assert calib["images"] == 24 and 0.99 <= calib["min_cosine"] <= calib["mean_cosine"] <= 1.0
    graph = meta["checks"]["int8_graph"]   # which float32 graph was quantised, and what was tried before it
    assert graph["attempts"][-1] == {"graph": graph["quantised"], "passed": True,
                                     "min_cosine": calib["min_cosine"]}
    assert graph["quantised"].startswith("folded, oneDNN form")   # every operator an INT8 kernel
    # the INT8 files run in plain MXNet (Module, the client insightface's MXNet models used)
    sym, arg, aux = mx.model.load_checkpoint(str(root / "out" / "model-int8"), 0)
    mod = mx.mod.Module(sym, data_names=["data"], label_names=None, context=mx.cpu())
    mod.bind(data_shapes=[("data", x.shape)], for_training=False)
    mod.set_params(arg, aux)
    mod.forward(mx.io.DataBatch([mx.nd.array(x)]), is_train=False)
    assert_same_direction(mod.get_outputs()[0].asnumpy(), a, min_cosine=0.999)
    assert meta["checks"]["speed_images_per_s"]["int8"] > 0


def test_mismatched_and_missing_files(exported, tmp_path):
    root, _, _, _ = exported
    prefix = str(root / "out" / "model")
    with pytest.raises(GluonFaceError, match="does not exist"):
        FaceEmbedder.from_path(str(tmp_path / "nothing"))
    # A symbol of another network (mobilefacenet) with this network's params.
    other = get_model("mobilefacenet", embedding_size=EMB)
    other.initialize()
    other(mx.nd.zeros((1, 3, 112, 112)))
    from gluonface.export.symbol import export_symbol
    export_symbol(other, str(tmp_path / "other"))
    os.replace(prefix + "-0000.params", str(tmp_path / "keep.params"))
    try:
        os.link(str(tmp_path / "keep.params"), str(tmp_path / "other-0000.params.mine"))
        os.replace(str(tmp_path / "other-0000.params.mine"), str(tmp_path / "other-0000.params"))
        with pytest.raises(GluonFaceError, match="does not match|does not fit"):
            FaceEmbedder.from_path(str(tmp_path / "other"))
        with pytest.raises(GluonFaceError, match="params file .* does not exist"):
            FaceEmbedder.from_path(prefix)
    finally:
        os.replace(str(tmp_path / "keep.params"), prefix + "-0000.params")
    # Same parameter names, other shapes (e.g. the params of a wider embedding): caught at load time.
    params = mx.nd.load(prefix + "-0000.params")
    key = next(k for k in params if k.endswith("dense0_weight"))
    params[key] = mx.nd.zeros((2 * EMB,) + params[key].shape[1:])
    mx.nd.save(str(tmp_path / "wide-0000.params"), params)
    with open(prefix + "-symbol.json") as src, open(str(tmp_path / "wide-symbol.json"), "w") as dst:
        dst.write(src.read())
    with pytest.raises(GluonFaceError, match=r"Shape inconsistent.*written together"):
        FaceEmbedder.from_path(str(tmp_path / "wide"))


def test_bad_run_dir_and_int8_without_calib(tmp_path):
    with pytest.raises(GluonFaceError, match="does not exist"):
        export_run(str(tmp_path / "missing"), str(tmp_path / "o"))
    os.makedirs(tmp_path / "notarun")
    with pytest.raises(GluonFaceError, match="config.yaml"):
        export_run(str(tmp_path / "notarun"), str(tmp_path / "o"))
    with pytest.raises(GluonFaceError, match="--calib"):
        export_run(str(tmp_path / "notarun"), str(tmp_path / "o"), int8=True)


def test_int8_falls_back_to_the_next_graph_and_keeps_nothing_below_the_bar(exported, tmp_path, monkeypatch):
    """Each INT8 candidate graph is checked against float32; a failing one is recorded and the next tried;
    when none passes, the export fails naming every attempt and leaves no INT8 file."""
    import gluonface.export.quantize as quantize
    root, run_dir, _, _ = exported
    real, fail = quantize.check_against_float32, {"left": 1}

    def flaky(int8_forward, fp32_forward, images, **kw):
        if fail["left"] > 0:
            fail["left"] -= 1
            return real(lambda x: -np.asarray(int8_forward(x)), fp32_forward, images, **kw)   # cosine -1
        return real(int8_forward, fp32_forward, images, **kw)

    monkeypatch.setattr(quantize, "check_against_float32", flaky)
    rec = str(root / "calib" / "train")
    meta = export_run(run_dir, str(tmp_path / "a" / "model"), int8=True, calib=rec)
    attempts = meta["checks"]["int8_graph"]["attempts"]
    assert [a["passed"] for a in attempts] == [False, True]
    assert "min cosine -0.99" in attempts[0]["error"]
    assert meta["checks"]["int8_graph"]["quantised"] == attempts[1]["graph"] != attempts[0]["graph"]
    fail["left"] = 10
    with pytest.raises(GluonFaceError, match="no INT8 form of this network passes.*folded, oneDNN form.*traced"):
        export_run(run_dir, str(tmp_path / "b" / "model"), int8=True, calib=rec)
    assert not [f for f in os.listdir(tmp_path / "b") if "int8" in f]


def _module_output(prefix, pixels):
    """Plain MXNet Module's output of the checkpoint ``prefix`` for uint8 ``pixels`` given as float32."""
    sym, arg, aux = mx.model.load_checkpoint(prefix, 0)
    mod = mx.mod.Module(sym, data_names=["data"], label_names=None, context=mx.cpu())
    mod.bind(data_shapes=[("data", pixels.shape)], for_training=False)
    mod.set_params(arg, aux)
    mod.forward(mx.io.DataBatch([mx.nd.array(pixels.astype(np.float32))]), is_train=False)
    want = mod.get_outputs()[0].asnumpy()
    return want


def test_int8_takes_uint8_pixels(exported):
    """An INT8 model on MXNet is fed uint8 images as they are (no float32 copy, no input quantisation
    operator) and gives, bit for bit, what plain MXNet's Module gives for the same pixels as float32."""
    from gluonface.export.quantize import uint8_input_form
    root, _, _, _ = exported
    prefix = str(root / "out" / "model-int8")
    q = FaceEmbedder.from_path(prefix, backend="mxnet")
    assert q.input_dtype == np.uint8
    sym, arg, aux = mx.model.load_checkpoint(prefix, 0)
    pixels = np.random.default_rng(5).integers(0, 256, (3, 3, 112, 112), dtype=np.uint8)
    want = _module_output(prefix, pixels)
    got = q(pixels)
    np.testing.assert_array_equal(got, want)
    q(pixels[::-1].copy())   # every call returns its own array: the next batch does not overwrite this one
    np.testing.assert_array_equal(got, want)
    # float pixels still run (through the graph's own input quantisation), embed() on NHWC uint8 too
    np.testing.assert_array_equal(q(pixels.astype(np.float32)), want)
    e = q.embed(pixels.transpose(0, 2, 3, 1), flip=False)
    np.testing.assert_allclose(e, want / np.linalg.norm(want, axis=1, keepdims=True), rtol=0, atol=1e-6)
    # the in-memory form: no input quantisation left, uint8 input; the files keep their float32 input
    form, params = uint8_input_form(sym, dict(arg, **aux))
    assert "_contrib_quantize_v2" not in form.tojson() and "_contrib_quantize_v2" in sym.tojson()
    assert form.infer_type(data="uint8")[0][form.list_arguments().index("data")] == np.uint8
    # a graph that does not start with the [0, 255] pixel quantisation is left alone
    fp32 = mx.sym.load(str(root / "out" / "model-symbol.json"))
    assert uint8_input_form(fp32, {}) is None
    head = json.loads(sym.tojson())
    for n in head["nodes"]:
        if n["op"] == "_contrib_quantize_v2":
            n["attrs"]["max_calib_range"] = "1.000000"
    assert uint8_input_form(mx.sym.load_json(json.dumps(head)), dict(arg, **aux)) is None


def test_int8_runs_on_the_native_runner(exported):
    """``auto`` keeps gluonface's INT8 runner beside MXNet's INT8 executor; the runner's embeddings are within
    the INT8 bar of plain MXNet Module's and of float32, float input still goes to MXNet, and export.json
    records the runner's own check against float32 on the calibration faces."""
    from gluonface.export.quantize import INT8_MIN_COSINE
    root, _, _, meta = exported
    prefix = str(root / "out" / "model-int8")
    check = meta["checks"]["int8_native_vs_fp32_on_calibration"]
    assert check["passed"] and check["min_cosine"] >= INT8_MIN_COSINE and check["images"] > 0
    assert meta["checks"]["speed_images_per_s"]["int8_native"] > 0
    native = FaceEmbedder.from_path(prefix, backend="native")
    assert native.backend == "native" and native.input_dtype == np.uint8
    pixels = np.random.default_rng(6).integers(0, 256, (5, 3, 112, 112), dtype=np.uint8)
    want = _module_output(prefix, pixels)
    fp32 = FaceEmbedder.from_path(str(root / "out" / "model"), backend="mxnet")(pixels.astype(np.float32))
    got = native(pixels)
    cos = lambda a, b: np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)  # noqa: E731
    assert cos(got, want).min() >= INT8_MIN_COSINE and cos(got, fp32).min() >= INT8_MIN_COSINE
    np.testing.assert_array_equal(native(pixels.astype(np.float32)), want)   # float pixels: MXNet's graph
    # embed() hands the runner the (N, H, W, 3) images as they are: the same numbers as via (N, 3, H, W)
    faces = np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))
    assert native.takes_nhwc
    two_way = got.astype(np.float64) + native(np.ascontiguousarray(pixels[..., ::-1]))
    np.testing.assert_allclose(native.embed(faces), two_way / np.linalg.norm(two_way, axis=1, keepdims=True),
                               rtol=0, atol=1e-6)
    np.testing.assert_array_equal(native.forward_nhwc(faces), got)
    auto = FaceEmbedder.from_path(prefix)
    assert auto.backend == "auto" and auto.backend_report()["candidates"] == ["mxnet", "native"]
    assert auto.takes_nhwc   # MXNet gets the batch moved to (N, 3, H, W), the runner as it is
    for _ in range(12):   # enough calls to time both candidates on the small batch class
        e = auto.embed(pixels[:2].transpose(0, 2, 3, 1), flip=False)
    assert auto.backend_report()["runs"]["1-8"] in ("mxnet", "native") and e.shape == (2, want.shape[1])
    with pytest.raises(GluonFaceError, match="runs INT8 symbols on the CPU.*fix:.*--int8"):
        FaceEmbedder.from_path(str(root / "out" / "model"), backend="native")
    with pytest.raises(GluonFaceError, match="INT8 symbols run on MXNet or gluonface's native runner"):
        FaceEmbedder.from_path(prefix, backend="onnxruntime")
