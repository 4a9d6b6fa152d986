"""Layers of the speed-run image branch (`airbench`), after Jordan's airbench94 (2024) and
Page's / Balsam's hlb-CIFAR10 lineage, in Keras: all registered and serializable.

- `PatchWhitening`: a frozen first convolution over k x k patches whose kernel holds the
  principal components of the training images' patches scaled to unit variance (and their
  negatives), set by `adapt(images)`. The network then starts from decorrelated inputs,
  which is worth several epochs of a short training.
- `ScaledBias`: a per-channel shift `gain * b`: training `b` with learning rate lr moves the
  shift with lr * gain**2, so BatchNorm shifts get a 64x learning rate (gain 8) under one
  optimizer (Keras has no per-variable learning rate).
- `PartialIdentity`: an initializer that makes the first `min(in, out)` output channels
  of a 3x3 convolution the identity (torch's dirac_), the rest uniform in +-1/sqrt(fan_in).
- `RandomPixelNoise`: Gaussian pixel noise on a random part of each training batch
  (robustness to sensor noise; inactive at inference).
- `AlternatingFlip`: airbench's flips: each training image mirrored on every other epoch
  (the epoch set by `mmkeras.speedrun`'s callback), random flips until one is set.
"""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="mmkeras")
class PartialIdentity(keras.initializers.Initializer):
    """Conv kernel (kh, kw, in, out): output channel o < in passes input channel o through
    (centre tap 1, all else 0); the other channels are uniform in +-1/sqrt(fan_in)."""

    def __init__(self, seed=None):
        self.seed = seed

    def __call__(self, shape, dtype=None):
        kh, kw, cin, cout = shape
        base = keras.initializers.VarianceScaling(1.0 / 3.0, mode="fan_in", distribution="uniform",
                                                  seed=self.seed)(shape, dtype=dtype)
        n = min(cin, cout)
        identity = np.zeros(shape, dtype="float32")
        identity[kh // 2, kw // 2, np.arange(n), np.arange(n)] = 1.0
        keep = np.ones(shape, dtype=bool)
        keep[..., :n] = False
        return ops.where(keep, base, ops.convert_to_tensor(identity, dtype=dtype))

    def get_config(self):
        return {"seed": self.seed}


@keras.saving.register_keras_serializable(package="mmkeras")
class ScaledBias(keras.layers.Layer):
    """x + gain * b, one b per channel (zeros at first)."""

    def __init__(self, gain=8.0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(gain, (int, float)) or isinstance(gain, bool) or gain <= 0:
            raise ValueError(f"`gain` must be a number > 0. Received gain={gain!r}")
        self.gain = float(gain)

    def build(self, input_shape):
        self.bias = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="bias")

    def call(self, inputs):
        return inputs + ops.cast(self.gain * self.bias, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "gain": self.gain}


@keras.saving.register_keras_serializable(package="mmkeras")
class PatchWhitening(keras.layers.Layer):
    """A frozen `kernel_size` x `kernel_size` convolution ("valid") onto 2 * k * k * C
    channels: the patches' principal directions divided by sqrt(variance + epsilon), then
    the same negated; a trainable bias per channel.

    Inputs are first standardised per channel. Until `adapt` is called the directions are
    the patch's own pixels (variance 1): the layer works, unadapted, as a plain patch
    embedding.
    """

    def __init__(self, kernel_size=2, epsilon=5e-4, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(kernel_size, int) or isinstance(kernel_size, bool) or kernel_size < 1:
            raise ValueError(f"`kernel_size` must be an int >= 1. Received kernel_size={kernel_size!r}")
        if not isinstance(epsilon, (int, float)) or epsilon <= 0:
            raise ValueError(f"`epsilon` must be a number > 0. Received epsilon={epsilon!r}")
        self.kernel_size, self.epsilon = kernel_size, float(epsilon)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"PatchWhitening needs a known number of channels. Received shape {input_shape}")
        k, dims = self.kernel_size, self.kernel_size ** 2 * channels
        self.mean = self.add_weight(shape=(channels,), initializer="zeros", trainable=False, name="mean")
        self.std = self.add_weight(shape=(channels,), initializer="ones", trainable=False, name="std")
        eye = np.eye(dims, dtype="float32").reshape(k, k, channels, dims)
        self.kernel = self.add_weight(shape=(k, k, channels, 2 * dims), trainable=False, name="kernel",
                                      initializer=keras.initializers.Constant(np.concatenate([eye, -eye], -1)))
        self.bias = self.add_weight(shape=(2 * dims,), initializer="zeros", name="bias")

    def adapt(self, images, chunk=500):
        """Set mean, std and kernel from `images` (N, H, W, C), in the scale this layer
        receives (e.g. [0, 1] after the branch's rescaling)."""
        images = np.asarray(images, dtype="float32")
        if images.ndim != 4 or len(images) == 0:
            raise ValueError(f"`images` must be a non-empty (N, H, W, C) array. Received shape {images.shape}")
        if not self.built:
            self.build(images.shape)
        k, channels = self.kernel_size, images.shape[-1]
        mean = images.mean(axis=(0, 1, 2))
        std = images.std(axis=(0, 1, 2)) + 1e-6
        dims = k * k * channels
        covariance, count = np.zeros((dims, dims)), 0
        for start in range(0, len(images), chunk):
            x = (images[start:start + chunk] - mean) / std
            h, w = x.shape[1] - k + 1, x.shape[2] - k + 1
            # (n, h, w, k, k, C) in the kernel's (kh, kw, C) order.
            patches = np.stack([np.stack([x[:, i:i + h, j:j + w] for j in range(k)], axis=3)
                                for i in range(k)], axis=3).reshape(-1, dims).astype("float64")
            covariance += patches.T @ patches
            count += len(patches)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance / count)
        order = np.argsort(eigenvalues)[::-1]
        scaled = eigenvectors[:, order] / np.sqrt(eigenvalues[order] + self.epsilon)
        kernel = scaled.reshape(k, k, channels, dims)
        self.mean.assign(mean)
        self.std.assign(std)
        self.kernel.assign(np.concatenate([kernel, -kernel], -1).astype("float32"))

    def call(self, inputs):
        x = (inputs - ops.cast(self.mean, inputs.dtype)) / ops.cast(self.std, inputs.dtype)
        x = ops.conv(x, ops.cast(self.kernel, x.dtype), strides=1, padding="valid")
        return x + ops.cast(self.bias, x.dtype)

    def compute_output_shape(self, input_shape):
        k = self.kernel_size
        side = [None if s is None else s - k + 1 for s in input_shape[1:3]]
        return (input_shape[0], *side, 2 * k * k * input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="mmkeras")
