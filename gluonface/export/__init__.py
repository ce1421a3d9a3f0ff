"""Export and inference: symbol checkpoints (``symbol``), ONNX with graph fixes (``onnx``) and an explicit
input convention its clients read (``convention``), oneDNN INT8 (``quantize``), the ``gluonface export``
pipeline with parity checks (``run``) and ``FaceEmbedder`` (``embedder``), which loads any of the three forms.
``names`` holds the input/output names all of them share; ``graph`` and ``fold`` rewrite symbols for inference.
"""
