"""The `applications` image branch: any `keras.applications` model as a backbone."""

import keras
from keras import ops

from mmkeras.branches.base import ImageFeatures, register_image_branch


def application_names():
    """Names of the `keras.applications` models, e.g. "MobileNetV2", "ResNet50"."""
    return sorted(
        n
        for n in dir(keras.applications)
        if n[:1].isupper() and callable(getattr(keras.applications, n))
    )


def application_preprocess_input(backbone):
    """The `preprocess_input` of the `keras.applications` module defining `backbone`."""
    if backbone not in application_names():
        raise ValueError(
            f"Unknown keras.applications backbone {backbone!r}. Received "
            f"backbone={backbone!r}; expected one of: {', '.join(application_names())}"
        )
    module_name = getattr(keras.applications, backbone).__module__.rsplit(".", 1)[-1]
    return getattr(keras.applications, module_name).preprocess_input


@keras.saving.register_keras_serializable(package="mmkeras")
class ApplicationPreprocessing(keras.layers.Layer):
    """Applies `keras.applications.<module>.preprocess_input` of `backbone` in the graph.

    Those functions expect pixels in [0, 255]; `input_scale` multiplies the input first
    (255 for pixels already rescaled to [0, 1], 1 for raw pixels).
    """

    def __init__(self, backbone, input_scale=255.0, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.input_scale = float(input_scale)
        self._preprocess_input = application_preprocess_input(backbone)

    def call(self, images):
        images = ops.cast(images, self.compute_dtype)
        if self.input_scale != 1.0:
            images = images * ops.cast(self.input_scale, images.dtype)
        return self._preprocess_input(images)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": self.backbone,
            "input_scale": self.input_scale,
        }


def _size_pair(input_size):
    if input_size is None:
        return None
    if isinstance(input_size, int) and not isinstance(input_size, bool) and input_size > 0:
        return (input_size, input_size)
    if (
        isinstance(input_size, (tuple, list))
        and len(input_size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in input_size)
    ):
        return tuple(input_size)
    raise ValueError(
        "`input_size` must be None, a positive int or a (height, width) pair. "
        f"Received input_size={input_size!r}"
    )


@register_image_branch(
    "applications",
    defaults={
        # weights=None by default so that building never downloads anything; pass
        # weights="imagenet" (and usually trainable=False) for transfer learning.
        "small": {
            "backbone": "MobileNetV2",
            "weights": None,
            "trainable": True,
            "input_size": 32,
            "backbone_kwargs": {},
            "dropout": 0.0,
        },
        "base": {
            "backbone": "EfficientNetB0",
            "weights": None,
            "trainable": True,
            "input_size": 96,
            "backbone_kwargs": {},
            "dropout": 0.0,
        },
    },
)
def applications(
    image, *, prefix, backbone, weights, trainable, input_size, backbone_kwargs, dropout
):
    """A `keras.applications` model (include_top=False) as a nested sub-model.

    Graph: [{prefix}_resize (Resizing to `input_size`)] -> {prefix}_preprocess
    (`ApplicationPreprocessing`: x*255 then the backbone's own `preprocess_input`) ->
    {prefix}_backbone (nested model) -> {prefix}_pool [-> {prefix}_dropout].

    Args:
        backbone: a `keras.applications` model name, e.g. "MobileNetV2", "ResNet50".
        weights: None (random init) or "imagenet" (downloaded by Keras on first use),
            or a path to a weights file, as `keras.applications` accepts.
        trainable: False freezes the backbone (its BatchNorms then run in inference
            mode too).
        input_size: resize the image to this size (int or (height, width)) inside the
            graph; None keeps the input size.
        backbone_kwargs: extra keyword arguments for the constructor (e.g. alpha=0.35).

    vector: (B, C) global average pool of the backbone output.
    feature_map: (B, h, w, C) backbone output.
    """
    if backbone not in application_names():
        raise ValueError(
            f"Unknown keras.applications backbone {backbone!r}. Received "
            f"backbone={backbone!r}; expected one of: {', '.join(application_names())}"
        )
    if not (weights is None or isinstance(weights, str)):
        raise ValueError(
            "`weights` must be None, 'imagenet' or a path to a weights file. "
            f"Received weights={weights!r}"
        )
    if not isinstance(trainable, bool):
        raise ValueError(f"`trainable` must be True or False. Received trainable={trainable!r}")
    reserved = {"include_top", "weights", "input_shape", "input_tensor", "name", "pooling"}
    clashing = sorted(reserved & set(backbone_kwargs))
    if clashing:
        raise ValueError(
            f"`backbone_kwargs` may not set {clashing}; the branch sets them. Received "
            f"backbone_kwargs={backbone_kwargs!r}"
        )
    size = _size_pair(input_size)
    x = image
    if size is not None:
        x = keras.layers.Resizing(size[0], size[1], name=f"{prefix}_resize")(x)
    x = ApplicationPreprocessing(backbone, input_scale=255.0, name=f"{prefix}_preprocess")(x)
    model = getattr(keras.applications, backbone)(
        include_top=False,
        weights=weights,
        input_shape=tuple(x.shape[1:]),
        name=f"{prefix}_backbone",
        **backbone_kwargs,
    )
    model.trainable = trainable
    feature_map = model(x)
    vector = keras.layers.GlobalAveragePooling2D(name=f"{prefix}_pool")(feature_map)
    if dropout:
        vector = keras.layers.Dropout(dropout, name=f"{prefix}_dropout")(vector)
    return ImageFeatures(vector=vector, feature_map=feature_map)
