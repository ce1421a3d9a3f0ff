"""Pieces of the run wiring: optimizer parameters, weight-decay exemptions, bin lookup, run directory."""
import mxnet as mx
import pytest

from gluonface.config import Config, EvalConfig, ModelConfig, OptimConfig, TrainConfig
from gluonface.engine.build import build_backbone, exempt_from_weight_decay, make_optimizer
from gluonface.engine.schedule import resolve_schedule
from gluonface.engine.train import resolve_bins, resolve_run_dir
from gluonface.errors import GluonFaceError


def test_optimizer_params():
    s = resolve_schedule(OptimConfig(lr=0.2, base_batch=32), TrainConfig(epochs=1), 8, 64)
    name, p = make_optimizer(OptimConfig(lr=0.2, base_batch=32, clip_gradient=5.0, wd=1e-4), s)
    assert name == "sgd" and p["learning_rate"] == pytest.approx(0.05) and p["momentum"] == 0.9
    assert p["clip_gradient"] == 5.0 and p["wd"] == 1e-4 and p["lr_scheduler"](1) == pytest.approx(0.05)
    name, p = make_optimizer(OptimConfig(name="adamw", lr=1e-3, beta2=0.98, schedule="cosine"), s)
    assert name == "adamw" and p["beta2"] == 0.98 and "momentum" not in p and "clip_gradient" not in p
    assert isinstance(mx.optimizer.create(name, **p), mx.optimizer.Optimizer)


def test_no_weight_decay_on_bn_and_bias():
    net = build_backbone(ModelConfig(name="iresnet_tiny", embedding_size=16, head="FC"), [mx.cpu()], 0)
    exempt = exempt_from_weight_decay(net)
    params = net.collect_params()
    assert exempt and all(params[n].wd_mult == 0.0 for n in exempt)
    kept = [n for n in params if n.endswith("weight")]
    assert kept and all(params[n].wd_mult == 1.0 for n in kept)
    assert not [n for n in params if n.endswith(("gamma", "beta", "bias")) and params[n].wd_mult != 0.0]


def test_same_seed_same_init():
    cfg = ModelConfig(name="iresnet_tiny", embedding_size=16, head="FC")
    a, b = (build_backbone(cfg, [mx.cpu()], 7) for _ in range(2))
    x = mx.nd.ones((1, 3, 112, 112))
    assert (a(x) == b(x)).asnumpy().all()


def test_bins_beside_rec_and_missing_bin(tmp_path):
    (tmp_path / "lfw.bin").write_bytes(b"x")
    (tmp_path / "train.rec").write_bytes(b"")
    got = resolve_bins(EvalConfig(bins=("lfw.bin",)), str(tmp_path / "train"))
    assert got == {"lfw": str(tmp_path / "lfw.bin")}
    assert resolve_bins(EvalConfig(bins=("lfw.bin",)), str(tmp_path))["lfw"] == str(tmp_path / "lfw.bin")
    with pytest.raises(GluonFaceError, match="agedb_30.bin.*gluonface pairs"):
        resolve_bins(EvalConfig(bins=("agedb_30.bin",)), str(tmp_path / "train"))


def test_run_dir_default():
    assert resolve_run_dir(Config(source="configs/tiny_synthetic.yaml")) == "runs/tiny_synthetic"
    assert resolve_run_dir(Config(train=TrainConfig(run_dir="/x/y"))) == "/x/y"
