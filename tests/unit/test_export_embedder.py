"""FaceEmbedder on an exported symbol: layouts, flip TTA, compare, embed_photo and bad inputs."""
import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn

from gluonface.errors import GluonFaceError
from gluonface.export.embedder import AutoForward, FaceEmbedder
from gluonface.export.symbol import export_symbol
from tolerance import assert_close_scaled, assert_same_direction

pytestmark = pytest.mark.cpu_paths   # run again on the AVX2 code path (pytest.ini)


class _Tiny(nn.HybridBlock):
    def __init__(self):
        super().__init__(prefix="tiny_")
        with self.name_scope():
            self.conv = nn.Conv2D(4, 5, strides=4)
            self.fc = nn.Dense(8)

    def hybrid_forward(self, F, x):
        return self.fc(F.relu(self.conv((x - 127.5) * 0.0078125)))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    net = _Tiny()
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 112, 112)))
    prefix = str(tmp_path_factory.mktemp("emb") / "tiny")
    export_symbol(net, prefix)
    return net, prefix


def _faces(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)


def test_layouts_and_flip(model):
    net, prefix = model
    emb = FaceEmbedder.from_path(prefix)
    assert emb.kind == "symbol" and emb.input_size == (112, 112)
    faces = _faces(3)
    e = emb.embed(faces)
    x = faces.astype(np.float32).transpose(0, 3, 1, 2)
    ref = net(mx.nd.array(x)).asnumpy().astype(np.float64) + net(mx.nd.array(x[..., ::-1].copy())).asnumpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert_same_direction(e, ref)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-6)
    # Another layout or batch size may run other oneDNN kernels: the same directions, not the same bits.
    assert_same_direction(emb.embed(faces.transpose(0, 3, 1, 2)), e)     # NCHW batch
    assert_same_direction(emb.embed(faces[1]), e[1])                      # one HWC image
    assert_same_direction(emb.embed(faces[1].transpose(2, 0, 1)), e[1])   # one CHW image
    plain = net(mx.nd.array(x)).asnumpy()
    plain /= np.linalg.norm(plain, axis=1, keepdims=True)
    assert_same_direction(emb.embed(faces, flip=False), plain)


def test_compare(model):
    _, prefix = model
    emb = FaceEmbedder.from_path(prefix + "-symbol.json")
    faces = _faces(4, seed=1)
    e = emb.embed(faces)
    assert emb.compare(e[0], e[1]) == pytest.approx(float(e[0] @ e[1]), abs=1e-6)
    assert emb.compare(faces[0], faces[0]) == pytest.approx(1.0, abs=1e-6)
    rows = emb.compare(e[:2], e[2:])
    np.testing.assert_allclose(rows, np.sum(e[:2] * e[2:], axis=1), atol=1e-6)
    with pytest.raises(GluonFaceError, match="width"):
        emb.compare(e[0], e[0][:4])


@pytest.mark.parametrize("bad, words", [
    (np.zeros((2, 96, 96, 3), np.uint8), "expects aligned 112x112"),
    (np.zeros((2, 112, 112, 4), np.uint8), "RGB"),
    (np.zeros((112, 112), np.uint8), "expected one image"),
    (np.zeros((1, 112, 112, 3), np.float32), "uint8"),
])
def test_bad_images(model, bad, words):
    emb = FaceEmbedder.from_path(model[1])
    with pytest.raises(GluonFaceError, match=words):
        emb.embed(bad)


def test_raw_call_checks_shape(model):
    emb = FaceEmbedder.from_path(model[1])
    with pytest.raises(GluonFaceError, match=r"\(N, 3, 112, 112\)"):
        emb(np.zeros((1, 112, 112, 3), np.float32))


