"""`gluonface export`, `gluonface eval` and `gluonface embed` end to end on a small run directory.

The images are synthetic "identities": a smooth random base image per identity plus per-image noise, so a
randomly initialised network already separates most of them and every metric is non-trivial.
"""
import json
import os
import subprocess
import sys

import cv2
import mxnet as mx
import numpy as np
import pytest

from gluonface.cli import main
from gluonface.config import build_config, save_config
from gluonface.data.pairs import save_bin
from gluonface.engine.checkpoint import load_backbone, save_best
from gluonface.evaluate.verification import verification_metrics
from gluonface.export.embedder import FaceEmbedder
from gluonface.models import get_model
from tolerance import assert_same_direction

N_IDS, PER_ID = 8, 4


def _smooth(rng):
    return cv2.resize(rng.uniform(0, 255, (7, 7, 3)).astype(np.float32), (112, 112))


def _identity_images(rng, n_ids=N_IDS, per_id=PER_ID, noise=40.0, alpha=0.3):
    # Identities share most of their appearance (weight 1 - alpha), so a random network confuses some.
    shared = _smooth(rng)
    out = []
    for _ in range(n_ids):
        base = (1 - alpha) * shared + alpha * _smooth(rng)
        out.append([np.clip(base + rng.normal(0, noise, base.shape), 0, 255).astype(np.uint8)
                    for _ in range(per_id)])
    return out


