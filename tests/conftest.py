"""Shared fixtures. Tests use tiny synthetic data, real MXNet and real files under pytest's tmp_path."""
import os

import pytest

# Keep MXNet's thread pools small: CI has 2 cores and tests sometimes run worker processes side by side.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MXNET_ENGINE_TYPE", "ThreadedEnginePerDevice")


def pytest_collection_modifyitems(config, items):
    try:
        import mxnet as mx
        have_gpu = mx.context.num_gpus() > 0
    except Exception:  # pragma: no cover - mxnet import problems surface in the tests themselves
        have_gpu = False
    if not have_gpu:
        skip = pytest.mark.skip(reason="no GPU visible (mx.context.num_gpus() == 0)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
