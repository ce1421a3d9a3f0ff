"""The three MTCNN networks (P-Net, R-Net, O-Net) as Gluon HybridBlocks, and their weights.

The weights are the original MTCNN ones (Zhang et al., MIT) as shipped inside the PyPI wheel
``mtcnn==1.0.0`` under ``mtcnn/assets/weights/{pnet,rnet,onet}.lz4``: joblib + lz4 lists of NumPy arrays in
Keras layout (conv kernels ``(kh, kw, in, out)``, PReLU ``(1, 1, C)`` or ``(C,)``, dense ``(in, out)``).
The files are located with ``importlib.util.find_spec`` and read directly: importing the ``mtcnn`` package
would import TensorFlow. Nothing is downloaded.

All networks take NCHW float32 images normalised as ``(rgb - 127.5) / 128`` (no transpose; the wheel's
weights were converted for row-major images).
"""
import importlib.util
import os

import numpy as np
from mxnet.gluon import nn

from gluonface.errors import GluonFaceError

_FIX = "fix: pip install --no-deps mtcnn==1.0.0 joblib lz4 (only its weight files are read)"


def mtcnn_weights_dir():
    """Directory holding ``pnet.lz4``, ``rnet.lz4``, ``onet.lz4`` inside the installed ``mtcnn`` wheel."""
    spec = importlib.util.find_spec("mtcnn")
    if spec is None or not spec.origin:
        raise GluonFaceError(f"the MTCNN weights come from the 'mtcnn' wheel, which is not installed; {_FIX}")
    path = os.path.join(os.path.dirname(spec.origin), "assets", "weights")
    if not os.path.isdir(path):
        raise GluonFaceError(f"no weights directory in the installed mtcnn package ({path}); "
                             f"{_FIX} (version 1.0.0 ships them)")
    return path


def load_keras_arrays(name, weights_dir=None):
    """Load one network's weight list (``name`` in pnet, rnet, onet) as a list of float32 arrays."""
    try:
        import joblib
    except ImportError as exc:  # lz4 is needed by joblib for .lz4 files; both come with the align extra
        raise GluonFaceError(f"reading the MTCNN weights needs joblib and lz4 ({exc}); {_FIX}") from None
    path = os.path.join(weights_dir or mtcnn_weights_dir(), f"{name}.lz4")
    if not os.path.isfile(path):
        raise GluonFaceError(f"MTCNN weight file {path} is missing; {_FIX}")
    return [np.asarray(a, dtype=np.float32) for a in joblib.load(path)]


def _max_pool(F, x, kernel, stride, full):
    """Max-pooling on NCHW as strided slices + elementwise maxima.

    ``full`` rounds the output size up (Caffe/MXNet 'full', equal to Keras 'same' for these nets): one
    edge-replicated row/column at the end gives exactly the clipped last window. Same numbers as
    ``F.Pooling``, but 3-4x less CPU here: MXNet 1.9's oneDNN pooling is slow on these small maps.
    """
    if full:
        x = F.pad(x, mode="edge", pad_width=(0, 0, 0, 0, 0, 1, 0, 1))
    for axis in (2, 3):
        out = None
        for offset in range(kernel):
            begin, end, step = [None] * 4, [None] * 4, [None] * 4
            # The window starting at `offset` runs to `-(kernel-1-offset)`: every slice then has the
            # same length, the number of valid windows.
            begin[axis], step[axis] = offset, stride
            end[axis] = offset - kernel + 1 if offset < kernel - 1 else None
            part = F.slice(x, begin=tuple(begin), end=tuple(end), step=tuple(step))
            out = part if out is None else F.maximum(out, part)
        x = out
    return x


def _conv(channels, kernel):
    return nn.Conv2D(channels, kernel, in_channels=0)


def _prelu(channels):
    return nn.PReLU(in_channels=channels)


class _MTCNNNet(nn.HybridBlock):
    """Shared weight loading: Keras arrays are assigned to the layers in construction order."""

    def _layers(self):
        raise NotImplementedError

    def load_keras(self, arrays, ctx):
        """Assign the Keras weight list (as read by :func:`load_keras_arrays`) to this network's layers."""
        arrays = list(arrays)
        for layer in self._layers():
            if isinstance(layer, nn.Conv2D):
                kernel, bias = arrays.pop(0), arrays.pop(0)
                self._set(layer.weight, kernel.transpose(3, 2, 0, 1), ctx)  # (kh,kw,in,out) -> (out,in,kh,kw)
                self._set(layer.bias, bias, ctx)
            elif isinstance(layer, nn.Dense):
                kernel, bias = arrays.pop(0), arrays.pop(0)
                self._set(layer.weight, kernel.T, ctx)  # (in,out) -> (out,in)
                self._set(layer.bias, bias, ctx)
            else:
                self._set(layer.alpha, arrays.pop(0).reshape(-1), ctx)
        if arrays:
            raise GluonFaceError(f"{type(self).__name__}: {len(arrays)} unexpected extra weight arrays; "
                                 f"{_FIX}")

    @staticmethod
    def _set(param, value, ctx):
        param.shape = value.shape  # resolves deferred input-channel shapes before initialisation
        param.initialize(ctx=ctx, force_reinit=True)
        param.set_data(value)


