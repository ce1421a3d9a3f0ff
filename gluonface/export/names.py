"""The input and output names of every exported model, insightface's: ``data`` in, ``fc1`` out.

Kept apart so the graph tools (``graph``, ``fold``) and the writers (``symbol``, ``onnx``, ``convention``)
share them without importing one another.
"""
INPUT_NAME = "data"
OUTPUT_NAME = "fc1"