class RandomPixelNoise(keras.layers.Layer):
    """In training, each image gets Gaussian noise with probability `rate`, at a standard
    deviation drawn uniformly from [0, max_stddev] (in units of the pixel range `value_range`),
    clipped to that range. At inference it returns its input."""

    def __init__(self, max_stddev=0.15, rate=0.5, value_range=255.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        for arg, value in (("max_stddev", max_stddev), ("value_range", value_range)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"`{arg}` must be a number > 0. Received {arg}={value!r}")
        if not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ValueError(f"`rate` must be in [0, 1]. Received rate={rate!r}")
        self.max_stddev, self.rate, self.value_range = float(max_stddev), float(rate), float(value_range)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        x = ops.cast(inputs, "float32")
        batch = ops.shape(x)[0]
        chosen = ops.cast(keras.random.uniform((batch, 1, 1, 1), seed=self.seed_generator) < self.rate, "float32")
        stddev = keras.random.uniform((batch, 1, 1, 1), maxval=self.max_stddev * self.value_range,
                                      seed=self.seed_generator)
        noise = keras.random.normal(ops.shape(x), seed=self.seed_generator) * stddev * chosen
        return ops.cast(ops.clip(x + noise, 0.0, self.value_range), inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "max_stddev": self.max_stddev, "rate": self.rate,
                "value_range": self.value_range, "seed": self.seed}


@keras.saving.register_keras_serializable(package="mmkeras")
class AlternatingFlip(keras.layers.Layer):
    """airbench's "alternating" flips. In training, an image is mirrored left-right on
    every other epoch: half of the images on even epochs, the other half on odd ones, so
    two consecutive epochs show every image both ways, where random flips repeat the same
    view half the time (airbench: worth a fraction of an epoch at equal cost). Which half an
    image is in is the parity of its pixel sum (integer part), so no index has to travel
    with it; the epoch is `epoch`, a variable that `mmkeras.speedrun.fit_speedrun` sets at
    the start of every epoch (`set_epoch`). While it is -1 (a model trained another way)
    images are flipped at random, like `keras.layers.RandomFlip("horizontal")`. At
    inference it returns its input.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.epoch = self.add_weight(shape=(), dtype="int32", initializer=keras.initializers.Constant(-1),
                                     trainable=False, name="epoch")

    def set_epoch(self, epoch):
        self.epoch.assign(int(epoch))

    def call(self, inputs, training=False):
        if not training:
            return inputs
        batch = ops.shape(inputs)[0]
        # Integer pixel sums: exact and order-free, so an image's half never changes.
        parity = ops.mod(ops.sum(ops.cast(ops.floor(ops.cast(inputs, "float32")), "int32"), axis=(1, 2, 3)), 2)
        alternate = ops.not_equal(parity, ops.mod(ops.maximum(self.epoch, 0), 2))
        chance = keras.random.uniform((batch,), seed=self.seed_generator) < 0.5
        flip = ops.where(self.epoch < 0, chance, alternate)
        return ops.where(ops.reshape(flip, (-1, 1, 1, 1)), ops.flip(inputs, axis=2), inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
