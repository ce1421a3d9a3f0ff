"""The native library loads next to the other native code a training process holds (Horovod's MXNet plugin,
which puts libmxnet's own copy of the extension API in the global symbol scope) and computes right there."""
import os
import subprocess
import sys
import textwrap

import pytest

from gluonface.ops.library import library_path


@pytest.mark.skipif(not os.path.exists(library_path()), reason="native library not built (make install)")
@pytest.mark.parametrize("first", ["horovod.mxnet", "gluoncv", "mxnet"])
def test_library_loads_after_other_native_modules(first):
    code = textwrap.dedent(f"""
        import importlib
        importlib.import_module({first!r})
        import mxnet as mx, numpy as np
        from gluonface.models.layers import ChannelPReLU
        from gluonface.ops.library import status
        act = ChannelPReLU(4); act.initialize(); act.hybridize()
        act.alpha.set_data(mx.nd.full((4, 1, 1, 1), 0.3))
        x = np.random.default_rng(0).normal(size=(2, 4, 3, 5)).astype('float32')
        got = act(mx.nd.array(x)).asnumpy()
        assert status()['backend'] == 'native', status()
        assert np.abs(got - (np.maximum(x, 0) + 0.3 * np.minimum(x, 0))).max() < 1e-6
        print('ok')
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, GLUONFACE_NATIVE="1"))
    assert proc.returncode == 0 and "ok" in proc.stdout, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
