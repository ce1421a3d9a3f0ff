"""Mixed precision for the loop: bf16 on CPU, fp16 with dynamic loss scaling on GPU (``train.amp``).

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
        self.mode = mode            # 'bf16' or 'fp16'
        self.trainers = []

    @staticmethod
    def create(mode, ctx, say=print):
        """None for ``'off'``; ``'auto'`` picks fp16 on GPU and bf16 on CPU when the hardware has the
        kernels (else float32, with a note); initialises AMP through ``gluonface.precision.init_amp``."""
        from gluonface.precision import init_amp, lowp_supported
        if mode == "off":
            return None
        gpu = ctx[0].device_type == "gpu"
        if mode == "auto":
            mode = "fp16" if gpu else "bf16"
            if not lowp_supported(mode, ctx[0]):
                say(f"note: train.amp=auto: no {mode} kernels on {ctx[0]}; training in float32")
                return None
        if mode == "fp16" and not gpu:
            raise GluonFaceError("train.amp=fp16 needs a GPU (CPU kernels have no fast float16 path); fix: use "
                                 "train.amp=bf16 on CPU, or auto")
        if mode == "bf16" and gpu:
            raise GluonFaceError("train.amp=bf16 runs on CPU only in MXNet 1.9.1; fix: use train.amp=fp16 "
                                 "on GPU, or auto")
        init_amp(mode, ctx[0])     # refuses hardware without the kernels, naming the fix
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
