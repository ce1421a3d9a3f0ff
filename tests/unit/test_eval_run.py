"""`gluonface eval` plumbing: context parsing, option checks and the result summary."""
import mxnet as mx
import numpy as np
import pytest

from gluonface.errors import GluonFaceError
from gluonface.evaluate.run import _jsonable, evaluate, format_results, parse_ctx


def test_parse_ctx():
    assert parse_ctx("cpu") == [mx.cpu()]
    assert parse_ctx(None) == [mx.cpu()]
    with pytest.raises(GluonFaceError, match="GPU"):
        parse_ctx(f"gpu{mx.context.num_gpus()}")
    with pytest.raises(GluonFaceError, match="not cpu or gpuN"):
        parse_ctx("tpu0")


def test_option_errors(tmp_path):
    with pytest.raises(GluonFaceError, match="both"):
        evaluate("x", templates=str(tmp_path / "meta.txt"))
    with pytest.raises(GluonFaceError, match="nothing to evaluate"):
        evaluate("x")
    with pytest.raises(GluonFaceError, match="does not exist"):
        evaluate("x", bins=[str(tmp_path / "lfw.bin")])


def test_summary_and_json():
    res = {"model": {"source": "m", "kind": "onnx"},
           "verification": {"lfw": {"accuracy": 0.9912, "accuracy_std": 0.004, "threshold": 0.31, "auc": 0.998,
                                    "tar_at_far": {1e-3: 0.97, 1e-1: 0.999}, "num_pairs": 6000,
                                    "roc": {"fpr": np.zeros(3)}}},
           "identification": {"rank1": 0.5, "rank5": None, "num_probes": 4, "num_gallery_subjects": 3,
                              "num_unmated_probes": 1, "cmc": [0.5, 0.75, 1.0], "ranks": np.array([1, 2])}}
    text = format_results(res)
    assert "lfw: accuracy 99.12 ± 0.40 %" in text and "TAR@FAR=0.001: 0.9700" in text
    assert "rank-5 n/a" in text
    js = _jsonable(res)
    assert "roc" not in js["verification"]["lfw"] and "ranks" not in js["identification"]
    assert js["verification"]["lfw"]["tar_at_far"] == {"0.001": 0.97, "0.1": 0.999}
