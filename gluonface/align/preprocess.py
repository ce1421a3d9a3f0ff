"""The picklable alignment hook for ``gluonface pack --align`` (raw photos straight into a rec).

The packer calls ``preprocess(image_rgb_uint8, relpath)`` in its worker processes and treats
``gluonface.data.pack.SkipImage(reason)`` as a reported skip. The detector is built lazily in each worker
(it is not pickled), so the object is cheap to ship.
"""
import numpy as np

from gluonface.align import pipeline
from gluonface.align.transform import parse_size
from gluonface.errors import GluonFaceError


class AlignPreprocess:
    """Align one image to the ArcFace template; raise ``SkipImage`` when there is no usable face.

    Args:
        size: crop size (``112``, ``"112x96"``, ``(H, W)``).
        select: ``largest`` or ``central`` among several detected faces.
        min_face: smallest face the detector looks for, in px.
        landmarks: optional ``{relpath: (5, 2)}`` (e.g. from ``read_landmarks``); images listed there are
            warped from those points and the detector is not used for them.
        detect_missing: when ``landmarks`` is given, detect faces in images it does not list (else skip).
    """

    def __init__(self, size=112, select="largest", min_face=40, landmarks=None, detect_missing=False,
                 max_side=1280):
        if select not in pipeline.SELECT_MODES:
            raise GluonFaceError(f"select {select!r} is unknown; fix: one of {pipeline.SELECT_MODES}")
        if landmarks is None and min_face < 12:
            raise GluonFaceError(f"min face {min_face} px is below MTCNN's 12-px window; fix: use 12 or more")
        self.size = parse_size(size)
        self.select, self.min_face, self.max_side = select, float(min_face), int(max_side)
        self.landmarks = None if landmarks is None else {
            k: np.asarray(v, dtype=np.float32) for k, v in landmarks.items()}
        self.detect_missing = bool(detect_missing)
        self._detector = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_detector"] = None  # MXNet blocks are rebuilt in each worker
        return state

    def detector(self):
        """The MTCNN detector of this process (built on first use)."""
        if self._detector is None:
            from gluonface.align.mtcnn import MTCNNDetector
            self._detector = MTCNNDetector(min_face=self.min_face, max_side=self.max_side)
        return self._detector

    def __call__(self, image, relpath):
        """``(H, W, 3) uint8`` RGB → aligned ``(h, w, 3) uint8`` RGB, or raise ``SkipImage(reason)``."""
        from gluonface.data.pack import SkipImage
        points = None
        if self.landmarks is not None:
            points = self.landmarks.get(str(relpath).replace("\\", "/"))
            if points is None and not self.detect_missing:
                raise SkipImage("not listed in the landmarks file")
        result = pipeline.align_image(image, size=self.size, points=points,
                                      detector=None if points is not None else self.detector(),
                                      select=self.select)
        if not result.aligned:
            raise SkipImage(f"{result.status}: {result.reason}")
        return result.crop
