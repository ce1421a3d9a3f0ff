"""Face alignment: MTCNN detection (Gluon, hybridized) and the ArcFace similarity warp.

Public API:

- ``MTCNNDetector(min_face=20, thresholds=(0.6, 0.7, 0.8), factor=0.709, max_side=1280, ctx=None)``
  with ``detect(rgb_uint8, largest_only=False) -> [Face(box (4,) float32, score, points (5, 2) float32)]``,
  highest score first (``gluonface.align.mtcnn``; the nets in ``nets.py``, hybridized).
- ``arcface_template(size)``, ``umeyama_similarity(src, dst)``, ``align_face(image, points, size)``,
  ``transform_points(matrix, points)`` (``gluonface.align.transform``).
- ``align_image(image, size=..., points=None, detector=None, select='largest')`` → ``AlignResult``
  (``gluonface.align.pipeline``).
- ``align_tree(src, dst, ...)`` → ``AlignSummary`` (``gluonface.align.batch``), behind ``gluonface align``.
- ``AlignPreprocess`` (``gluonface.align.preprocess``): the picklable hook ``gluonface pack --align`` uses.

MXNet is imported only by ``mtcnn``/``nets``: landmark-driven alignment never loads it.
"""
from gluonface.align.pipeline import AlignResult, align_image, choose_face
from gluonface.align.transform import (ARCFACE_112, align_face, arcface_template, parse_size,
                                       transform_points, umeyama_similarity)

__all__ = ["ARCFACE_112", "AlignResult", "align_face", "align_image", "arcface_template", "choose_face",
           "parse_size", "transform_points", "umeyama_similarity"]
