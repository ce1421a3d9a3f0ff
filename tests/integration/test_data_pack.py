"""gluonface pack/inspect end to end on real files, including every kind of bad input (issue 2 §5)."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from gluonface.data.pack import pack, read_identity_names
from gluonface.data.record import FaceRecordDataset
from gluonface.errors import GluonFaceError


def _smooth(h, w, seed):
    """A smooth colour image (JPEG round trips stay within a few grey levels)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64] / 64
    base = rng.uniform(40, 200, 3)
    small = np.clip(base + 50 * np.stack([np.sin(3 * xx + k) * np.cos(2 * yy - k) for k in range(3)], -1),
                    0, 255).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _write(path, img_rgb, ext=".jpg"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(cv2.imencode(ext, img_rgb[:, :, ::-1] if img_rgb.ndim == 3 else img_rgb)[1].tobytes())


def _cli(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "gluonface", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture(scope="module")
def messy_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("src") / "faces"
    expect = {}   # shown path → RGB reference at 112×112 for images that must be packed
    def good(rel, img, ext=".jpg"):
        _write(str(root / rel), img, ext)
        expect[rel] = cv2.resize(img, (112, 112), interpolation=cv2.INTER_AREA if img.shape[0] > 112
                                 else cv2.INTER_CUBIC)
    good("alice/a.jpg", _smooth(112, 112, 1))
    good("alice/with space.jpg", _smooth(64, 80, 2))
    good("alice/ñandú.jpg", _smooth(112, 112, 3))
    grey = _smooth(112, 112, 4)[:, :, 1]
    _write(str(root / "alice/grey.png"), grey, ".png")
    expect["alice/grey.png"] = np.repeat(grey[:, :, None], 3, 2)
    rgba = np.dstack([_smooth(112, 112, 5), np.full((112, 112), 128, np.uint8)])
    cv2.imwrite(str(root / "alice/rgba.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    expect["alice/rgba.png"] = rgba[:, :, :3]
    deep = _smooth(112, 112, 6).astype(np.uint16) * 257
    cv2.imwrite(str(root / "alice/deep16.png"), deep[:, :, ::-1])
    expect["alice/deep16.png"] = (deep // 257).astype(np.uint8)
    pal = Image.fromarray(_smooth(112, 112, 7)).convert("P", palette=Image.ADAPTIVE, colors=64)
    pal.save(str(root / "alice/palette.png"))
    expect["alice/palette.png"] = np.asarray(pal.convert("RGB"))
    good("bob/huge.jpg", _smooth(1800, 2400, 8))
    good("bob/ok.jpg", _smooth(112, 112, 9))
    (root / "bob/zero.jpg").write_bytes(b"")
    (root / "bob/text.jpg").write_text("this is not an image\n")
    (root / "bob/corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(2000) + b"\xff\xd9")
    full = cv2.imencode(".jpg", _smooth(112, 112, 10))[1].tobytes()
    (root / "bob/truncated.jpg").write_bytes(full[: len(full) // 2])
    png = cv2.imencode(".png", _smooth(112, 112, 11))[1].tobytes()
    (root / "bob/truncated.png").write_bytes(png[: len(png) // 2])
    _write(str(root / "bob/tiny.png"), _smooth(8, 8, 12), ".png")
    (root / "bob/notes.txt").write_text("hello")
    (root / "carol").mkdir()
    (root / "dave").mkdir()
    (root / "dave/broken.jpg").write_bytes(b"\x00" * 100)
    good("erin/e.jpg", _smooth(112, 112, 13))
    (root / "landmarks.tsv").write_text("path\n")  # files at the root are not identities
    return root, expect


SKIPS = {
    "bob/zero.jpg": "empty file (0 bytes)",
    "bob/text.jpg": "not a decodable image",
    "bob/corrupt.jpg": "not a decodable image",
    "bob/truncated.jpg": "truncated JPEG",
    "bob/truncated.png": "truncated PNG",
    "bob/tiny.png": "too small (8x8 px",
    "bob/notes.txt": "not an image file name",
    "carol/": "identity folder has no images",
    "dave/broken.jpg": "not a decodable image",
}


def test_pack_round_trip_and_bad_inputs(messy_tree, tmp_path):
    root, expect = messy_tree
    report = pack(str(root), str(tmp_path / "out" / "train"), workers=2, progress=False)
    assert report.images == len(expect) and report.identities == 3
    reasons = dict(report.skipped)
    assert set(reasons) == set(SKIPS)
    for path, fragment in SKIPS.items():
        assert fragment in reasons[path] and "fix:" in reasons[path] or path == "bob/notes.txt"
    table = (tmp_path / "out/train.skipped.tsv").read_text(encoding="utf-8").splitlines()
    assert table[0] == "path\treason" and len(table) == 1 + len(SKIPS)
    assert read_identity_names(str(tmp_path / "out/train")) == ["alice", "bob", "erin"]
    ds = FaceRecordDataset(str(tmp_path / "out"))
    assert ds.num_classes == 3 and ds.image_size == (112, 112)
    order = sorted(k for k in expect if k.startswith("alice")) + ["bob/huge.jpg", "bob/ok.jpg", "erin/e.jpg"]
    assert ds.labels.tolist() == [0] * 7 + [1, 1, 2]
    for i, rel in enumerate(order):
        img, _ = ds[i]
        diff = np.abs(img.astype(int) - expect[rel].astype(int))
        assert diff.mean() < 3.0, rel
    assert "skipped 9" in report.summary()


def test_pack_is_deterministic_for_any_worker_count(messy_tree, tmp_path):
    root, _ = messy_tree
    for name, workers in (("one", 1), ("two", 2)):
        pack(str(root), str(tmp_path / name / "train"), workers=workers, progress=False, reencode=True)
    for f in ("train.rec", "train.idx", "property", "train.identities.tsv", "train.skipped.tsv"):
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f


def test_lst_sources(tmp_path):
    for k in range(4):
        _write(str(tmp_path / f"img/{k}.jpg"), _smooth(112, 112, k))
    (tmp_path / "im2rec.lst").write_text("".join(f"{k}\t{float(k % 2 + 5):f}\timg/{k}.jpg\n" for k in range(4)))
    rep = pack(str(tmp_path / "im2rec.lst"), str(tmp_path / "a/train"), progress=False)
    assert rep.images == 4 and rep.identities == 2
    assert read_identity_names(str(tmp_path / "a/train")) == ["5", "6"]
    ds = FaceRecordDataset(str(tmp_path / "a/train"))
    assert ds.labels.tolist() == [0, 0, 1, 1]
    (tmp_path / "f2r.lst").write_text("".join(f"1\t{tmp_path}/img/{k}.jpg\t{k // 2}\n" for k in range(4)))
    rep = pack(str(tmp_path / "f2r.lst"), str(tmp_path / "b/train"), progress=False)
    assert rep.identities == 2 and FaceRecordDataset(str(tmp_path / "b")).identity_ranges == {0: (0, 2), 1: (2, 4)}


def test_nothing_packed_is_an_error(tmp_path):
    (tmp_path / "src/x").mkdir(parents=True)
    (tmp_path / "src/x/a.jpg").write_bytes(b"")
    with pytest.raises(GluonFaceError, match=r"nothing could be packed .*skipped\.tsv"):
        pack(str(tmp_path / "src"), str(tmp_path / "out/train"), progress=False)


def test_cli_exit_codes_and_messages(messy_tree, tmp_path):
    root, _ = messy_tree
    out = str(tmp_path / "o" / "train")
    res = _cli("pack", str(root), out, "--quiet", "--workers", "2", "--strict")
    assert res.returncode == 1 and "--strict: 9 file(s) were skipped" in res.stdout
    assert "packed 10 images of 3 identities" in res.stdout and "bob/zero.jpg: empty file" in res.stdout
    res = _cli("inspect", out, "--quiet", "--grid", str(tmp_path / "grid.png"))
    assert res.returncode == 0, res.stderr
    assert "identities: 3 (num_classes 3)" in res.stdout and "per identity: min 1, median 2, max 7" in res.stdout
    assert "integrity: ok" in res.stdout
    sheet = cv2.imread(str(tmp_path / "grid.png"))
    assert sheet is not None and sheet.shape[0] == 3 * 112
    # A damaged image record: inspect names the record and exits 1.
    idx = dict(line.split() for line in open(out + ".idx"))
    with open(out + ".rec", "r+b") as f:
        f.seek(int(idx["2"]) + 8 + 24)
        f.write(b"\0" * 64)
    res = _cli("inspect", out, "--quiet")
    assert res.returncode == 1 and "train.rec record 2: does not decode" in res.stdout
    os.remove(out + ".idx")
    res = _cli("inspect", out)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "train.idx" in res.stderr and "gluonface pack" in res.stderr
    (tmp_path / "empty").mkdir()
    res = _cli("pack", str(tmp_path / "empty"), str(tmp_path / "x/train"))
    assert res.returncode == 2 and "no identity sub-folders" in res.stderr and "Traceback" not in res.stderr
