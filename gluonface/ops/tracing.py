"""When a custom op may enter a graph: executed graphs yes, exported graphs no.

A hybridized block traces its graph in ``HybridBlock._get_graph`` and runs it in this process, where the
library is loaded. Every other symbolic trace (``net(mx.sym.var('data'))`` in gluonface's exporter, FLOP
counting) produces a graph that leaves the process and must hold only standard operators, so plain MXNet,
onnxruntime and insightface load it. Gluon's own ``HybridBlock.export`` writes the cached (executed) graph
and therefore contains the native ops while they are active.
"""
import sys


def traced_for_execution(F):
    """True for imperative calls (``F`` is ``mx.nd``) and traces inside ``HybridBlock._get_graph``."""
    import mxnet as mx
    if F is mx.nd:
        return True
    from mxnet.gluon.block import HybridBlock
    target = HybridBlock._get_graph.__code__
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is target:
            return True
        frame = frame.f_back
    return False
