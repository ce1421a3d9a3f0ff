"""ROC and CMC plots (PNG, matplotlib's Agg backend: no display needed)."""
import numpy as np


def _figure():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt, plt.subplots(figsize=(5.5, 4.2), dpi=110)


def plot_roc(curves, path, title="ROC"):
    """Write ROC curves (log-scale FAR) to ``path``.

    Args:
        curves: ``{label: {"fpr": (K,), "tpr": (K,)}}`` as returned under ``roc`` by the metric functions.
    """
    plt, (fig, ax) = _figure()
    for label, c in curves.items():
        fpr, tpr = np.asarray(c["fpr"]), np.asarray(c["tpr"])
        keep = fpr > 0  # log axis: FAR 0 cannot be drawn
        ax.plot(fpr[keep], tpr[keep], label=label, linewidth=1.5)
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_cmc(curves, path, title="CMC"):
    """Write CMC curves to ``path``; ``curves`` = ``{label: [rate at rank 1, 2, ...]}``."""
    plt, (fig, ax) = _figure()
    for label, c in curves.items():
        ax.plot(np.arange(1, len(c) + 1), c, marker="o", markersize=3, label=label)
    ax.set_xlabel("rank")
    ax.set_ylabel("identification rate")
    ax.set_ylim(0, 1.01)
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
