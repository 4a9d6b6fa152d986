"""The speed-run training recipe for image models: airbench94's (Jordan, 2024), in Keras.

    model = mmkeras.create_model("image_airbench", num_classes=10)
    model, history, stats = mmkeras.speedrun.fit_speedrun(model, datasets, epochs=10)

What it does, and why (the published recipe; our translation of its constants):
- `PatchWhitening` layers are adapted to (up to 5,000) training images first.
- Nesterov SGD, momentum 0.85, at airbench's 11.5 per 1,024 examples of a summed loss:
  1.465e-3 x batch for our mean loss; a triangular schedule (0.2 -> 1 over the first 23% of
  steps, then down to 0.07); decoupled weight decay 8.87e-3 x the learning rate (airbench's
  coupled decay passes through the momentum, which multiplies it by 1 / (1 - 0.85)).
- Label smoothing 0.2 (`SparseLabelSmoothingCrossentropy`).
- Lookahead: every 5 steps the weights move to an exponential average of themselves whose
  decay grows as 0.95**5 x progress**3 (late steps are averaged, early ones are not).
- Alternating flips: `AlternatingFlip` layers (the "speedrun" augmentation) learn the epoch
  from `AlternateFlips`, so each image is seen mirrored on every other epoch.
- Test-time augmentation in the returned model (`mmkeras.models.with_tta`): mirror and
  one-pixel shifts, six views (airbench's "level 2").
Augmentation (flips, shifts of 2 pixels at 32x32, pixel noise on a quarter of the images) is the
model's own: build it with `image_augmentation="speedrun"`.

`optimizer="muon"` trains instead with airbench94_muon's optimizer (`mmkeras.filter_muon.
FilterMuon`: Muon steps on the convolution kernels, SGD on the rest, the rates decaying
linearly to 0, no lookahead); `recipe_for(n_train, image_size)` says which one, and at what
batch, the benchmark uses: Muon on images up to 64x64, at batch 2,000 where the set has
its published scale (it reaches SGD's accuracy on CIFAR-10 in 0.78-0.81x the seconds), a
batch of as many pixels on larger images (500 at 64x64) and a smaller batch on smaller
sets (7,200 images: 8 epochs of 250 beat SGD's 16 of 128 in half the seconds; 5,821 at
64x64: 9 of 250 beat SGD's 10 of 64 by 1.8 points); SGD on larger images, where Muon was
not measured.
"""

import math
import time

import keras
import numpy as np
from keras import ops

from mmkeras import training
from mmkeras.argument_checks import check_positive_int
from mmkeras.branches.airbench_layers import AlternatingFlip, PatchWhitening, ScaledBias
from mmkeras.explain.model_parts import walk_layers
from mmkeras.filter_muon import FilterMuon

