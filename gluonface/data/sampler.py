"""Epoch order and sharding by rank: one global permutation per epoch, cut into global batches.

Step ``s`` of an epoch has the global batch ``perm[s*B*P:(s+1)*B*P]`` (``B`` the per-part batch, ``P`` the
number of parts) and part ``k`` takes its slice ``[k*B:(k+1)*B]``. So ``P`` parts of batch ``B`` see exactly
the batches of one process with batch ``P*B`` that splits each batch over ``P`` devices with
``gluon.utils.split_and_load`` (slice ``k`` → device ``k``), and the result does not depend on how the
global batch is divided between processes and devices.

Every part gets the same number of steps, ``len(dataset) // (batch_size * num_parts)``; the few samples
left over are dropped for that epoch (a different few each epoch). An uneven step count would leave one
worker waiting forever in a synchronous all-reduce.
"""
import numpy as np

from gluonface.errors import GluonFaceError


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The global sample order of one epoch: ``(n,) int64``, a pure function of ``(n, seed, epoch)``."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch)]).permutation(n).astype(np.int64)


class ShardSampler:
    """Batches of dataset indices for one part (rank) of a sharded epoch.

    Args:
        n: dataset length. batch_size: per-part batch. seed: shuffling seed (same on every part).
        part_index / num_parts: this part and the number of parts.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, part_index: int = 0, num_parts: int = 1):
        if batch_size < 1 or num_parts < 1 or not 0 <= part_index < num_parts:
            raise GluonFaceError(f"bad sharding: batch_size={batch_size}, part_index={part_index}, "
                                 f"num_parts={num_parts}; fix: batch_size >= 1 and 0 <= part_index < num_parts")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.part_index, self.num_parts = part_index, num_parts
        self.steps_per_epoch = n // (batch_size * num_parts)
        if self.steps_per_epoch == 0:
            raise GluonFaceError(f"{n} samples cannot fill one batch of {batch_size} on each of {num_parts} "
                                 f"parts; fix: lower the batch size or use a larger dataset")
        self._epoch, self._mine = None, None

    def part_order(self, epoch: int) -> np.ndarray:
        """This part's indices for ``epoch`` in order: ``(steps_per_epoch * batch_size,) int64``."""
        if epoch != self._epoch:
            steps, b, p = self.steps_per_epoch, self.batch_size, self.num_parts
            perm = epoch_permutation(self.n, self.seed, epoch)
            # (steps, parts, batch): row s is global batch s, column k this part's slice of it.
            self._mine = perm[:steps * p * b].reshape(steps, p, b)[:, self.part_index].reshape(-1)
            self._epoch = epoch
        return self._mine

    def batch(self, epoch: int, step: int) -> np.ndarray:
        """Dataset indices of batch ``step`` of ``epoch``: ``(batch_size,) int64``."""
        if not 0 <= step < self.steps_per_epoch:
            raise IndexError(f"step {step} outside 0..{self.steps_per_epoch - 1}")
        order = self.part_order(epoch)
        return order[step * self.batch_size:(step + 1) * self.batch_size]