def test_embed_photo_with_landmarks_and_without_face(model):
    from gluonface.align import align_face
    emb = FaceEmbedder.from_path(model[1])
    rng = np.random.default_rng(2)
    photo = rng.integers(0, 256, (240, 200, 3), dtype=np.uint8)
    points = np.array([[80, 100], [120, 100], [100, 122], [84, 142], [116, 142]], np.float64)
    e, result = emb.embed_photo(photo, points=points)
    crop, _ = align_face(photo, points, 112)
    assert_same_direction(e, emb.embed(crop))
    assert result.aligned and e.shape == (8,)
    with pytest.raises(GluonFaceError, match="no usable face"):
        emb.embed_photo(np.full((160, 160, 3), 128, np.uint8))


def test_from_net_and_changing_batch_sizes(model):
    """The in-memory Gluon embedder gives the network's outputs; more batch shapes than executors kept."""
    net, prefix = model
    for emb in (FaceEmbedder.from_net(net), FaceEmbedder.from_path(prefix)):
        for n in (1, 2, 3, 4, 5, 6, 1):
            x = np.random.default_rng(n).uniform(0, 255, (n, 3, 112, 112)).astype(np.float32)
            assert_close_scaled(emb(x), net(mx.nd.array(x)).asnumpy(), err_msg=f"batch {n}")
    assert FaceEmbedder.from_net(net).kind == "gluon"


def test_repeated_calls_on_mobilefacenet(tmp_path):
    """The same batch shape again and again through one bound executor. On AVX-512 CPUs MXNet 1.9.1's dense
    layer failed from the second call on when it read MobileFaceNet's (N, 512, 1, 1) output in oneDNN's
    blocked layout; the oneDNN form reads it through a Flatten (``fold._lower_dense_input``)."""
    from gluonface.models import get_model
    net = get_model("mobilefacenet", embedding_size=16)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 112, 112)))
    export_symbol(net, str(tmp_path / "mfn"))
    emb = FaceEmbedder.from_path(str(tmp_path / "mfn"), backend="mxnet")
    for n in (2, 2, 2, 1, 1):
        x = np.random.default_rng(n).uniform(0, 255, (n, 3, 112, 112)).astype(np.float32)
        want = net(mx.nd.array(x)).asnumpy()
        np.testing.assert_allclose(emb(x), want, rtol=0, atol=1e-5 * np.abs(want).max())


class _Clock:
    """A fake clock each candidate advances by its own cost per image: timing without timing."""
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_auto_runs_each_batch_class_on_the_faster_candidate():
    clock = _Clock()
    calls = []

    def candidate(name, ms_small, ms_large, warmup_ms=50.0):
        seen = set()

        def f(x):
            n = len(x)
            cls = n <= 8
            clock.now += (warmup_ms if cls not in seen else (ms_small if cls else ms_large)) * n / 1e3
            seen.add(cls)
            calls.append((name, n))
            return x[:, :2].sum(axis=(2, 3)) + 1.0   # both give the same result
        return f

    # "a" is faster on small batches, "b" on large ones; each one's first call is a slow warm-up
    auto = AutoForward({"a": candidate("a", 1.0, 5.0), "b": candidate("b", 3.0, 2.0)}, trials=3, warmup=2,
                       clock=clock)
    x1, x32 = np.ones((1, 3, 4, 4), np.float32), np.ones((32, 3, 4, 4), np.float32)
    for _ in range(10):
        out = auto(x1)
        assert out.shape == (1, 2) and np.all(out == 17.0)    # every call is a real result
    assert auto.choice == {"1-8": "a"}
    assert auto.measured["1-8"] == pytest.approx({"a": 1.0, "b": 3.0})   # warm-ups left out of the medians
    assert [n for n, _ in calls] == ["a"] * 5 + ["b"] * 5    # one block per candidate, warm-ups first
    for _ in range(10):
        auto(x32)
    assert auto.choice == {"1-8": "a", ">8": "b"}
    calls.clear()
    auto(x1), auto(x32), auto(np.ones((3, 3, 4, 4), np.float32))
    assert calls == [("a", 1), ("b", 32), ("a", 3)]