LEARNING_RATE_PER_EXAMPLE = 11.5 / (1024 * (1 + 1 / (1 - 0.85)))
MOMENTUM = 0.85
WEIGHT_DECAY = 0.0153 / 11.5 / (1 - MOMENTUM)
LABEL_SMOOTHING = 0.2
LOOKAHEAD_EVERY = 5
WHITENING_IMAGES = 5000
# The schedule the benchmark plans for it: batch 512 where the set gives >= 50 steps an
# epoch (mmkeras.bench.schedule halves it on small sets), and enough epochs for
# TARGET_STEPS optimizer steps within [MIN_EPOCHS, MAX_EPOCHS]. airbench94 takes 485
# steps of 1,024 (9.9 epochs of 50,000); at half the batch we give it 880, 10 epochs of
# 45,000 CIFAR-10 pairs.
BATCH_SIZE = 512
TARGET_STEPS = 880
MIN_EPOCHS, MAX_EPOCHS = 8, 40
OPTIMIZERS = ("sgd", "muon")
# airbench94_muon (batch 2,000, 8 epochs, summed loss): Muon at 0.24 (momentum 0.6) on the
# kernels; SGD at 0.053 per example on biases, 0.67 on a head read as head(x) / 256, which
# behind our branch's x / 9 is 0.67 x 81 / 256**2; coupled decay 2e-6 per example a step.
MUON_BATCH_SIZE = 2000
MUON_FILTER_RATE, MUON_FILTER_MOMENTUM = 0.24, 0.6
MUON_BIAS_RATE, MUON_HEAD_RATE = 0.053, 0.67 * 81 / 256 ** 2
MUON_DECAY = 2e-6
# Where the benchmark uses it (`recipe_for`): images up to 64x64, 200 steps in all, at
# batch 2,000 where that gives MUON_MIN_STEPS an epoch (its published scale: 25 steps of
# 50,000 images), else at the batch halved until it does (at least MUON_MIN_BATCH). On
# CIFAR-10's 45,000 (2026-12-02): 8 epochs 0.9002 in 500 s of training, where airbench94's
# SGD took 619 s for 0.9008 (10 epochs). On 7,200 CIFAR-10 images (batch 250, 8 epochs):
# 0.807 in 135 s, where SGD took 284 s for 0.7985 (16 epochs of 128). On 5,821 CIFAR-10
# images upsampled to 64x64 (batch 250, 9 epochs): 0.789 in 633 s, where SGD took 729 s
# for 0.7707 (10 epochs of 64). Images larger than 32x32 start from a batch of as many
# pixels as 2,000 of 32x32 (MUON_BATCH_PIXELS: 500 at 64x64), for its memory.
MUON_MIN_STEPS, MUON_TARGET_STEPS, MUON_MAX_PIXELS, MUON_MIN_BATCH = 20, 200, 64 * 64, 32
MUON_BATCH_PIXELS = MUON_BATCH_SIZE * 32 * 32
# Fewer images need more passes than 200 steps give: on 1,800 CIFAR-10 images (batch 62),
# 8 epochs 0.643, 12 0.662, 16 0.689 (SGD's 16 x 32: 0.665); on 7,200, 8 epochs were enough
# (0.807 and 0.8035, two seeds; SGD's 16 x 128: 0.7985 and 0.803). Below MUON_SMALL_SET
# images the epochs rise as 1 / sqrt(images) from MIN_EPOCHS: 16 at 1,800.
MUON_SMALL_SET = 7200


# A time budget with room to spare may lengthen the schedule up to this many times its
# planned epochs (the triangular schedule is laid out over the epochs it is given): on
# CIFAR-10, 10 epochs 0.8992, 20 epochs 0.9065 (2026-12-02). More data-passes keep helping
# a little, as in airbench's longer runs; `extended_epochs`.
MAX_EXTENSION = 2


