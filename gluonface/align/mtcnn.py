"""MTCNN face detector with 5 landmarks, running the hybridized Gluon networks of ``nets.py``.

The cascade (Zhang et al. 2016): an image pyramid (factor 0.709, first level such that ``min_face`` pixels
become the 12-px P-Net window) → P-Net proposals per level (NMS 0.5 per level, 0.7 across levels, box
regression, squaring) → R-Net on 24x24 crops (threshold, regression, NMS 0.7, squaring) → O-Net on 48x48
crops (threshold, regression, landmarks, NMS 0.7 over the smaller box).

Points are in pixel-index coordinates of the input image (the centre of pixel ``(row i, col j)`` is
``(x=j, y=i)``), the convention ``cv2.warpAffine`` uses, in ArcFace order: image-left eye centre,
image-right eye centre, nose tip, image-left mouth corner, image-right mouth corner.
"""
import math
from dataclasses import dataclass

import cv2
import mxnet as mx
import numpy as np

from gluonface.align.boxes import apply_regression, crop_patches, nms, to_square
from gluonface.align.nets import load_mtcnn_nets
from gluonface.align.image import to_rgb
from gluonface.errors import GluonFaceError


@dataclass(frozen=True)
class Face:
    """One detection: ``box (4,) float32`` x1, y1, x2, y2; ``score`` in [0, 1]; ``points (5, 2) float32``."""
    box: np.ndarray
    score: float
    points: np.ndarray

    @property
    def size(self):
        """Side of the box: ``sqrt(width * height)`` in pixels."""
        return float(math.sqrt(max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0)))


def pyramid_scales(height, width, min_face, factor=0.709, window=12):
    """Scales of the P-Net pyramid: the first maps ``min_face`` px to the 12-px window; the last keeps the
    shorter side at least 12 px. Returns a list of floats (empty when the image is smaller than a face)."""
    scale = window / float(min_face)
    side = min(height, width) * scale
    scales = []
    while side >= window:
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


def pack_levels(sizes):
    """Shelf-pack pyramid levels into one canvas so P-Net runs once per image instead of once per level.

    Args:
        sizes: ``[(h, w), ...]`` level sizes, largest first.
    Returns:
        ``(offsets [(y, x), ...], (H, W))``; offsets are even (P-Net's stride is 2) and levels don't overlap.
    """
    even = lambda n: n + (n % 2)  # noqa: E731
    height = even(sizes[0][0])
    offsets, x, y, column = [], 0, 0, 0
    for h, w in sizes:
        if y + h > height:  # next column
            x, y, column = x + column, 0, 0
        offsets.append((y, x))
        y += even(h)
        column = max(column, even(w))
    return offsets, (height, x + column)


