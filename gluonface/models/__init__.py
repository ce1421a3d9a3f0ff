"""Face embedding backbones: a small name registry, ``get_model`` and ``list_models``.

Every network maps ``(N, 3, H, W)`` float32 raw RGB pixels (0..255) to ``(N, E)`` float32 embeddings that
are *not* L2-normalised. With ``input_norm=True`` the graph itself computes ``(x - 127.5) / 128`` so an
exported model takes raw pixels, as insightface's MXNet models do.
"""
from gluonface.errors import GluonFaceError

_REGISTRY = {}


def register_model(name):
    """Decorator registering ``factory(embedding_size, head, dropout, input_norm, input_size, **kw)``."""
    def deco(factory):
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory
    return deco


def _load_all():
    # Imported lazily so that ``import gluonface.models`` does not import MXNet.
    from gluonface.models import iresnet, mobilefacenet, zoo  # noqa: F401  (registration side effect)


def list_models():
    """Names accepted by ``get_model``, sorted."""
    _load_all()
    return sorted(_REGISTRY)


def get_model(name, embedding_size=512, head="E", dropout=0.0, input_norm=True, input_size=112, **kw):
    """Build an (uninitialised) face embedding network.

    Args:
        name: a name from ``list_models()``, e.g. ``iresnet50``, ``mobilefacenet``, ``gluoncv:resnet50_v1b``.
        embedding_size: E, the embedding width.
        head: ``'E'`` (BN → Dropout → Dense(E) → BN) or ``'FC'`` (the same without dropout).
        dropout: dropout rate of the ``'E'`` head.
        input_norm: normalise raw 0..255 pixels in-graph as (x − 127.5) / 128.
        input_size: the square input size the net will see; only MobileFaceNet's global depthwise conv
            depends on it (the other heads infer their Dense input at the first forward).
        **kw: architecture options (none at present; unknown ones raise GluonFaceError).

    Returns:
        A ``gluon.HybridBlock``: ``(N, 3, H, W) float32 → (N, E) float32``. Call ``initialize()`` first.
    """
    _load_all()
    if name not in _REGISTRY:
        raise GluonFaceError(f"unknown model {name!r}; fix: use one of {', '.join(sorted(_REGISTRY))}")
    if head not in ("E", "FC"):
        raise GluonFaceError(f"unknown embedding head {head!r}; fix: use 'E' or 'FC'")
    if int(embedding_size) <= 0:
        raise GluonFaceError(f"embedding_size must be positive, got {embedding_size}; fix: use e.g. 512")
    if int(input_size) < 32:
        raise GluonFaceError(f"input_size {input_size} is too small (4 stride-2 stages); fix: use >= 32")
    return _REGISTRY[name](embedding_size=int(embedding_size), head=head, dropout=float(dropout),
                           input_norm=bool(input_norm), input_size=int(input_size), **kw)
