"""Training losses by name: ``get_loss(name, num_classes, embedding_size, **kw)``.

Every loss is a ``HybridBlock`` called as ``loss(embeddings (N, E), labels (N,))`` → per-sample loss
``(N,)`` float32. Margin losses own their class centres as the parameter ``weight`` ``(C·K, E)``, apart from
the backbone (so Partial FC can shard them). Importing this package does not import MXNet.
"""
from gluonface.errors import GluonFaceError

# name → (module, class, default margin kwargs). Presets follow insightface: s = 64 everywhere;
# SphereFace-style uses the multiplicative margin m1 = 1.35 as in the ArcFace paper's combined-margin study.
_LOSSES = {
    "softmax": ("margin", "SoftmaxLoss", {}),
    "arcface": ("margin", "MarginSoftmaxLoss", dict(s=64.0, m1=1.0, m2=0.5, m3=0.0)),
    "cosface": ("margin", "MarginSoftmaxLoss", dict(s=64.0, m1=1.0, m2=0.0, m3=0.35)),
    "sphereface": ("margin", "MarginSoftmaxLoss", dict(s=64.0, m1=1.35, m2=0.0, m3=0.0)),
    "combined": ("margin", "MarginSoftmaxLoss", dict(s=64.0, m1=1.0, m2=0.3, m3=0.2)),
    "subcenter_arcface": ("margin", "MarginSoftmaxLoss", dict(s=64.0, m1=1.0, m2=0.5, m3=0.0,
                                                                sub_centers=3)),
    "triplet": ("triplet", "BatchHardTripletLoss", {}),
}
_MARGIN_KW = {"s", "m1", "m2", "m3", "easy_margin", "sub_centers"}


def list_losses():
    """Names accepted by ``get_loss``, sorted."""
    return sorted(_LOSSES)


def get_loss(name, num_classes, embedding_size, **kw):
    """Build a loss block by name.

    Args:
        name: one of ``list_losses()``.
        num_classes: C, number of identities (ignored by ``triplet``).
        embedding_size: E.
        **kw: ``s``, ``m1``, ``m2``, ``m3``, ``easy_margin``, ``sub_centers`` for the margin losses (``None``
            values mean "preset default"); ``use_bias`` for ``softmax``; ``margin`` for ``triplet``; ``compute_dtype`` (``'float32'``, or ``'float64'`` for exact checks).

    Returns:
        An uninitialised ``HybridBlock``: ``(embeddings (N, E), labels (N,)) → (N,) float32``.
    """
    if name not in _LOSSES:
        raise GluonFaceError(f"unknown loss {name!r}; fix: use one of {', '.join(sorted(_LOSSES))}")
    module_name, cls_name, preset = _LOSSES[name]
    kw = {k: v for k, v in kw.items() if v is not None}
    if module_name == "margin" and cls_name == "MarginSoftmaxLoss":
        args = {**preset, **kw}
        unknown = set(args) - _MARGIN_KW - {"compute_dtype"}
        if int(args.get("sub_centers", 1)) < 1:
            raise GluonFaceError(f"sub_centers must be >= 1, got {args['sub_centers']}; fix: use 1 or 3")
    elif cls_name == "SoftmaxLoss":
        # The margin keys may be present in a config section shared by all losses; they do not apply here.
        args = {k: v for k, v in kw.items() if k not in _MARGIN_KW}
        unknown = set(args) - {"use_bias", "compute_dtype"}
    else:
        args = {k: v for k, v in kw.items() if k not in _MARGIN_KW}
        unknown = set(args) - {"margin", "compute_dtype"}
    if unknown:
        raise GluonFaceError(f"loss {name!r} does not take {sorted(unknown)}; fix: remove them from the loss config")
    import importlib
    cls = getattr(importlib.import_module(f"gluonface.losses.{module_name}"), cls_name)
    if cls_name == "BatchHardTripletLoss":
        return cls(**args)
    return cls(num_classes, embedding_size, **args)
