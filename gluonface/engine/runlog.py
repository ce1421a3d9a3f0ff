"""What a run records for people: ``train.log``, ``metrics.jsonl``, TensorBoard events and ``curves.png``.

Only the main worker creates a ``RunLogger``; hooks on other workers get ``None`` and record nothing.
Every record in ``metrics.jsonl`` is one JSON object per line with ``step`` and ``kind`` ('train' or
'verify') plus its values, appended and flushed as it happens, so a killed run keeps what it logged.
"""
import json
import logging
import os
import sys
import time


class RunLogger:
    """Text log + ``metrics.jsonl`` + TensorBoard writer for one run directory."""

    def __init__(self, run_dir, tensorboard=True, resume_step=None):
        """``resume_step``: None for a fresh run (earlier metrics are discarded), else the checkpoint step a
        resumed run starts from (records after it, logged by the interrupted run, are dropped)."""
        self.run_dir = run_dir
        os.makedirs(run_dir, exist_ok=True)
        self.log = logging.getLogger(f"gluonface.train.{os.path.abspath(run_dir)}")
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
        self._file_handler = logging.FileHandler(os.path.join(run_dir, "train.log"), encoding="utf-8")
        self._file_handler.setFormatter(fmt)
        self.log.addHandler(self._file_handler)
        path = os.path.join(run_dir, "metrics.jsonl")
        keep = [r for r in read_metrics(path) if r["step"] <= resume_step] \
            if resume_step is not None and os.path.isfile(path) else []
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in keep)
        os.replace(tmp, path)
        self._metrics = open(path, "a", encoding="utf-8")
        self.tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter
            # purge_step: TensorBoard hides what an interrupted run logged after the checkpoint
            self.tb = SummaryWriter(os.path.join(run_dir, "tb"), flush_secs=30,
                                    purge_step=None if resume_step is None else resume_step + 1)
        self.console = None     # set by the progress bar so lines do not break it

    def info(self, message):
        """A line in train.log and on the console."""
        self.log.info(message)
        if self.console is not None:
            self.console(message)
        else:
            print(message, file=sys.stderr, flush=True)

    def record(self, kind, step, values):
        """Append ``{"kind", "step", "time", **values}`` to metrics.jsonl and scalars to TensorBoard."""
        row = {"kind": kind, "step": int(step), "time": round(time.time(), 3)}
        row.update(values)
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()
        if self.tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.tb.add_scalar(f"{kind}/{key}", value, int(step))

    def close(self):
        self._metrics.close()
        if self.tb is not None:
            self.tb.close()
        self.log.removeHandler(self._file_handler)
        self._file_handler.close()


def read_metrics(path):
    """Rows of a ``metrics.jsonl`` (a torn last line from a killed run is skipped)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def plot_curves(metrics_path, out_path):
    """Write a PNG with training loss, learning rate and verification accuracy against step.

    Returns:
        ``out_path``, or None when there is nothing to plot yet.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = read_metrics(metrics_path)
    train = [r for r in rows if r.get("kind") == "train"]
    verify = [r for r in rows if r.get("kind") == "verify"]
    if not train and not verify:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train])
    axes[0].set_title("training loss")
    axes[1].plot([r["step"] for r in train], [r["lr"] for r in train])
    axes[1].set_title("learning rate")
    for name in sorted({r["set"] for r in verify}):
        pts = [r for r in verify if r["set"] == name]
        axes[2].plot([r["step"] for r in pts], [100 * r["accuracy"] for r in pts], marker="o", label=name)
    axes[2].set_title("verification accuracy (%)")
    if verify:
        axes[2].legend()
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = f"{out_path}.tmp-{os.getpid()}.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out_path)
    return out_path
