"""Convolutional image branches trained from scratch: simple_cnn, vgg, resnet, resnet9.

Each builder takes pixels already in [0, 1] (see `image_branch`), any number of
channels, and returns `ImageFeatures(vector, feature_map)`.
"""

import keras

from mmkeras.branches.base import ImageFeatures, register_image_branch

# BatchNorm momentum 0.9 (not Keras' 0.99): the moving statistics settle within the
# first epoch, which matters for the short CPU trainings this library targets.
_BN_MOMENTUM = 0.9


def _pooled_vector(feature_map, *, prefix, dropout, pooling="avg"):
    pool = keras.layers.GlobalMaxPooling2D if pooling == "max" else keras.layers.GlobalAveragePooling2D
    vector = pool(name=f"{prefix}_pool")(feature_map)
    if dropout:
        vector = keras.layers.Dropout(dropout, name=f"{prefix}_dropout")(vector)
    return vector


def _check_spatial(image, *, branch, min_size):
    height, width = image.shape[1], image.shape[2]
    if branch == "simple_cnn" and (height is None or width is None):
        raise ValueError(
            "Image branch 'simple_cnn' flattens its feature map, so it needs a known "
            f"image height and width. Received image.shape={image.shape}"
        )
    for side in (height, width):
        if side is not None and side < min_size:
            raise ValueError(
                f"Image branch '{branch}' needs images of at least {min_size}x{min_size} "
                f"pixels. Received image.shape={image.shape}"
            )


@register_image_branch(
    "simple_cnn",
    defaults={"small": {"filters": 32}, "base": {"filters": 64}},
)
def simple_cnn(image, *, prefix, filters):
    """The classic seed graph: Conv2D(filters, 3x3, relu) -> MaxPool(2) -> Flatten.

    vector: (B, ((H-2)//2) * ((W-2)//2) * filters), the flattened pooled map.
    feature_map: (B, (H-2)//2, (W-2)//2, filters).
    Layers: {prefix}_conv, {prefix}_pool, {prefix}_flatten.
    """
    _check_spatial(image, branch="simple_cnn", min_size=4)
    x = keras.layers.Conv2D(filters, (3, 3), activation="relu", name=f"{prefix}_conv")(image)
    feature_map = keras.layers.MaxPooling2D((2, 2), name=f"{prefix}_pool")(x)
    vector = keras.layers.Flatten(name=f"{prefix}_flatten")(feature_map)
    return ImageFeatures(vector=vector, feature_map=feature_map)


