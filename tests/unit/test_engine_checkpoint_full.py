"""Checkpoints on a full disk: MXNet's silent short writes are caught, nothing half-written is published,
the previous checkpoint stays loadable, and the error names the path and the fix.

The disk is made "full" with RLIMIT_FSIZE (no root needed; Python ignores SIGXFSZ, so writes past the limit
fail with EFBIG exactly like writes to a full disk fail with ENOSPC, and MXNet's dmlc-core loses the last
buffered write the same way). tests/distributed/test_dist_faults.py does it with a real full tmpfs.
"""
import contextlib
import os
import resource

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon

from gluonface.parallel import DistContext
from gluonface.engine import checkpoint as ck
from gluonface.engine.params_file import check_complete, expected_size
from gluonface.errors import GluonFaceError

LOCAL = DistContext(engine="local", ctx=[mx.cpu()])


@contextlib.contextmanager
def file_size_limit(nbytes):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "uint8", "int32", "int8", "int64", "bool"])
def test_walk_matches_what_mxnet_writes(tmp_path, dtype):
    path = str(tmp_path / "x.params")
    arrays = {"a": mx.nd.ones((3, 5), dtype=dtype), "bb": mx.nd.zeros((1,), dtype=dtype),
              "c.weight": mx.nd.ones((2, 1, 3, 4), dtype=dtype)}
    mx.nd.save(path, arrays)
    assert expected_size(path) == os.path.getsize(path)
    mx.nd.save(path, list(arrays.values()))   # a list: no names
    assert expected_size(path) == os.path.getsize(path)


def test_every_cut_is_found(tmp_path):
    full = str(tmp_path / "full.params")
    mx.nd.save(full, {"w": mx.nd.ones((4, 3)), "b": mx.nd.ones((3,), dtype="int64"), "name_x": mx.nd.ones((2,))})
    data = open(full, "rb").read()
    assert check_complete(full) is None
    cut = str(tmp_path / "cut.params")
    for n in range(len(data)):
        with open(cut, "wb") as f:
            f.write(data[:n])
        assert "cut short" in check_complete(cut), n
    with open(cut, "wb") as f:
        f.write(data + b"\0")
    assert "after its end" in check_complete(cut)


def _net(units):
    mx.random.seed(0)
    net = gluon.nn.Dense(units, in_units=100)
    net.initialize(mx.init.Xavier())
    return net


def _save(run_dir, step, net, cls, trainers):
    return ck.save_checkpoint(run_dir, step, backbone=net, classifier=cls, trainers=trainers,
                              state={"epoch": 0, "config_hash": "abc"}, rng={"seed": step}, dist_ctx=LOCAL)


@pytest.mark.parametrize("short_by", [8, 20000], ids=["last-buffered-write-lost", "write-fails"])
def test_full_disk_publishes_nothing_and_keeps_the_previous(tmp_path, short_by):
    """``short_by`` 8: only MXNet's final flush fails (no error from MXNet at all: the short file must be
    found); 20000: an fwrite fails (MXNetError from dmlc-core)."""
    net, cls = _net(200), _net(10)
    trainers = {"backbone": gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1}),
                "classifier": gluon.Trainer(cls.collect_params(), "sgd", {"learning_rate": 0.1})}
    run_dir = str(tmp_path / "run")
    _save(run_dir, 1, net, cls, trainers)
    size = os.path.getsize(os.path.join(run_dir, "checkpoints", "step-00000001", "backbone.params"))
    before = net.weight.data().asnumpy().copy()
    net.weight.set_data(net.weight.data() + 1)
    with file_size_limit(size - short_by):
        with pytest.raises(GluonFaceError) as err:
            _save(run_dir, 2, net, cls, trainers)
    message = str(err.value)
    assert "step-00000002" in message and "--resume auto" in message and "ulimit -f" in message
    assert "step-00000001 is intact" in message
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoints"))) == ["latest", "step-00000001"]
    assert ck.read_latest_name(run_dir) == "step-00000001"
    restored = _net(200)
    restored.load_parameters(os.path.join(ck.latest_checkpoint(run_dir), "backbone.params"))
    np.testing.assert_array_equal(restored.weight.data().asnumpy(), before)


def test_python_writes_on_a_full_disk_name_the_file(tmp_path):
    net, cls = _net(4), _net(3)
    trainers = {"backbone": gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1}),
                "classifier": gluon.Trainer(cls.collect_params(), "sgd", {"learning_rate": 0.1})}
    run_dir = str(tmp_path / "run")
    with file_size_limit(64):   # every file but the tiniest fails, the first (classifier.params) included
        with pytest.raises(GluonFaceError) as err:
            _save(run_dir, 1, net, cls, trainers)
    assert "no earlier checkpoint exists" in str(err.value)
    assert ck.latest_checkpoint(run_dir) is None
    assert not [d for d in os.listdir(os.path.join(run_dir, "checkpoints")) if d.endswith(".partial")]