class PNet(_MTCNNNet):
    """Proposal net, fully convolutional.

    Input ``(N, 3, H, W)`` float32 (H, W >= 12). Output ``(reg (N, 4, H', W'), prob (N, 2, H', W'))`` with
    ``H' = ceil((H - 2) / 2) - 4``: per 12x12 window at stride 2, box offsets and softmax (non-face, face).
    """

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = _conv(10, 3), _prelu(10)
        self.conv2, self.prelu2 = _conv(16, 3), _prelu(16)
        self.conv3, self.prelu3 = _conv(32, 3), _prelu(32)
        self.conv4_1, self.conv4_2 = _conv(4, 1), _conv(2, 1)

    def _layers(self):
        return [self.conv1, self.prelu1, self.conv2, self.prelu2, self.conv3, self.prelu3,
                self.conv4_1, self.conv4_2]

    def hybrid_forward(self, F, x):
        x = self.prelu1(self.conv1(x))
        x = _max_pool(F, x, 2, 2, full=True)  # Keras 'same' 2x2/2 pads at the end only: 'full'.
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_1(x), F.softmax(self.conv4_2(x), axis=1)


def _keras_flatten(F, x):
    # Keras permuted (N, H, W, C) to (N, W, H, C) before flattening; from NCHW that is axes (0, 3, 2, 1).
    return F.flatten(F.transpose(x, axes=(0, 3, 2, 1)))


class RNet(_MTCNNNet):
    """Refinement net. Input ``(N, 3, 24, 24)`` float32; output ``(reg (N, 4), prob (N, 2))``."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = _conv(28, 3), _prelu(28)
        self.conv2, self.prelu2 = _conv(48, 3), _prelu(48)
        self.conv3, self.prelu3 = _conv(64, 2), _prelu(64)
        self.fc4, self.prelu4 = nn.Dense(128, in_units=576), _prelu(128)
        self.fc5_1, self.fc5_2 = nn.Dense(4, in_units=128), nn.Dense(2, in_units=128)

    def _layers(self):
        return [self.conv1, self.prelu1, self.conv2, self.prelu2, self.conv3, self.prelu3,
                self.fc4, self.prelu4, self.fc5_1, self.fc5_2]

    def hybrid_forward(self, F, x):
        # Keras 'same' on the even 22x22 map pads at the end only, i.e. 'full'.
        x = _max_pool(F, self.prelu1(self.conv1(x)), 3, 2, full=True)  # 22 -> 11
        x = _max_pool(F, self.prelu2(self.conv2(x)), 3, 2, full=False)  # 9 -> 4
        x = self.prelu4(self.fc4(_keras_flatten(F, self.prelu3(self.conv3(x)))))
        return self.fc5_1(x), F.softmax(self.fc5_2(x), axis=1)


class ONet(_MTCNNNet):
    """Output net. Input ``(N, 3, 48, 48)`` float32.

    Output ``(reg (N, 4), landmarks (N, 10), prob (N, 2))``; landmarks are ``x1..x5, y1..y5`` as fractions
    of the input box.
    """

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = _conv(32, 3), _prelu(32)
        self.conv2, self.prelu2 = _conv(64, 3), _prelu(64)
        self.conv3, self.prelu3 = _conv(64, 3), _prelu(64)
        self.conv4, self.prelu4 = _conv(128, 2), _prelu(128)
        self.fc5, self.prelu5 = nn.Dense(256, in_units=1152), _prelu(256)
        self.fc6_1 = nn.Dense(4, in_units=256)
        self.fc6_2 = nn.Dense(10, in_units=256)
        self.fc6_3 = nn.Dense(2, in_units=256)

    def _layers(self):
        return [self.conv1, self.prelu1, self.conv2, self.prelu2, self.conv3, self.prelu3,
                self.conv4, self.prelu4, self.fc5, self.prelu5, self.fc6_1, self.fc6_2, self.fc6_3]

    def hybrid_forward(self, F, x):
        x = _max_pool(F, self.prelu1(self.conv1(x)), 3, 2, full=True)  # 46 -> 23
        x = _max_pool(F, self.prelu2(self.conv2(x)), 3, 2, full=False)  # 21 -> 10
        x = _max_pool(F, self.prelu3(self.conv3(x)), 2, 2, full=True)  # 8 -> 4
        x = self.prelu5(self.fc5(_keras_flatten(F, self.prelu4(self.conv4(x)))))
        return self.fc6_1(x), self.fc6_2(x), F.softmax(self.fc6_3(x), axis=1)


def load_mtcnn_nets(ctx, weights_dir=None, hybridize=True):
    """Build P/R/O-Net on ``ctx`` with the wheel's weights; returns ``(pnet, rnet, onet)``, hybridized."""
    nets = []
    for name, cls in (("pnet", PNet), ("rnet", RNet), ("onet", ONet)):
        net = cls()
        net.load_keras(load_keras_arrays(name, weights_dir), ctx)
        if hybridize:
            # static_alloc is off on purpose: P-Net sees a new input shape per pyramid level.
            net.hybridize()
        nets.append(net)
    return tuple(nets)