def _png(img):
    return cv2.imencode(".png", img[:, :, ::-1])[1].tobytes()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    run = str(root / "run")
    os.makedirs(run)
    save_config(build_config({"model": {"name": "iresnet_tiny", "embedding_size": 32}}),
                os.path.join(run, "config.yaml"))
    net = get_model("iresnet_tiny", embedding_size=32)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 112, 112)))
    save_best(run, net, {"step": 3})
    rng = np.random.default_rng(0)
    ids = _identity_images(rng)
    # Pair set: genuine pairs within an identity, impostors across, alternating in blocks of 5 like LFW.
    bins, issame = [], []
    for k in range(40):
        same = (k // 5) % 2 == 0
        i = k % N_IDS
        j = i if same else (i + 1 + k % (N_IDS - 1)) % N_IDS
        bins += [_png(ids[i][k % PER_ID]), _png(ids[j][(k + 1) % PER_ID])]
        issame.append(same)
    save_bin(str(root / "pairs.bin"), bins, issame)
    # Aligned image tree + template metadata/pairs + identification list.
    meta, ident = [], []
    for i, imgs in enumerate(ids):
        for n, img in enumerate(imgs):
            rel = f"id{i}/{n}.png"
            os.makedirs(root / "faces" / f"id{i}", exist_ok=True)
            cv2.imwrite(str(root / "faces" / rel), img[:, :, ::-1])
            meta.append(f"{rel} {i * 2 + n // 2} {i * 10 + n % 2}")  # 2 templates per identity, 2 media each
            ident.append(f"{rel} id{i} {'gallery' if n == 0 else 'probe'}")
    (root / "faces" / "meta.txt").write_text("\n".join(meta) + "\n")
    tpairs = [f"{a} {b} {int(a // 2 == b // 2)}" for a in range(0, 2 * N_IDS) for b in range(a + 1, 2 * N_IDS)]
    (root / "faces" / "tpairs.txt").write_text("\n".join(tpairs) + "\n")
    (root / "faces" / "ident.txt").write_text("\n".join(ident) + "\n")
    from gluonface.data.record import RecordWriter
    w = RecordWriter(str(root / "rec" / "train"))
    for i, imgs in enumerate(ids):
        for img in imgs:
            w.add_image(_png(img), i)
    w.close(image_size=(112, 112))
    assert main(["export", run, str(root / "model" / "m"), "--onnx", "--pairs", str(root / "pairs.bin"),
                 "--int8", "--calib", str(root / "rec" / "train"), "--calib-images", "32"]) == 0
    return root, run, ids, np.array(issame)


def _ref_embed(net, images):
    """Flip-TTA embedding computed directly: forward(x) + forward(mirror(x)), normalised in NumPy."""
    x = np.stack(images).astype(np.float32).transpose(0, 3, 1, 2)
    e = net(mx.nd.array(x)).asnumpy().astype(np.float64) + net(mx.nd.array(x[..., ::-1].copy())).asnumpy()
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def test_export_json_records_verification(world):
    root, _, _, _ = world
    meta = json.load(open(root / "model" / "export.json"))
    v = meta["verification"]
    assert set(v) >= {"symbol", "onnx", "int8", "pairs"}
    assert abs(v["symbol"]["accuracy"] - v["onnx"]["accuracy"]) < 1e-9
    assert v["int8_accuracy_drop_points"] == pytest.approx(100 * (v["symbol"]["accuracy"] - v["int8"]["accuracy"]))
    assert meta["checks"]["int8_calibration"]["images"] == 32
    # gluonface's INT8 runner: checked against float32 at export, then verified on the pairs like every form
    assert meta["checks"]["int8_native_vs_fp32_on_calibration"]["passed"]
    assert v["int8_native_accuracy_drop_points"] == pytest.approx(
        100 * (v["symbol"]["accuracy"] - v["int8_native"]["accuracy"]))
    assert meta["checks"]["symbol_max_abs_diff"] <= 1e-5 and meta["checks"]["onnx_max_abs_diff"] <= 1e-4


def test_eval_run_dir_all_protocols(world, capsys):
    root, run, ids, issame = world
    out = root / "eval"
    faces = root / "faces"
    rc = main(["eval", run, "--bin", str(root / "pairs.bin"), "--templates", str(faces / "meta.txt"),
               "--template-pairs", str(faces / "tpairs.txt"), "--identification", str(faces / "ident.txt"),
               "--out", str(out), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "pairs: accuracy" in printed and "rank-1" in printed
    res = json.load(open(out / "eval.json"))
    for png in ("roc.png", "cmc.png"):
        assert open(out / png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    net, _ = load_backbone(run, "best")
    from gluonface.data.pairs import decode_bin
    images, _ = decode_bin(str(root / "pairs.bin"))
    ref = verification_metrics(_ref_embed(net, list(images)), issame)
    got = res["verification"]["pairs"]
    assert got["accuracy"] == pytest.approx(ref["accuracy"]) and got["auc"] == pytest.approx(ref["auc"])
    assert 0.5 < got["auc"] < 1.0 and got["accuracy"] < 1.0
    # Identification: gallery = image 0 of each identity; brute-force rank-1 with the reference embeddings.
    emb = _ref_embed(net, [img for imgs in ids for img in imgs]).reshape(N_IDS, PER_ID, -1)
    gallery = emb[:, 0]
    hits = [int(np.argmax(gallery @ emb[i, n]) == i) for i in range(N_IDS) for n in range(1, PER_ID)]
    assert res["identification"]["rank1"] == pytest.approx(np.mean(hits))
    assert 0.2 < res["identification"]["rank1"] < 1.0
    assert res["templates"]["num_templates"] == 2 * N_IDS
    assert res["templates"]["num_pairs"] == N_IDS * (2 * N_IDS - 1)


@pytest.mark.parametrize("suffix", ["", ".onnx"])
def test_eval_exported_matches_run(world, suffix):
    root, run, _, _ = world
    a, b = root / f"a{suffix or 'sym'}", root / f"b{suffix or 'sym'}"
    assert main(["eval", run, "--bin", str(root / "pairs.bin"), "--out", str(a), "--no-progress"]) == 0
    assert main(["eval", str(root / "model" / "m") + suffix, "--bin", str(root / "pairs.bin"), "--out", str(b),
                 "--no-progress"]) == 0
    ra, rb = (json.load(open(p / "eval.json"))["verification"]["pairs"] for p in (a, b))
    assert ra["accuracy"] == pytest.approx(rb["accuracy"]) and ra["auc"] == pytest.approx(rb["auc"], abs=1e-4)


def test_embed_cli_writes_npy(world, tmp_path):
    root, _, ids, _ = world
    out = tmp_path / "e.npy"
    assert main(["embed", str(root / "faces" / "id0"), str(root / "faces" / "id1" / "0.png"),
                 "--model", str(root / "model" / "m"), "--out", str(out), "--no-progress"]) == 0
    e = np.load(out)
    paths = (tmp_path / "e.txt").read_text().split()
    assert len(paths) == PER_ID + 1 and paths[-1].endswith("id1/0.png")
    ref = FaceEmbedder.from_path(str(root / "model" / "m")).embed(np.stack(ids[0] + [ids[1][0]]))
    assert_same_direction(e, ref)   # the CLI batches the images differently (tests/tolerance.py)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)


def test_bad_inputs_give_clean_errors(world, tmp_path, capsys):
    root, _, _, _ = world
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((96, 80, 3), np.uint8))
    proc = subprocess.run([sys.executable, "-m", "gluonface", "embed", str(small), "--model",
                           str(root / "model" / "m"), "--out", str(tmp_path / "x.npy")],
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "expects aligned 112x112" in proc.stderr
    save_bin(str(tmp_path / "empty.bin"), [], [])
    import pickle
    with open(tmp_path / "odd.bin", "wb") as f:  # 3 images for 2 pairs, written without save_bin's check
        pickle.dump(([_png(np.zeros((112, 112, 3), np.uint8))] * 3, [True, False]), f, protocol=4)
    for argv, words in ((["--bin", str(tmp_path / "empty.bin")], "empty"),
                        (["--bin", str(tmp_path / "odd.bin")], "3 images for 2 pairs"),
                        (["--bin", str(tmp_path / "missing.bin")], "does not exist"),
                        ([], "nothing to evaluate")):
        assert main(["eval", str(root / "model" / "m")] + argv) == 2
        assert words in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nothing"), "--bin", str(root / "pairs.bin")]) == 2
    assert "neither a run directory" in capsys.readouterr().err


def test_onnx_input_conventions_through_eval_and_embed(world, tmp_path, capsys):
    """`--onnx-input normalized` writes a graph fed (x - 127.5) / 127.5; eval and embed read its metadata and
    give what the symbol gives, as they do for the default raw file."""
    root, run, ids, _ = world
    capsys.readouterr()
    assert main(["export", run, str(tmp_path / "norm" / "m"), "--onnx-input", "normalized"]) == 0
    assert "ONNX input: normalized, feed (RGB - 127.5) / 127.5" in capsys.readouterr().out
    meta = json.load(open(tmp_path / "norm" / "export.json"))
    assert meta["onnx_input"] == {"convention": "normalized", "mean": 127.5, "std": 127.5, "color_order": "RGB"}
    assert json.load(open(root / "model" / "export.json"))["onnx_input"]["convention"] == "raw"
    ref = FaceEmbedder.from_path(str(root / "model" / "m")).embed(np.stack(ids[0]))
    results = {}
    for name, model in (("raw", root / "model" / "m.onnx"), ("normalized", tmp_path / "norm" / "m.onnx")):
        out = tmp_path / f"{name}.npy"
        assert main(["embed", str(root / "faces" / "id0"), "--model", str(model), "--out", str(out),
                     "--no-progress"]) == 0
        assert np.sum(np.load(out) * ref, axis=1).min() > 0.9999
        assert main(["eval", str(model), "--bin", str(root / "pairs.bin"), "--out", str(tmp_path / name),
                     "--no-progress"]) == 0
        assert f"({name} convention, from metadata)" in capsys.readouterr().out
        res = json.load(open(tmp_path / name / "eval.json"))
        assert res["model"]["onnx_input"]["convention"] == name
        results[name] = res["verification"]["pairs"]
    assert results["raw"]["accuracy"] == pytest.approx(results["normalized"]["accuracy"])
    assert results["raw"]["auc"] == pytest.approx(results["normalized"]["auc"], abs=1e-4)


def _eval_with(prefix, pairs, out, backend, capsys):
    """``gluonface eval`` of an exported PREFIX in batches of 4 on ``backend``: (eval.json, printed summary)."""
    assert main(["eval", prefix, "--bin", pairs, "--out", str(out), "--no-progress", "--batch-size", "4",
                 "--backend", backend]) == 0
    return json.load(open(out / "eval.json")), capsys.readouterr().out


def test_eval_and_embed_say_which_backend_ran(world, tmp_path, capsys):
    """--backend on an exported PREFIX: every backend gives the run's accuracy; eval.json and the summary say
    which one ran each batch size; a run directory refuses onnxruntime with the fix."""
    root, run, _, _ = world
    prefix, pairs = str(root / "model" / "m"), str(root / "pairs.bin")
    capsys.readouterr()
    results = {}
    for backend in ("mxnet", "onnxruntime", "auto"):
        res, summary = _eval_with(prefix, pairs, tmp_path / backend, backend, capsys)
        report = res["model"]["backend"]
        assert report["backend"] == backend and f"backend {backend}" in summary
        if backend == "auto":   # 4-image batches, many of them: the small class was measured and chosen
            assert report["runs"]["1-8"] in ("mxnet", "onnxruntime")
            assert set(report["ms_per_image"]["1-8"]) == {"mxnet", "onnxruntime"}
            assert f"batch 1-8: {report['runs']['1-8']}" in summary
        else:
            assert report["runs"] == {"all": backend}
        results[backend] = res["verification"]["pairs"]
    for backend in ("onnxruntime", "auto"):
        assert results[backend]["accuracy"] == pytest.approx(results["mxnet"]["accuracy"])
        assert results[backend]["auc"] == pytest.approx(results["mxnet"]["auc"], abs=1e-4)
    assert main(["embed", str(root / "faces" / "id0"), "--model", prefix, "--out", str(tmp_path / "e.npy"),
                 "--no-progress", "--backend", "onnxruntime"]) == 0
    assert "backend onnxruntime" in capsys.readouterr().out
    assert main(["eval", run, "--bin", pairs, "--backend", "onnxruntime"]) == 2
    err = capsys.readouterr().err
    assert "is a run directory" in err and "gluonface export RUN_DIR PREFIX --onnx" in err


def test_int8_eval_and_embed_on_the_native_runner(world, tmp_path, capsys):
    """The INT8 PREFIX through the CLI: --backend native runs gluonface's runner (accuracy as export verified
    it), auto measures it against MXNet's INT8, embed says which ran; a float32 PREFIX refuses native."""
    root, _, _, _ = world
    prefix, pairs = str(root / "model" / "m-int8"), str(root / "pairs.bin")
    meta = json.load(open(root / "model" / "export.json"))
    capsys.readouterr()
    for backend in ("native", "auto"):
        res, summary = _eval_with(prefix, pairs, tmp_path / backend, backend, capsys)
        report = res["model"]["backend"]
        if backend == "native":
            assert report["runs"] == {"all": "native"}
            assert res["verification"]["pairs"]["accuracy"] == pytest.approx(
                meta["verification"]["int8_native"]["accuracy"])
        else:
            assert set(report["ms_per_image"]["1-8"]) == {"mxnet", "native"}
            assert f"batch 1-8: {report['runs']['1-8']}" in summary
    assert main(["embed", str(root / "faces" / "id0"), "--model", prefix, "--out", str(tmp_path / "e.npy"),
                 "--no-progress", "--backend", "native"]) == 0
    assert "backend native" in capsys.readouterr().out
    assert main(["eval", str(root / "model" / "m"), "--bin", pairs, "--backend", "native"]) == 2
    assert "runs INT8 symbols on the CPU" in capsys.readouterr().err


def test_inference_commands_run_mxnet_synchronously_on_the_cpu(world, tmp_path):
    """A fresh `gluonface eval` process runs MXNet's NaiveEngine on the CPU (gluonface.machine), unless the
    user chose an engine; eval.json records the engine that ran."""
    root, _, _, _ = world
    argv = [sys.executable, "-m", "gluonface", "eval", str(root / "model" / "m"), "--bin", str(root / "pairs.bin"),
            "--backend", "mxnet", "--no-progress"]
    base = {k: v for k, v in os.environ.items() if k != "MXNET_ENGINE_TYPE"}
    for env, want in (({}, "NaiveEngine"), ({"MXNET_ENGINE_TYPE": "ThreadedEngine"}, "ThreadedEngine")):
        out = tmp_path / want
        proc = subprocess.run(argv + ["--out", str(out)], capture_output=True, text=True,
                              env=dict(base, OMP_NUM_THREADS="1", **env))
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.load(open(out / "eval.json"))["model"]["backend"]["mxnet_engine"] == want
    code = ("import os, sys; from gluonface.machine import use_inference_engine as use; "
            "print(use('gpu0'), os.environ.get('MXNET_ENGINE_TYPE'), use('cpu'), 'mxnet' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=base)
    assert proc.stdout.split() == ["None", "None", "NaiveEngine", "False"]   # GPU jobs keep the threaded engine
