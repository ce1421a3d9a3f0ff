"""FaceEmbedder on an exported symbol: layouts, flip TTA, compare, embed_photo and bad inputs."""
import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn

from gluonface.errors import GluonFaceError
from gluonface.export.embedder import FaceEmbedder
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
    emb = FaceEmbedder.from_path(str(tmp_path / "mfn"))
    for n in (2, 2, 2, 1, 1):
        x = np.random.default_rng(n).uniform(0, 255, (n, 3, 112, 112)).astype(np.float32)
        want = net(mx.nd.array(x)).asnumpy()
        np.testing.assert_allclose(emb(x), want, rtol=0, atol=1e-5 * np.abs(want).max())
