"""The input and output names of every exported model, insightface's: ``data`` in, ``fc1`` out, and the
runtimes ``FaceEmbedder`` can run them on.

Kept apart so the graph tools (``graph``, ``fold``) and the writers (``symbol``, ``onnx``, ``convention``)
share them without importing one another, and the CLI lists the backends without importing numpy.
"""
INPUT_NAME = "data"
OUTPUT_NAME = "fc1"
BACKENDS = ("auto", "mxnet", "onnxruntime", "native")   # FaceEmbedder.from_path(backend=...), --backend
# native: gluonface's own INT8 runner (gluonface.ops.int8net), for INT8 symbols on the CPU
