"""Mixed precision for the loop: fp16 with dynamic loss scaling on GPU (``train.amp``); bf16 is refused.

MXNet's AMP (``mxnet.contrib.amp``) patches the operator namespaces, so ``amp.init`` must run before the
network is built and cannot be undone in a process: a run with AMP is its own process (``gluonface train``).
Parameters and optimizer states stay float32; the graph casts to the low precision type op by op.
fp16 needs loss scaling (small gradients underflow): the backbone and classifier trainers share one
dynamic ``LossScaler``, so both unscale by the same factor and skip the same overflowing steps.
"""
from gluonface.errors import GluonFaceError


class AmpPolicy:
    """What the loop needs from mixed precision: ``scale(losses)``, trainer setup and a checkpointable state."""

    def __init__(self, mode):
        self.mode = mode            # 'fp16' (bf16 training is refused before a policy is made)
        self.trainers = []

    @staticmethod
    def create(mode, ctx, say=print):
        """None for ``'off'``; ``'auto'`` picks fp16 on a GPU whose float16 kernels check out, else float32 (a
        note says why); ``'fp16'``/``'bf16'`` are checked by ``gluonface.precision.check_training_dtype``
        (bf16 training is refused, with the measured reason) before AMP is initialised."""
        from gluonface.precision import check_training_dtype, init_amp
        if mode == "off":
            return None
        gpu = ctx[0].device_type == "gpu"
        if mode == "auto":
            try:
                check_training_dtype("fp16", ctx[0])
            except GluonFaceError as exc:
                why = "bf16 training is refused (gluonface doctor says why)" if not gpu else str(exc)
                say(f"note: train.amp=auto: training in float32 on {ctx[0]} ({why})")
                return None
            mode = "fp16"
        check_training_dtype(mode, ctx[0])
        init_amp(mode, ctx[0])
        return AmpPolicy(mode)

    def convert(self, net, ctx):
        """The network to train (AMP works through the patched operators, so this is ``net`` itself)."""
        return net

    def init_trainers(self, trainers):
        """fp16: attach one shared dynamic loss scaler to every trainer."""
        if self.mode != "fp16":
            return
        from mxnet.contrib import amp
        self.trainers = list(trainers.values())
        first = self.trainers[0]
        amp.init_trainer(first)
        for t in self.trainers[1:]:
            t._amp_loss_scaler = first._amp_loss_scaler
            t._amp_original_scale = t._scale

    @property
    def loss_scale(self):
        return self.trainers[0]._amp_loss_scaler.loss_scale if self.trainers else 1.0

    def scale(self, losses):
        """Losses to back-propagate (inside ``autograd.record``): multiplied by the loss scale for fp16."""
        if self.mode != "fp16":
            return losses
        s = self.loss_scale
        for t in self.trainers:
            # the trainer divides the gradients by the same factor before the update
            t._scale = t._amp_original_scale / s
        return [l * s for l in losses]

    def state_dict(self):
        if not self.trainers:
            return {"mode": self.mode}
        scaler = self.trainers[0]._amp_loss_scaler
        return {"mode": self.mode, "loss_scale": scaler.loss_scale, "unskipped": scaler._unskipped}

    def load_state_dict(self, state):
        if self.trainers and "loss_scale" in state:
            scaler = self.trainers[0]._amp_loss_scaler
            scaler._loss_scale = float(state["loss_scale"])
            scaler._unskipped = int(state["unskipped"])
