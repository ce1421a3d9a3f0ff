"""Config loading: inheritance, overrides, and errors that name the key, the file and the fix."""
import os

import pytest
import yaml

from gluonface.config import (SECTION_TYPES, Config, build_config, config_from_dict, load_config,
                              parse_override, save_config)
from gluonface.errors import GluonFaceError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "configs")


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_base_yaml_states_every_default_exactly():
    """base.yaml documents every key, and its values are the dataclass defaults (one source of truth)."""
    with open(os.path.join(CONFIGS, "base.yaml")) as f:
        doc = yaml.safe_load(f)
    assert set(doc) == set(SECTION_TYPES)
    assert build_config(doc).to_dict() == Config().to_dict()
    text = open(os.path.join(CONFIGS, "base.yaml")).read()
    for section, body in doc.items():
        for key in body:
            line = next(l for l in text.splitlines() if l.strip().startswith(f"{key}:"))
            assert "#" in line or key in ("contrast", "saturation", "beta2", "epsilon", "lr_factor"), key


SHIPPED = sorted(f for f in os.listdir(CONFIGS) if f.endswith(".yaml") and f != "base.yaml")


def test_required_configs_are_shipped():
    assert {"tiny_synthetic.yaml", "ms1mv2_r100_arcface.yaml", "ms1mv3_r50_arcface.yaml",
            "casia_mobilefacenet.yaml"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_build(name):
    """Every shipped config loads and names a backbone and loss that exist (no edit needed but data.rec)."""
    from gluonface.losses import get_loss
    from gluonface.models import get_model
    cfg = load_config(os.path.join(CONFIGS, name))
    assert cfg.source.endswith(name)
    m = cfg.model
    get_model(m.name, embedding_size=m.embedding_size, head=m.head, dropout=m.dropout, input_norm=m.input_norm)
    lc = cfg.loss
    get_loss(lc.name, 10, m.embedding_size, s=lc.s, m1=lc.m1, m2=lc.m2, m3=lc.m3, easy_margin=lc.easy_margin)


def test_published_hyperparameters():
    c = load_config(os.path.join(CONFIGS, "ms1mv2_r100_arcface.yaml"))
    assert (c.model.name, c.optim.lr, c.optim.momentum, c.optim.wd, c.data.batch_size) == \
        ("iresnet100", 0.1, 0.9, 5e-4, 128)
    assert (c.loss.s, c.loss.m2, c.loss.m3) == (64.0, 0.5, 0.0)
    c = load_config(os.path.join(CONFIGS, "casia_mobilefacenet.yaml"))
    assert c.optim.lr_steps == (20.0, 28.0, 32.0) and c.train.epochs == 34


def test_inheritance_and_overrides(tmp_path):
    write(tmp_path, "base.yaml", "optim:\n  lr: 0.5\n  wd: 0.001\ndata:\n  batch_size: 16\n")
    exp = write(tmp_path, "exp.yaml", "base: base.yaml\noptim:\n  lr: 0.2\n")
    cfg = load_config(exp, ["data.batch_size=8", "eval.bins=[a.bin, b.bin]", "train.amp=bf16"])
    assert cfg.optim.lr == 0.2 and cfg.optim.wd == 0.001
    assert cfg.data.batch_size == 8 and cfg.eval.bins == ("a.bin", "b.bin") and cfg.train.amp == "bf16"
    # without a base file the dataclass defaults apply
    cfg = load_config(write(tmp_path, "alone.yaml", "model:\n  name: iresnet18\n"))
    assert cfg.optim.lr == Config().optim.lr and cfg.model.name == "iresnet18"


def test_ints_accepted_for_floats_but_not_the_reverse(tmp_path):
    cfg = load_config(write(tmp_path, "a.yaml", "optim:\n  lr: 1\n"))
    assert isinstance(cfg.optim.lr, float)
    with pytest.raises(GluonFaceError, match=r"data\.batch_size.*expected int"):
        load_config(write(tmp_path, "b.yaml", "data:\n  batch_size: 12.5\n"))


def test_unknown_key_names_key_file_and_suggestion(tmp_path):
    path = write(tmp_path, "exp.yaml", "optim:\n  lrr: 0.1\n")
    with pytest.raises(GluonFaceError) as e:
        load_config(path)
    msg = str(e.value)
    assert "optim.lrr" in msg and path in msg and "optim.lr" in msg and "fix:" in msg


def test_unknown_section(tmp_path):
    with pytest.raises(GluonFaceError, match=r"unknown config section 'optimizer'.*fix"):
        load_config(write(tmp_path, "exp.yaml", "optimizer:\n  lr: 0.1\n"))


def test_bad_type_names_origin(tmp_path):
    path = write(tmp_path, "exp.yaml", "train:\n  hybridize: maybe\n")
    with pytest.raises(GluonFaceError) as e:
        load_config(path)
    assert "train.hybridize" in str(e.value) and path in str(e.value) and "bool" in str(e.value)


def test_bad_value_from_override_names_set(tmp_path):
    path = write(tmp_path, "exp.yaml", "optim:\n  lr: 0.1\n")
    with pytest.raises(GluonFaceError) as e:
        load_config(path, ["optim.momentum=1.5"])
    assert "optim.momentum" in str(e.value) and "--set optim.momentum" in str(e.value)
    with pytest.raises(GluonFaceError, match=r"train\.amp.*bf16"):
        load_config(path, ["train.amp=fp8"])
    # YAML reads a bare `off` as false: train.amp takes it as the word it is, in a --set and in a file.
    assert load_config(path, ["train.amp=off"]).train.amp == "off"
    assert load_config(write(tmp_path, "off.yaml", "train:\n  amp: off\n")).train.amp == "off"
    with pytest.raises(GluonFaceError, match=r"train\.amp"):
        load_config(path, ["train.amp=on"])
    with pytest.raises(GluonFaceError, match="section.key=value"):
        load_config(path, ["lr=0.1"])


def test_cross_key_checks(tmp_path):
    path = write(tmp_path, "exp.yaml", "optim:\n  schedule: step\n  lr_steps: []\n")
    with pytest.raises(GluonFaceError, match=r"optim\.lr_steps.*step"):
        load_config(path)
    path = write(tmp_path, "exp2.yaml", "eval:\n  bins: [x/lfw.bin]\n  best_by: agedb_30\n")
    with pytest.raises(GluonFaceError, match=r"eval\.best_by.*lfw"):
        load_config(path)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(GluonFaceError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"))
    with pytest.raises(GluonFaceError, match="not valid YAML"):
        load_config(write(tmp_path, "bad.yaml", "optim: [unclosed\n"))
    with pytest.raises(GluonFaceError, match="one level"):
        write(tmp_path, "b0.yaml", "optim:\n  lr: 0.1\n")
        write(tmp_path, "b1.yaml", "base: b0.yaml\n")
        load_config(write(tmp_path, "b2.yaml", "base: b1.yaml\n"))


def test_parse_override_types():
    assert parse_override("optim.lr=0.2") == ("optim", "lr", 0.2)
    assert parse_override("train.hybridize=false") == ("train", "hybridize", False)
    assert parse_override("eval.bins=[a.bin]") == ("eval", "bins", ["a.bin"])
    assert parse_override("data.rec=/x/y") == ("data", "rec", "/x/y")


def test_save_roundtrip_and_hash(tmp_path):
    cfg = load_config(os.path.join(CONFIGS, "ms1mv3_r50_arcface.yaml"))
    out = str(tmp_path / "config.yaml")
    save_config(cfg, out, derived={"global_batch": 1024})
    with open(out) as f:
        doc = yaml.safe_load(f)
    assert doc["derived"]["global_batch"] == 1024
    back = config_from_dict(doc)
    assert back.to_dict() == cfg.to_dict() and back.trajectory_hash() == cfg.trajectory_hash()
    # presentation keys do not change the trajectory hash; numerics do
    base = os.path.join(CONFIGS, "ms1mv3_r50_arcface.yaml")
    assert load_config(base, ["train.log_every=3", "train.max_steps=7"]).trajectory_hash() == cfg.trajectory_hash()
    assert load_config(base, ["optim.lr=0.2"]).trajectory_hash() != cfg.trajectory_hash()