def _conv_bn_relu(x, filters, *, name, strides=1):
    x = keras.layers.Conv2D(
        filters,
        3,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{name}_conv",
    )(x)
    x = keras.layers.BatchNormalization(momentum=_BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


@register_image_branch(
    "vgg",
    defaults={
        "small": {"width": 32, "blocks": 3, "dropout": 0.0},
        "base": {"width": 64, "blocks": 3, "dropout": 0.3},
    },
)
def vgg(image, *, prefix, width, blocks, dropout):
    """Small VGG: `blocks` x [2 x (Conv3x3 + BN + ReLU) + MaxPool(2)], widths doubling.

    vector: (B, width * 2**(blocks-1)), global average pool (+ dropout).
    feature_map: (B, ceil(H / 2**blocks), ceil(W / 2**blocks), width * 2**(blocks-1)).
    Layers: {prefix}_block{b}_{1,2}_{conv,bn,relu}, {prefix}_block{b}_pool,
    {prefix}_pool[, {prefix}_dropout].
    Cost per 32x32 image, in multiply-adds (FLOPs = 2x): width 32: 39M; width 64: 153M.
    """
    _check_spatial(image, branch="vgg", min_size=1)
    x = image
    for b in range(1, blocks + 1):
        filters = width * 2 ** (b - 1)
        x = _conv_bn_relu(x, filters, name=f"{prefix}_block{b}_1")
        x = _conv_bn_relu(x, filters, name=f"{prefix}_block{b}_2")
        x = keras.layers.MaxPooling2D(2, padding="same", name=f"{prefix}_block{b}_pool")(x)
    return ImageFeatures(vector=_pooled_vector(x, prefix=prefix, dropout=dropout), feature_map=x)


def _basic_block(x, filters, *, strides, name):
    """ResNet basic block: 2 x Conv3x3 + BN, projection shortcut when the shape changes.

    The last BN starts at gamma = 0 so every block starts as the identity, which makes
    short trainings from scratch markedly more stable.
    """
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(
            filters,
            1,
            strides=strides,
            use_bias=False,
            kernel_initializer="he_normal",
            name=f"{name}_shortcut_conv",
        )(x)
        shortcut = keras.layers.BatchNormalization(
            momentum=_BN_MOMENTUM, name=f"{name}_shortcut_bn"
        )(shortcut)
    x = _conv_bn_relu(x, filters, strides=strides, name=f"{name}_1")
    x = keras.layers.Conv2D(
        filters,
        3,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{name}_2_conv",
    )(x)
    x = keras.layers.BatchNormalization(
        momentum=_BN_MOMENTUM, gamma_initializer="zeros", name=f"{name}_2_bn"
    )(x)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.ReLU(name=f"{name}_out")(x)


@register_image_branch(
    "resnet",
    defaults={
        # 49M multiply-adds (~0.1 GFLOPs) and 0.31M parameters per 32x32 image; about
        # 3-5 min per CIFAR-10 epoch (batch 128) on 2 CPU cores.
        "small": {"width": 32, "depth": 1, "stages": 3, "stem_stride": 1, "dropout": 0.0},
        # 421M multiply-adds (~0.84 GFLOPs) and 2.8M parameters per 32x32 image.
        "base": {"width": 64, "depth": 2, "stages": 3, "stem_stride": 1, "dropout": 0.0},
    },
)
def resnet(image, *, prefix, width, depth, stages, stem_stride, dropout):
    """CIFAR-style ResNet: Conv3x3 stem, `stages` stages of `depth` basic blocks.

    Stage s (1-based) has width * 2**(s-1) filters; stages after the first start with a
    stride-2 block. `stem_stride=2` halves the resolution first (for inputs much larger
    than 32x32).

    vector: (B, width * 2**(stages-1)), global average pool (+ dropout).
    feature_map: (B, H / (stem_stride * 2**(stages-1)), ..., width * 2**(stages-1)).
    Layers: {prefix}_stem_{conv,bn,relu}, {prefix}_stage{s}_block{b}_*, {prefix}_pool
    [, {prefix}_dropout].
    Cost per 32x32 image, in multiply-adds (FLOPs = 2x): width 32 / depth 1: 49M;
    width 32 / depth 2: 106M; width 64 / depth 2: 421M (doubling the width costs x4).
    """
    if stem_stride not in (1, 2):
        raise ValueError(f"`stem_stride` must be 1 or 2. Received stem_stride={stem_stride!r}")
    if depth < 1 or stages < 1:
        raise ValueError(
            f"`depth` and `stages` must be >= 1. Received depth={depth!r}, stages={stages!r}"
        )
    _check_spatial(image, branch="resnet", min_size=1)
    x = _conv_bn_relu(image, width, strides=stem_stride, name=f"{prefix}_stem")
    for s in range(1, stages + 1):
        filters = width * 2 ** (s - 1)
        for b in range(1, depth + 1):
            strides = 2 if (s > 1 and b == 1) else 1
            x = _basic_block(x, filters, strides=strides, name=f"{prefix}_stage{s}_block{b}")
    return ImageFeatures(vector=_pooled_vector(x, prefix=prefix, dropout=dropout), feature_map=x)


@register_image_branch(
    "resnet9",
    defaults={
        # 0.93M parameters, 0.11 GFLOPs per 32x32 image; a CIFAR-10 epoch (45,000 images,
        # batch 128) takes 76-90 s in mixed_bfloat16 and about 114 s in float32 on 2 Zen 4
        # cores: the strongest image branch per CPU-minute here.
        "small": {"width": 24, "dropout": 0.0},
        # Page's full width: 6.5M parameters, 0.77 GFLOPs per 32x32 image.
        "base": {"width": 64, "dropout": 0.0},
    },
)
def resnet9(image, *, prefix, width, dropout):
    """The DAWNBench ResNet-9 (Page, 2018): few layers, wide at low resolution.

    prep Conv(w) -> layer1 Conv(2w)+MaxPool + residual [2 x Conv(2w)] -> layer2
    Conv(4w)+MaxPool -> layer3 Conv(8w)+MaxPool + residual [2 x Conv(8w)], every Conv a
    3x3 Conv + BN + ReLU. Pooling (not strided convolution) does the downsampling, which
    is cheaper on CPUs, and most of the compute runs at 8x8 and 4x4.

    vector: (B, 8 * width), global max pool (+ dropout).
    feature_map: (B, ceil(H / 8), ceil(W / 8), 8 * width).
    Layers: {prefix}_prep_*, {prefix}_layer{1,2,3}_*, {prefix}_layer{1,3}_res{1,2}_*,
    {prefix}_layer{1,3}_add, {prefix}_pool[, {prefix}_dropout].
    """
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"`width` must be a positive int. Received width={width!r}")
    _check_spatial(image, branch="resnet9", min_size=1)
    x = _conv_bn_relu(image, width, name=f"{prefix}_prep")
    for layer, filters, residual in ((1, 2 * width, True), (2, 4 * width, False), (3, 8 * width, True)):
        name = f"{prefix}_layer{layer}"
        x = _conv_bn_relu(x, filters, name=name)
        x = keras.layers.MaxPooling2D(2, padding="same", name=f"{name}_pool")(x)
        if residual:
            r = _conv_bn_relu(x, filters, name=f"{name}_res1")
            r = _conv_bn_relu(r, filters, name=f"{name}_res2")
            x = keras.layers.Add(name=f"{name}_add")([x, r])
    return ImageFeatures(vector=_pooled_vector(x, prefix=prefix, dropout=dropout, pooling="max"), feature_map=x)
