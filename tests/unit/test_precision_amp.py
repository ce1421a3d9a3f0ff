"""Mixed precision: the hardware probe, AMP init, float32 losses under bf16 AMP, and bf16 vs fp32 nets.

``amp.init`` patches MXNet for the whole process, so everything that initialises AMP runs in a child process.
"""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from gluonface.errors import GluonFaceError
from gluonface.precision import canonical_dtype, lowp_supported


def _child(code):
    """Run ``code`` in a fresh interpreter; returns (returncode, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    return proc.returncode, proc.stdout, proc.stderr


def test_canonical_dtype():
    assert canonical_dtype("bf16") == canonical_dtype("bfloat16") == "bfloat16"
    assert canonical_dtype("fp16") == "float16"
    with pytest.raises(GluonFaceError, match="fix"):
        canonical_dtype("int8")


def test_probe_agrees_with_a_real_bf16_amp_network():
    # Independent of the probe: a hybridized conv+dense under amp.init('bfloat16') either runs or fails.
    rc, out, err = _child("""
        import mxnet as mx
        from mxnet.contrib import amp
        amp.init('bfloat16')
        net = mx.gluon.nn.HybridSequential()
        net.add(mx.gluon.nn.Conv2D(8, 3, padding=1), mx.gluon.nn.Dense(4))
        net.initialize(); net.hybridize()
        print(float(net(mx.nd.ones((2, 3, 16, 16))).astype('float32').sum().asscalar()))
    """)
    assert lowp_supported("bf16") == (rc == 0), err[-500:]


def test_init_amp_refuses_unsupported_hardware_or_initialises():
    rc, out, err = _child("""
        from gluonface.errors import GluonFaceError
        from gluonface.precision import init_amp, lowp_supported
        try:
            print('init', init_amp('bf16'))
        except GluonFaceError as exc:
            print('refused', exc)
        print('supported', lowp_supported('bf16'))
    """)
    assert rc == 0, err
    if "supported True" in out:
        assert "init bfloat16" in out
    else:
        assert "refused" in out and "fix:" in out and "float32" in out


def test_margin_loss_stays_float32_under_bf16_amp():
    # The loss has no convolution, so this runs on any CPU: bf16 embeddings in, float32 loss and grads out,
    # equal to the float32 loss of the same (bf16-rounded) embeddings.
    rc, out, err = _child("""
        import mxnet as mx, numpy as np
        from mxnet.contrib import amp
        amp.init('bfloat16')
        from mxnet.contrib.amp.amp import bfloat16
        from gluonface.losses import get_loss
        x = mx.nd.array(np.random.default_rng(0).normal(size=(6, 8)))
        y = mx.nd.array([0, 1, 2, 0, 1, 3])
        x.attach_grad()
        for name in ['arcface', 'cosface', 'subcenter_arcface', 'triplet', 'softmax']:
            loss = get_loss(name, 4, 8); loss.initialize(); loss.hybridize()
            with mx.autograd.record():
                # stands in for a backbone whose last op ran in bf16 (backward into a bf16 *leaf* trips an
                # MXNet 1.9.1 AMP shape-inference bug, so the leaf stays float32 as parameters do)
                xb = mx.nd.amp_cast(x, dtype=bfloat16)
                low = loss(xb, y)
            low.backward()
            ref = loss(mx.nd.amp_cast(xb, dtype='float32'), y)
            assert xb.dtype != np.float32 and low.dtype == np.float32, (name, low.dtype)
            for p in loss.collect_params().values():
                assert p.grad().dtype == np.float32
            np.testing.assert_allclose(low.asnumpy(), ref.asnumpy(), rtol=1e-6)
            assert np.isfinite(x.grad.asnumpy()).all() and np.abs(x.grad.asnumpy()).sum() > 0
            print('ok', name)
    """)
    assert rc == 0, err[-2000:]
    assert out.count("ok ") == 5


@pytest.mark.skipif(not lowp_supported("bf16"),
                    reason="this CPU's oneDNN has no bfloat16 convolution (needs AVX-512)")
def test_iresnet18_bf16_forward_backward_close_to_float32():
    rc, out, err = _child("""
        import mxnet as mx, numpy as np
        from gluonface.models import get_model
        x = mx.nd.array(np.random.default_rng(0).uniform(0, 255, size=(2, 3, 112, 112)))
        def run(amp_on):
            if amp_on:
                from gluonface.precision import init_amp
                init_amp('bf16')
            mx.random.seed(0)
            net = get_model('iresnet18'); net.initialize(mx.init.Xavier(magnitude=2)); net.hybridize()
            with mx.autograd.record():
                e = net(x)
                l = (e.astype('float32') ** 2).mean()
            l.backward()
            g = net.features[0][0].weight.grad().astype('float32').asnumpy()
            return e.astype('float32').asnumpy(), g
        import sys
        e32, g32 = run(False); elo, glo = run(True)
        cos = (e32 * elo).sum(1) / np.linalg.norm(e32, axis=1) / np.linalg.norm(elo, axis=1)
        gcos = (g32 * glo).sum() / np.linalg.norm(g32) / np.linalg.norm(glo)
        print(cos.min(), gcos)
        assert cos.min() > 0.99 and gcos > 0.95
    """)
    assert rc == 0, err[-2000:]
