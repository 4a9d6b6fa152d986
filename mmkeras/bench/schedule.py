"""How long and in what batches a row trains, from the data: `plan_schedule`, and the
early stopping on the validation split that goes with it (`BestValidationStop`).

The rule (docs/benchmark.md, "Schedules that fit the data", prints its table):

1. Batch size: the model's preferred batch (`PREFERRED_BATCH`), halved while an epoch
   would have fewer than `MIN_STEPS_PER_EPOCH` optimizer steps (a small set still gets
   enough updates per epoch for the cosine schedule and for early stopping to see), and
   while a batch would hold more than `MAX_BATCH_PIXELS` image pixels (large images: memory
   and seconds per step); never below `MIN_BATCH`.
2. Epochs: enough to reach the family's `target_steps` optimizer steps, within its
   `[min_epochs, max_epochs]`: a small set is not run for a hundred epochs, a large one
   gets at least `min_epochs` passes. Steps per epoch are counted as
   max(min(MIN_STEPS_PER_EPOCH, n_train / MIN_BATCH), n_train / the largest batch the
   images allow), a smooth curve: more data never means more epochs.
3. Early stopping on the validation split (never the test split) restores the best
   epoch's weights, so the generous step targets cost time, not accuracy.

No constant here is fitted to one dataset: the step targets are round numbers of the
order that the reference runs needed (the seed recipe's 2,000 steps on 7,200 pairs; the
seed graph's 112 steps there lost 6.5 points; 12 steps of a warm-started fused row on
imbalanced data ended at the majority class).
"""

import dataclasses
import math

import keras

from mmkeras.bench.config import DEFAULT_BATCH_SIZE, SEED_BATCH_SIZE
from mmkeras.training import image_pixels


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A family's step target and the bounds on its epochs."""

    target_steps: int
    min_epochs: int
    max_epochs: int


# "fused_warm": a fused row whose branches start from trained ones (only its fusion layer,
# head and unfrozen branch learn): far fewer steps, but never a dozen.
SCHEDULES = {
    "image": Schedule(target_steps=3000, min_epochs=2, max_epochs=20),
    "text": Schedule(target_steps=1500, min_epochs=2, max_epochs=20),
    "fused": Schedule(target_steps=1500, min_epochs=3, max_epochs=30),
    "fused_warm": Schedule(target_steps=300, min_epochs=1, max_epochs=10),
}
MIN_STEPS_PER_EPOCH = 50
MIN_BATCH = 16
# 2**20 pixels: batch 1,024 at 32x32, 256 at 64x64, 16 at 224x224.
MAX_BATCH_PIXELS = 2 ** 20
# The seed graph (one small convolution, one LSTM) is overhead-bound on small CPUs and
# gains from large batches; the larger models do not (see config.py).
PREFERRED_BATCH = {"seed": SEED_BATCH_SIZE, "default": DEFAULT_BATCH_SIZE}
# Early stopping: epochs without a better validation accuracy before a row stops.
MIN_PATIENCE = 3


def preferred_batch(model):
    """The batch a registered model trains best at when the data allows it."""
    return PREFERRED_BATCH["seed" if model.startswith("seed_") else "default"]


def plan_schedule(family, n_train, image_size, *, preferred=DEFAULT_BATCH_SIZE, warm_start=False,
                  epochs=None, batch_size=None):
    """(epochs, batch_size) for a row of `family` ("image", "text" or "fused") on
    `n_train` training pairs of `image_size` (an int side or an (H, W) pair).

    preferred: the model's batch when the data allows it (`preferred_batch(name)`).
    warm_start: a fused row whose branches start from trained ones (`SCHEDULES["fused_warm"]`).
    epochs, batch_size: explicit choices (--epochs, --batch-size); each one given wins.
    """
    key = "fused_warm" if family == "fused" and warm_start else family
    if key not in SCHEDULES:
        raise ValueError(f"No schedule for family {family!r}; expected one of: image, text, fused.")
    if (epochs is None or batch_size is None) and (not isinstance(n_train, int) or n_train < 1):
        raise ValueError(f"`n_train` must be an int >= 1. Received n_train={n_train!r}.")
    if batch_size is None or epochs is None:
        pixels = image_pixels(image_size)
        ceiling = preferred  # the largest batch the images allow
        while ceiling > MIN_BATCH and ceiling * pixels > MAX_BATCH_PIXELS:
            ceiling //= 2
    if batch_size is None:
        batch_size = ceiling
        while batch_size > MIN_BATCH and math.ceil(n_train / batch_size) < MIN_STEPS_PER_EPOCH:
            batch_size //= 2
        batch_size = max(batch_size, MIN_BATCH)
    if epochs is None:
        # Steps per epoch as if the batch shrank smoothly to keep MIN_STEPS_PER_EPOCH: the
        # epochs then never grow with the data (halving the batch would make them jump).
        rule = SCHEDULES[key]
        steps = max(min(MIN_STEPS_PER_EPOCH, n_train / MIN_BATCH), n_train / ceiling)
        epochs = min(max(math.ceil(rule.target_steps / steps), rule.min_epochs), rule.max_epochs)
    return epochs, batch_size


def patience_for(epochs):
    """Epochs without improvement before stopping: a quarter of the row's, at least MIN_PATIENCE."""
    return max(MIN_PATIENCE, epochs // 4)


class BestValidationStop(keras.callbacks.EarlyStopping):
    """Early stopping on the validation accuracy of the main head ("label"), restoring the
    best epoch's weights at the end of every fit (also a fit that ran all its epochs).

    `epochs_seen` counts the epochs of the last fit, so a caller can find the best epoch
    among the epochs it recorded (see EpochCurve.follow).
    """

    def __init__(self, patience):
        super().__init__(monitor="val_accuracy", mode="max", patience=patience, restore_best_weights=True)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.epochs_seen = 0

    def on_epoch_end(self, epoch, logs=None):
        self.epochs_seen += 1
        super().on_epoch_end(epoch, logs)

    def get_monitor_value(self, logs):
        # A model with one dict output logs "val_accuracy"; one with auxiliary heads
        # logs each head's, the main one as "val_label_accuracy".
        logs = logs or {}
        return logs.get("val_label_accuracy", logs.get("val_accuracy"))
