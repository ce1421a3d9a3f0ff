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
    """

    def __init__(self, min_face=20, thresholds=(0.6, 0.7, 0.8), factor=0.709, max_side=1280, ctx=None,
                 weights_dir=None):
        if min_face < 12:
            raise GluonFaceError(f"min_face={min_face} px is below MTCNN's 12-px window; fix: use >= 12")
        if not 0 < factor < 1 or len(thresholds) != 3:
            raise GluonFaceError("MTCNN needs 0 < factor < 1 and three thresholds; fix: e.g. factor=0.709, "
                                 "thresholds=(0.6, 0.7, 0.8)")
        self.min_face, self.factor, self.max_side = float(min_face), float(factor), int(max_side)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.ctx = ctx or mx.cpu()
        self.pnet, self.rnet, self.onet = load_mtcnn_nets(self.ctx, weights_dir)

    def detect(self, image):
        """Find every face.

        Args:
            image: ``(H, W, 3) uint8`` RGB (grayscale ``(H, W)`` / ``(H, W, 1)`` and RGBA are converted).
        Returns:
            list of :class:`Face`, highest score first (empty when there is none).
        """
        image = to_rgb(image)
        h, w = image.shape[:2]
        ratio = min(1.0, self.max_side / float(max(h, w)))
        if ratio < 1.0:  # detect on a smaller copy; align later at full resolution
            image = cv2.resize(image, (max(1, round(w * ratio)), max(1, round(h * ratio))),
                               interpolation=cv2.INTER_AREA)
        norm = (image.astype(np.float32) - 127.5) / 128.0
        min_face = max(12.0, self.min_face * ratio)
        boxes = self._propose(norm, min_face)
        if len(boxes):
            boxes = self._refine(norm, boxes)
        if not len(boxes):
            return []
        boxes, scores, points = self._output(norm, boxes)
        return [Face(box=(b / ratio).astype(np.float32), score=float(s), points=(p / ratio).astype(np.float32))
                for b, s, p in zip(boxes, scores, points)]

    def _run(self, net, batch):
        outs = net(mx.nd.array(batch, ctx=self.ctx))
        return [o.asnumpy() for o in outs]

    def _propose(self, norm, min_face):
        """P-Net over the pyramid → squared candidate boxes ``(N, 4)``."""
        h, w = norm.shape[:2]
        all_boxes, all_scores = [], []
        for scale in pyramid_scales(h, w, min_face, self.factor):
            hs, ws = int(math.ceil(h * scale)), int(math.ceil(w * scale))
            level = cv2.resize(norm, (ws, hs), interpolation=cv2.INTER_AREA)
            reg, prob = self._run(self.pnet, level.transpose(2, 0, 1)[None])
            ys, xs = np.nonzero(prob[0, 1] >= self.thresholds[0])
            if not len(ys):
                continue
            # Each output cell is a 12x12 window at stride 2 in the scaled image.
            windows = np.stack([xs * 2, ys * 2, xs * 2 + 12, ys * 2 + 12], axis=1) / scale
            boxes = apply_regression(windows, reg[0][:, ys, xs].T)
            scores = prob[0, 1, ys, xs]
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