class MTCNNDetector:
    """Detect faces and their 5 landmarks in RGB images.

    Args:
        min_face: smallest face side to look for, in pixels of the input image (>= 12 after downscaling).
        thresholds: face-probability thresholds of P-Net, R-Net, O-Net.
        factor: pyramid scale step.
        max_side: images whose longer side exceeds this are downscaled for detection only; boxes and
            points are returned in the input's full-resolution coordinates.
        ctx: MXNet context (default CPU).
        weights_dir: directory with ``{pnet,rnet,onet}.lz4`` (default: the installed mtcnn wheel's).
        pack_pyramid: run P-Net on the largest pyramid level and on all smaller levels packed into one
            canvas (two calls, default) rather than once per level; the detections are the same.
        hybridize: run the networks as cached graphs (default; False only to measure the difference).
    """

    def __init__(self, min_face=20, thresholds=(0.6, 0.7, 0.8), factor=0.709, max_side=1280, ctx=None,
                 weights_dir=None, pack_pyramid=True, hybridize=True):
        if min_face < 12:
            raise GluonFaceError(f"min_face={min_face} px is below MTCNN's 12-px window; fix: use >= 12")
        if not 0 < factor < 1 or len(thresholds) != 3:
            raise GluonFaceError("MTCNN needs 0 < factor < 1 and three thresholds; fix: e.g. factor=0.709, "
                                 "thresholds=(0.6, 0.7, 0.8)")
        self.min_face, self.factor, self.max_side = float(min_face), float(factor), int(max_side)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.ctx = ctx or mx.cpu()
        self.pack_pyramid = bool(pack_pyramid)
        self.pnet, self.rnet, self.onet = load_mtcnn_nets(self.ctx, weights_dir, hybridize=hybridize)

    def detect(self, image, largest_only=False):
        """Find every face (or only the largest).

        Args:
            image: ``(H, W, 3) uint8`` RGB (grayscale ``(H, W)`` / ``(H, W, 1)`` and RGBA are converted).
            largest_only: return at most one face, the one with the biggest box.
        Returns:
            list of :class:`Face`, highest score first (empty when there is none).
        """
        image = to_rgb(image)
        h, w = image.shape[:2]
        ratio = min(1.0, self.max_side / float(max(h, w)))
        scale = np.ones(2)
        if ratio < 1.0:  # detect on a smaller copy; align later at full resolution
            size = (max(1, round(w * ratio)), max(1, round(h * ratio)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            scale = np.array(size, dtype=np.float64) / (w, h)  # exact per-axis factors after rounding
        norm = (image.astype(np.float32) - 127.5) / 128.0
        min_face = max(12.0, self.min_face * ratio)
        boxes = self._propose(norm, min_face)
        if len(boxes):
            boxes = self._refine(norm, boxes)
        if not len(boxes):
            return []
        boxes, scores, points = self._output(norm, boxes)
        boxes = boxes / np.tile(scale, 2)  # box edges scale as they are
        points = (points + 0.5) / scale - 0.5  # points are pixel centres
        faces = [Face(box=b.astype(np.float32), score=float(s), points=p.astype(np.float32))
                 for b, s, p in zip(boxes, scores, points)]
        return [max(faces, key=lambda f: f.size)] if largest_only and faces else faces

    def _run(self, net, batch):
        outs = net(mx.nd.array(batch, ctx=self.ctx))
        return [o.asnumpy() for o in outs]

    def _pnet_maps(self, norm, scales):
        """P-Net face-probability ``(h', w')`` and offset ``(4, h', w')`` maps, one pair per pyramid level.

        Packed mode runs the largest level alone and all smaller levels packed into one canvas (two
        P-Net calls per image instead of one per level: fewer, larger operator calls);
        output cell (i, j) sees the 12x12 canvas window at (2i, 2j), so each level keeps the cells whose
        window lies inside it (offsets are even, the grids line up). Unpacked mode runs level by level.
        """
        h, w = norm.shape[:2]
        sizes = [(int(math.ceil(h * s)), int(math.ceil(w * s))) for s in scales]
        alone = [([(0, 0)], (hs + hs % 2, ws + ws % 2)) for hs, ws in sizes]
        # Packed: the largest level alone, all smaller ones in one canvas (two calls, little wasted area).
        groups = alone[:1] + [pack_levels(sizes[1:])] if self.pack_pyramid and len(sizes) > 1 else alone
        maps = []
        for offsets, shape in groups:
            first = len(maps)
            canvas = np.zeros((1, 3) + shape, dtype=np.float32)  # 0 = mid-grey after normalisation
            for k, (oy, ox) in enumerate(offsets, first):
                hs, ws = sizes[k]
                canvas[0, :, oy:oy + hs, ox:ox + ws] = cv2.resize(
                    norm, (ws, hs), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
            reg, prob = self._run(self.pnet, canvas)
            for k, (oy, ox) in enumerate(offsets, first):
                hs, ws = sizes[k]
                cy, cx, nh, nw = oy // 2, ox // 2, (hs - 12) // 2 + 1, (ws - 12) // 2 + 1
                maps.append((prob[0, 1, cy:cy + nh, cx:cx + nw], reg[0, :, cy:cy + nh, cx:cx + nw]))
        return maps

    def _propose(self, norm, min_face):
        """P-Net over the pyramid → squared candidate boxes ``(N, 4)``."""
        scales = pyramid_scales(norm.shape[0], norm.shape[1], min_face, self.factor)
        all_boxes, all_scores = [], []
        for scale, (face, reg) in zip(scales, self._pnet_maps(norm, scales)):
            ys, xs = np.nonzero(face >= self.thresholds[0])
            if not len(ys):
                continue
            windows = np.stack([xs * 2, ys * 2, xs * 2 + 12, ys * 2 + 12], axis=1) / scale
            boxes = apply_regression(windows, reg[:, ys, xs].T)
            scores = face[ys, xs]
            keep = nms(boxes, scores, 0.5)
            all_boxes.append(boxes[keep])
            all_scores.append(scores[keep])
        if not all_boxes:
            return np.zeros((0, 4))
        boxes, scores = np.concatenate(all_boxes), np.concatenate(all_scores)
        return to_square(boxes[nms(boxes, scores, 0.7)])

    def _refine(self, norm, boxes):
        """R-Net on 24x24 crops → squared boxes ``(M, 4)``."""
        boxes = np.round(boxes)  # crops are whole pixels; regression applies to the box actually cropped
        reg, prob = self._run(self.rnet, crop_patches(norm, boxes, 24))
        ok = prob[:, 1] > self.thresholds[1]
        boxes = apply_regression(boxes[ok], reg[ok])
        return to_square(boxes[nms(boxes, prob[ok, 1], 0.7)])

    def _output(self, norm, boxes):
        """O-Net on 48x48 crops → ``(boxes (K, 4), scores (K,), points (K, 5, 2))``, best first."""
        boxes = np.round(boxes)  # landmarks are fractions of the box actually cropped
        reg, marks, prob = self._run(self.onet, crop_patches(norm, boxes, 48))
        ok = prob[:, 1] > self.thresholds[2]
        boxes, reg, marks, scores = boxes[ok], reg[ok], marks[ok], prob[ok, 1]
        bw = (boxes[:, 2] - boxes[:, 0])[:, None]
        bh = (boxes[:, 3] - boxes[:, 1])[:, None]
        points = np.stack([boxes[:, :1] + bw * marks[:, :5], boxes[:, 1:2] + bh * marks[:, 5:]], axis=2)
        boxes = apply_regression(boxes, reg)
        keep = nms(boxes, scores, 0.7, mode="min")
        return boxes[keep], scores[keep], points[keep]