def planned_epochs(n_train, batch_size, optimizer="sgd"):
    """Epochs of a speed-run training on `n_train` images in batches of `batch_size` with
    `optimizer` ("sgd": TARGET_STEPS; "muon": MUON_TARGET_STEPS, and more passes below
    MUON_SMALL_SET images), within [MIN_EPOCHS, MAX_EPOCHS]."""
    steps = math.ceil(check_positive_int("n_train", n_train) / check_positive_int("batch_size", batch_size))
    target, least = TARGET_STEPS, MIN_EPOCHS
    if _check_optimizer(optimizer) == "muon":
        target = MUON_TARGET_STEPS
        # The fewest epochs e >= MIN_EPOCHS x sqrt(MUON_SMALL_SET / n_train), in integers:
        # e**2 must reach ceil(MIN_EPOCHS**2 x MUON_SMALL_SET / n_train).
        square = -(-MIN_EPOCHS ** 2 * MUON_SMALL_SET // n_train)
        least = max(math.isqrt(square - 1) + 1, MIN_EPOCHS)
    return min(max(math.ceil(target / steps), least), MAX_EPOCHS)


def recipe_for(n_train, image_size=None):
    """(optimizer, batch_size) of the speed-run recipe on `n_train` images of `image_size`
    (a side or (H, W); None: unknown). Images no larger than MUON_MAX_PIXELS: airbench94_muon's
    "muon" at MUON_BATCH_SIZE (or MUON_BATCH_PIXELS' worth of larger images), halved until an
    epoch has MUON_MIN_STEPS steps (never below MUON_MIN_BATCH; `muon_optimizer` scales the
    kernels' rate to it). Larger images: airbench94's ("sgd", BATCH_SIZE) (the benchmark
    halves that batch on small sets)."""
    n_train = check_positive_int("n_train", n_train)
    batch_size = MUON_BATCH_SIZE
    if image_size is not None:
        pixels = training.image_pixels(image_size)
        if pixels > MUON_MAX_PIXELS:
            return "sgd", BATCH_SIZE
        batch_size = min(batch_size, MUON_BATCH_PIXELS // pixels)
    while batch_size // 2 >= MUON_MIN_BATCH and n_train < batch_size * MUON_MIN_STEPS:
        batch_size //= 2
    return "muon", batch_size


def _check_optimizer(optimizer):
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"`optimizer` must be one of {OPTIMIZERS}. Received optimizer={optimizer!r}")
    return optimizer


def extended_epochs(epochs):
    """The most epochs a time budget with room may give a speed-run planned for `epochs`."""
    return max(min(MAX_EXTENSION * check_positive_int("epochs", epochs), MAX_EPOCHS), epochs)


@keras.saving.register_keras_serializable(package="mmkeras")
class SparseLabelSmoothingCrossentropy(keras.losses.Loss):
    """Cross-entropy of int labels against probabilities, with label smoothing (Keras'
    sparse loss has none)."""

    def __init__(self, label_smoothing=LABEL_SMOOTHING, name="sparse_label_smoothing_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"`label_smoothing` must be in [0, 1). Received label_smoothing={label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        onehot = ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(onehot, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="mmkeras")
class Triangular(keras.optimizers.schedules.LearningRateSchedule):
    """`peak` x a piecewise-linear factor: `start` -> 1 over the first `warmup` fraction of
    `total_steps`, then 1 -> `end` at the last step."""

    def __init__(self, peak, total_steps, warmup=0.23, start=0.2, end=0.07):
        self.peak, self.total_steps = float(peak), int(total_steps)
        self.warmup, self.start, self.end = float(warmup), float(start), float(end)
        if self.total_steps < 1:
            raise ValueError(f"`total_steps` must be >= 1. Received total_steps={total_steps!r}")
        self.scheduled_steps = self.total_steps  # what `shorten` may give back, never exceed
        # Read in the traced train step, so that `shorten` reaches a fit under way.
        self._total = keras.Variable(float(self.total_steps), trainable=False, dtype="float32",
                                     name="total_steps")

    def shorten(self, total_steps):
        """Lay the rest of the schedule over `total_steps` in all, at most the steps it was
        made for (a fit that must end sooner, `FitScheduleToTime`, which gives steps back
        when the pace recovers)."""
        self.total_steps = max(min(int(total_steps), self.scheduled_steps), 1)
        self._total.assign(float(self.total_steps))

    def __call__(self, step):
        step = ops.cast(step, "float32")
        total = ops.convert_to_tensor(self._total)
        rise = ops.maximum(ops.floor(total * self.warmup), 1.0)
        fall = ops.maximum(total - rise, 1.0)
        up = self.start + (1.0 - self.start) * step / rise
        down = 1.0 + (self.end - 1.0) * ops.minimum((step - rise) / fall, 1.0)
        return self.peak * ops.where(step < rise, up, down)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup": self.warmup,
                "start": self.start, "end": self.end}


class Lookahead(keras.callbacks.Callback):
    """airbench's lookahead: every `every` steps, ema <- lerp(ema, w, 1 - decay) and w <- ema,
    for every float weight (BatchNorm statistics included), decay = 0.95**every x
    (step / total_steps)**3."""

    def __init__(self, total_steps, every=LOOKAHEAD_EVERY):
        super().__init__()
        self.total_steps, self.every = check_positive_int("total_steps", total_steps), every

    def on_train_begin(self, logs=None):
        self.step = 0
        self.weights = [w for w in self.model.weights if "float" in str(w.dtype)]
        # Copies in numpy: a tensor read from a variable may share its buffer on a CPU.
        self.average = [np.array(w.numpy(), dtype="float32") for w in self.weights]

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.every:
            return
        decay = 0.95 ** self.every * min(self.step / self.total_steps, 1.0) ** 3
        for i, w in enumerate(self.weights):
            self.average[i] += (1.0 - decay) * (w.numpy() - self.average[i])
            w.assign(self.average[i])

    def on_train_end(self, logs=None):
        # airbench ends on the average (its last update has decay 1): the steps after the
        # last multiple of `every` are dropped, as there.
        for w, average in zip(self.weights, self.average):
            w.assign(average)


class FitScheduleToTime(keras.callbacks.Callback):
    """A speed-run fit that must end within `seconds` (a time budget's deadline): after
    each epoch, if the epochs left would not fit at the fit's pace so far, the schedule
    (and the lookahead's) is laid over the epochs that do, and the fit stops after them.
    A triangular schedule cut off mid-way never anneals: on 7,200 images at half the
    machine's speed, 9 epochs of a 12-epoch schedule gave 0.759, where a whole 8-epoch
    schedule gives more. The pace is the mean epoch after the first (which traces the
    step), and the decision is made again each epoch, giving epochs back (up to the
    schedule's own) when the pace recovers: one slow epoch on a busy host once cut an
    18-epoch CIFAR-10 schedule to 14 that finished with 10 minutes to spare.
    """

    def __init__(self, seconds, schedule, lookahead, steps_per_epoch):
        super().__init__()
        self.seconds, self.schedule, self.lookahead = float(seconds), schedule, lookahead
        self.steps_per_epoch = check_positive_int("steps_per_epoch", steps_per_epoch)
        self.shortened_to = None  # the epochs the schedule is laid over (None: its own)

    def on_train_begin(self, logs=None):
        self.start = self.first = time.perf_counter()
        self.shortened_to = None
        self.scheduled = math.ceil(self.schedule.scheduled_steps / self.steps_per_epoch)

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        if epoch == 0:  # its pace includes tracing the train step: not the fit's
            self.first = now
            return
        done, pace = epoch + 1, (now - self.first) / epoch
        fit = done + max(int((self.seconds - (now - self.start)) // max(pace, 1e-9)), 0)
        epochs = max(min(fit, self.scheduled), done)
        if epochs != (self.shortened_to or self.scheduled):
            self.schedule.shorten(epochs * self.steps_per_epoch)
            if self.lookahead is not None:
                self.lookahead.total_steps = self.schedule.total_steps
            self.shortened_to = epochs if epochs < self.scheduled else None
        if self.shortened_to is not None and done >= self.shortened_to:
            self.model.stop_training = True


class AlternateFlips(keras.callbacks.Callback):
    """Tells the model's `AlternatingFlip` layers (nested ones too) the epoch at its start."""

    def on_epoch_begin(self, epoch, logs=None):
        for layer in flip_layers(self.model):
            layer.set_epoch(epoch)


def flip_layers(model):
    """The `AlternatingFlip` layers of `model`, nested models included."""
    return [layer for layer in walk_layers(model) if isinstance(layer, AlternatingFlip)]


def adapt_whitening(model, datasets, max_images=WHITENING_IMAGES, seed=0):
    """Adapt `model`'s PatchWhitening layers to up to `max_images` training images (seeded
    sample), each to the pixels it receives. Returns the layers adapted."""
    layers = [layer for layer in model.layers if isinstance(layer, PatchWhitening)]
    if not layers:
        return []
    n = datasets.size("train")
    rows = np.sort(np.random.default_rng(seed).permutation(n)[:max_images])
    features, _ = training.split_arrays(datasets, "train", rows)
    image = model.input["image"] if isinstance(model.input, dict) else model.input
    for layer in layers:
        # What reaches the layer (rescaled pixels; augmentation is off outside training).
        pixels = keras.Model(image, layer.input).predict(features["image"], batch_size=256, verbose=0)
        layer.adapt(np.asarray(pixels, dtype="float32"))
    return layers


def speedrun_schedule(optimizer, total_steps, batch_size):
    """The learning rate of `optimizer` ("sgd": airbench94's triangle; "muon": a multiplier
    of FilterMuon's rates, 1 -> 0 linearly, as airbench94_muon's)."""
    if optimizer == "muon":
        return Triangular(1.0, total_steps, warmup=0.0, start=1.0, end=0.0)
    return Triangular(LEARNING_RATE_PER_EXAMPLE * batch_size, total_steps)


def muon_optimizer(model, schedule, batch_size):
    """airbench94_muon's optimizer for `model`: FilterMuon with its rates per variable,
    translated to a mean loss (x batch) and to our parametrization (ScaledBias gains, the
    head behind the branch's 1/9 scale). Below batch 2,000 the kernels' step shrinks as
    sqrt(batch / 2,000): on 7,200 CIFAR-10 images, 8 epochs at batch 250 (a rate of 0.085)
    gave 0.807, 10 epochs at batch 500 (0.12) 0.8035 (2026-12-02)."""
    rates = {}
    for layer in walk_layers(model):
        gain = layer.gain if isinstance(layer, ScaledBias) else 1.0
        for variable in layer.trainable_weights:
            if len(variable.shape) == 1 and not isinstance(layer, keras.layers.Dense):
                rates[variable.path] = MUON_BIAS_RATE * batch_size / gain ** 2
    return FilterMuon(schedule, filter_rate=MUON_FILTER_RATE * math.sqrt(min(batch_size / MUON_BATCH_SIZE, 1.0)),
                      filter_momentum=MUON_FILTER_MOMENTUM, momentum=MOMENTUM, rates=rates,
                      default_rate=MUON_HEAD_RATE * batch_size, decay=MUON_DECAY * batch_size)


def compile_speedrun(model, *, total_steps, batch_size, schedule=None, optimizer="sgd"):
    """Compile `model` with the recipe's optimizer, schedule and loss (all outputs).
    schedule: its learning rate (None: `speedrun_schedule` over `total_steps`).
    optimizer: "sgd" (airbench94's Nesterov SGD) or "muon" (airbench94_muon's FilterMuon)."""
    _check_optimizer(optimizer)
    settings = training.compile_settings(model)
    schedule = schedule or speedrun_schedule(optimizer, total_steps, batch_size)
    if optimizer == "muon":
        settings["optimizer"] = muon_optimizer(model, schedule, batch_size)
    else:
        settings["optimizer"] = keras.optimizers.SGD(schedule, momentum=MOMENTUM, nesterov=True,
                                                     weight_decay=WEIGHT_DECAY)
    settings["loss"] = {k: SparseLabelSmoothingCrossentropy() for k in settings["loss"]}
    model.compile(**settings)
    return model


def with_views(model):
    """`model` under the recipe's test-time augmentation: mirror and one-pixel shifts, six
    views (`with_tta`, airbench's "level 2"): what fit_speedrun returns and the benchmark
    measures (and prices)."""
    from mmkeras.models.tta import with_tta

    return with_tta(model, shift=1)


def fit_speedrun(model, datasets, *, epochs, tta=True, callbacks=None, verbose="auto", seed=0, time_limit=None,
                 optimizer="sgd", **fit_kwargs):
    """Train image model `model` on `datasets` (a PairedDatasets, at its batch size) with
    the speed-run recipe. Returns (model, history dict, stats); the model is wrapped in
    test-time augmentation (`with_tta`, shifts of one pixel) unless tta=False.
    time_limit: seconds the fit must end within (None: no limit): if the epochs would not
    fit, the schedule is laid over the ones that do (`FitScheduleToTime`).
    optimizer: "sgd" (airbench94: Nesterov SGD, triangular schedule, lookahead) or "muon"
    (airbench94_muon: `FilterMuon`, linear decay, no lookahead).
    stats add "whitening_images", "tta" and "schedule_shortened_to" (epochs, or None)."""
    epochs = check_positive_int("epochs", epochs)
    _check_optimizer(optimizer)
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"`time_limit` must be a number of seconds > 0 or None. Received time_limit={time_limit!r}")
    adapted = adapt_whitening(model, datasets, seed=seed)
    steps_per_epoch = math.ceil(datasets.size("train") / datasets.batch_size)
    total_steps = epochs * steps_per_epoch
    schedule = speedrun_schedule(optimizer, total_steps, datasets.batch_size)
    compile_speedrun(model, total_steps=total_steps, batch_size=datasets.batch_size, schedule=schedule,
                     optimizer=optimizer)
    # airbench94_muon has no lookahead.
    lookahead = Lookahead(total_steps) if optimizer == "sgd" else None
    fitter = FitScheduleToTime(time_limit, schedule, lookahead, steps_per_epoch) if time_limit is not None else None
    recipe = [c for c in (lookahead, AlternateFlips(), fitter) if c is not None]
    history, stats = training.fit(model, datasets, epochs=epochs, callbacks=[*recipe, *(callbacks or [])],
                                  verbose=verbose, **fit_kwargs)
    stats = dict(stats, whitening_images=min(WHITENING_IMAGES, datasets.size("train")) if adapted else 0, tta=tta,
                 schedule_shortened_to=fitter.shortened_to if fitter is not None else None, optimizer=optimizer)
    if tta:
        model = with_views(model)
    return model, history.history, stats