def test_backends_agree_and_report_what_ran(model):
    """mxnet, onnxruntime (the symbol converted in memory) and auto give the same embeddings; auto reports the
    backend of each batch class once it has measured it."""
    net, prefix = model
    faces = _faces(12, seed=5)
    x = faces.astype(np.float32).transpose(0, 3, 1, 2)
    want = net(mx.nd.array(x)).asnumpy()
    embs = {b: FaceEmbedder.from_path(prefix, backend=b) for b in ("mxnet", "onnxruntime", "auto")}
    assert embs["mxnet"].backend_report()["runs"] == {"all": "mxnet"}
    assert embs["mxnet"].backend_report()["mxnet_engine"] in ("ThreadedEnginePerDevice", "NaiveEngine")
    assert embs["onnxruntime"].backend_report()["runs"] == {"all": "onnxruntime"}
    for name, emb in embs.items():
        for n in (1, 12):
            assert_close_scaled(emb(x[:n]), want[:n], err_msg=f"{name} batch {n}")
    auto = embs["auto"]
    assert auto.backend_report()["candidates"] == ["mxnet", "onnxruntime"]
    for _ in range(10):
        assert_close_scaled(auto(x[:2]), want[:2])
        assert_close_scaled(auto(x), want)
    report = auto.backend_report()
    assert set(report["runs"]) == {"1-8", ">8"} and set(report["runs"].values()) <= {"mxnet", "onnxruntime"}
    for cls, ms in report["ms_per_image"].items():
        assert set(ms) == {"mxnet", "onnxruntime"} and all(v > 0 for v in ms.values())
        assert report["runs"][cls] == min(ms, key=ms.get)
    assert "batch 1-8: " in auto.describe_backend() and "ms/image" in auto.describe_backend()


def test_auto_uses_the_onnx_beside_the_symbol_only_when_it_agrees(model, tmp_path):
    from gluonface.export.convention import metadata_props
    from gluonface.export.onnx import export_onnx
    from gluonface.export.symbol import embedding_symbol, save_symbol
    net, _ = model
    prefix = str(tmp_path / "m")
    sym, arg, aux = embedding_symbol(net)
    save_symbol(sym, arg, aux, prefix)
    raw = metadata_props("raw", (112, 112), 8)   # what `gluonface export --onnx` writes
    export_onnx(sym, arg, aux, prefix + ".onnx", metadata=raw)
    emb = FaceEmbedder.from_path(prefix, backend="onnxruntime")
    assert emb.backend == "onnxruntime" and emb.backend_note is None
    # another network's ONNX under the same name: not used, said so, and the symbol converted instead
    other = _Tiny()
    other.initialize(mx.init.Xavier(rnd_type="gaussian"))
    other(mx.nd.zeros((1, 3, 112, 112)))
    export_onnx(*embedding_symbol(other), prefix + ".onnx", metadata=raw)
    emb = FaceEmbedder.from_path(prefix, backend="auto")
    assert "disagrees with the symbol" in emb.backend_note and "m.onnx" in emb.backend_note
    x = np.random.default_rng(3).uniform(0, 255, (16, 3, 112, 112)).astype(np.float32)
    for _ in range(10):
        assert_close_scaled(emb(x), net(mx.nd.array(x)).asnumpy())


def test_backend_choices_that_cannot_run_are_refused(model, tmp_path):
    from gluonface.export.onnx import export_onnx
    from gluonface.export.symbol import embedding_symbol
    net, prefix = model
    with pytest.raises(GluonFaceError, match="not one of auto, mxnet, onnxruntime"):
        FaceEmbedder.from_path(prefix, backend="tensorrt")
    onnx_path = export_onnx(*embedding_symbol(net), str(tmp_path / "m.onnx"))
    with pytest.raises(GluonFaceError, match="runs on onnxruntime; fix"):
        FaceEmbedder.from_path(onnx_path, backend="mxnet")
    assert FaceEmbedder.from_path(onnx_path, backend="auto").backend == "onnxruntime"
