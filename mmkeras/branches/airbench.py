"""The speed-run image branch `airbench` (Jordan, 2024: 94% on CIFAR-10 in 3.8 A100-seconds).

Frozen patch whitening (`PatchWhitening`, adapted to the training images by
`mmkeras.speedrun`) -> GELU -> three blocks of [Conv3x3 -> MaxPool(2) -> BatchNorm -> GELU ->
Conv3x3 -> BatchNorm -> GELU] -> global max pool -> x `scale`. Convolutions start as the
identity on their first channels (`PartialIdentity`); BatchNorm has no learned scale, Keras
momentum 0.6 (the moving statistics follow the last few batches, which short schedules
need) and a shift trained at 64x the learning rate (`ScaledBias`). Train it with `mmkeras.speedrun.fit_speedrun` (the benchmark does for
`image_airbench`); any other training works too, less well.
"""

import keras

from mmkeras.branches.airbench_layers import PartialIdentity, PatchWhitening, ScaledBias
from mmkeras.branches.base import ImageFeatures, register_image_branch
from mmkeras.branches.image import _check_spatial


def _conv_norm_gelu(x, filters, *, name, momentum, pool=False):
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer=PartialIdentity(),
                            name=f"{name}_conv")(x)
    if pool:
        x = keras.layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    x = keras.layers.BatchNormalization(momentum=momentum, epsilon=1e-5, center=False, scale=False,
                                        name=f"{name}_bn")(x)
    x = ScaledBias(gain=8.0, name=f"{name}_shift")(x)
    return keras.layers.Activation("gelu", name=f"{name}_gelu")(x)


@register_image_branch(
    "airbench",
    defaults={
        # airbench94's widths: 0.24 GFLOPs per 32x32 image (forward); about 310 training
        # images/s in mixed_bfloat16 on 2 Zen 4 cores (190 in float32).
        "small": {"widths": (64, 256, 256), "bn_momentum": 0.6, "whiten_kernel": 2, "whiten_epsilon": 0.02,
                  "scale": 1 / 9},
        # airbench95-like widths (x2.6 the compute).
        "base": {"widths": (128, 384, 384), "bn_momentum": 0.6, "whiten_kernel": 2, "whiten_epsilon": 0.02,
                  "scale": 1 / 9},
    },
)
def airbench(image, *, prefix, widths, bn_momentum, whiten_kernel, whiten_epsilon, scale):
    """vector: (B, widths[-1]) global max pool x `scale`; feature_map: the last block's
    output, (B, ~H/8, ~W/8, widths[-1]).

    whiten_epsilon: added to each patch component's variance before it is scaled to 1.
    airbench's 5e-4 lifts the faintest components ~45x, and pixel noise with them: at
    Gaussian noise 0.1 a model without noise training fell to chance (0.10, 9,000 CIFAR-10
    images, 8 epochs); 0.02 caps the lift at ~7x and kept 0.27 there at equal clean accuracy
    (0.773 vs 0.769), and with noise on a quarter of the training images 0.92 of clean.
    Layers: {prefix}_whiten, {prefix}_whiten_gelu, {prefix}_block{b}_{1,2}_{conv,bn,shift,gelu},
    {prefix}_block{b}_1_pool, {prefix}_pool, {prefix}_scale.
    """
    widths = tuple(widths)
    if not widths or any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in widths):
        raise ValueError(f"`widths` must be a non-empty sequence of positive ints. Received widths={widths!r}")
    if not 0 <= bn_momentum < 1:
        raise ValueError(f"`bn_momentum` must be in [0, 1). Received bn_momentum={bn_momentum!r}")
    _check_spatial(image, branch="airbench", min_size=whiten_kernel - 1 + 2 ** len(widths))
    # float32 whatever the policy: the smallest components are scaled up ~45x, and bfloat16
    # rounding of the pixels (0.4%) would become noise of ~15% of their unit variance.
    x = PatchWhitening(kernel_size=whiten_kernel, epsilon=whiten_epsilon, dtype="float32",
                       name=f"{prefix}_whiten")(image)
    x = keras.layers.Activation("gelu", name=f"{prefix}_whiten_gelu")(x)
    for b, width in enumerate(widths, start=1):
        x = _conv_norm_gelu(x, width, name=f"{prefix}_block{b}_1", momentum=bn_momentum, pool=True)
        x = _conv_norm_gelu(x, width, name=f"{prefix}_block{b}_2", momentum=bn_momentum)
    vector = keras.layers.GlobalMaxPooling2D(name=f"{prefix}_pool")(x)
    vector = keras.layers.Rescaling(scale, name=f"{prefix}_scale")(vector)
    return ImageFeatures(vector=vector, feature_map=x)
