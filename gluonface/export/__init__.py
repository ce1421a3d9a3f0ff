"""Export and inference: symbol checkpoints (``symbol``), ONNX with graph fixes (``onnx``), oneDNN INT8
(``quantize``), the ``gluonface export`` pipeline with parity checks (``run``) and ``FaceEmbedder``
(``embedder``), which loads any of the three forms.
"""
