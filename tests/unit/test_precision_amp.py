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

pytestmark = pytest.mark.cpu_paths   # run again on the AVX2 code path (pytest.ini)


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
    # Independent of the probe: a hybridized conv+dense under amp.init('bfloat16') either fails to run, or runs
    # and then must match float32; the probe must say "supported" exactly when both hold.
    rc, out, err = _child("""
        import mxnet as mx, numpy as np
        from mxnet.contrib import amp
        def build():
            mx.random.seed(0)
            net = mx.gluon.nn.HybridSequential()
            net.add(mx.gluon.nn.Conv2D(8, 3, padding=1), mx.gluon.nn.Dense(4))
            net.initialize(mx.init.Xavier()); net.hybridize()
            return net
        x = mx.nd.array(np.random.default_rng(0).normal(size=(2, 3, 16, 16)))
        ref = build()(x).asnumpy()
        amp.init('bfloat16')
        got = build()(x).astype('float32').asnumpy()
        print('cosine', float((ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got)))
    """)
    runs_right = rc == 0 and float(out.split()[-1]) >= 0.999
    assert lowp_supported("bf16") == runs_right, (out, err[-500:])


def test_kernel_check_compares_numbers_and_names_the_error():
    from gluonface.precision import kernel_check
    ok, detail = kernel_check("bf16")
    assert ("cosine" in detail) if ok else ("do not run" in detail or "cosine" in detail)
    ok, detail = kernel_check("fp16")      # no CPU float16 GEMM in MXNet 1.9.1
    assert not ok and "FP16 gemm on cpu" in detail and "Traceback" not in detail


def test_bf16_training_is_refused_with_the_reason_and_auto_trains_float32():
    import mxnet as mx
    from gluonface.engine.precision import AmpPolicy
    with pytest.raises(GluonFaceError, match=r"bfloat16 training is refused.*cosine 0\.98.*fix:"):
        AmpPolicy.create("bf16", [mx.cpu()])
    with pytest.raises(GluonFaceError, match="needs a GPU"):
        AmpPolicy.create("fp16", [mx.cpu()])
    notes = []
    assert AmpPolicy.create("auto", [mx.cpu()], say=notes.append) is None
    assert "training in float32" in notes[0]
    assert AmpPolicy.create("off", [mx.cpu()]) is None


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


@pytest.mark.slow
@pytest.mark.skipif(not lowp_supported("bf16"), reason="this CPU's oneDNN has no right bfloat16 kernels "
                    "(gluonface.precision.kernel_check: they need AVX-512)")
@pytest.mark.parametrize("name", ["iresnet18", "mobilefacenet"])
def test_bf16_inference_block_matches_float32_on_faces(name):
    # bf16 inference stays: checked against float32 when it is built, on aligned-face-like images
    # (synthetic identities rendered and aligned as the demo does), and refused below the bar.
    rc, out, err = _child(f"""
        import mxnet as mx, numpy as np
        from gluonface.data.synthetic import SynthSpec, render_image
        from gluonface.errors import GluonFaceError
        from gluonface.models import get_model
        from gluonface.precision import BF16_INFER_MIN_COSINE, convert_block
        bgr = [render_image(SynthSpec(identities=2, images_per_id=2), i // 2, i % 2)[0] for i in range(4)]
        faces = np.stack(bgr)[..., ::-1].transpose(0, 3, 1, 2).astype('float32')
        net = get_model('{name}'); net.initialize(mx.init.Xavier(magnitude=2))
        block, report = convert_block(net, 'bf16', faces)
        assert report['images'] == 4 and report['min_cosine'] >= BF16_INFER_MIN_COSINE, report
        print('ok', report)
        try:
            convert_block(net, 'bf16', faces, min_cosine=1.0 + 1e-9)
        except GluonFaceError as exc:
            assert 'min cosine' in str(exc) and 'fix:' in str(exc)
            print('refused')
    """)
    assert rc == 0 and "ok" in out and "refused" in out, err[-2000:]
