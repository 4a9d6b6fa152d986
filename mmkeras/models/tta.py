"""Test-time augmentation as a model: predictions averaged over an image and its mirror.

    model = mmkeras.models.with_flip_tta(trained)   # same {"image", "text"} inputs and outputs

Models trained with random horizontal flips are (nearly) mirror-invariant, so averaging the
two views removes part of their variance: a cheap accuracy gain for twice the inference
cost, and no retraining. The wrapper is a plain functional model (the trained model inside
it, a registered `HorizontalFlip` layer, an `Average` per output), so it saves, loads and
exports like any mmkeras model.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="mmkeras")
class HorizontalFlip(keras.layers.Layer):
    """Mirrors images left-right (NHWC), always: the deterministic half of flip TTA."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def call(self, images):
        return ops.flip(images, axis=-2)

    def compute_output_shape(self, input_shape):
        return input_shape


def with_flip_tta(model, name=None):
    """`model` averaged over the image and its left-right mirror, output by output."""
    if not isinstance(model.input, dict) or "image" not in model.input:
        raise ValueError(f"with_flip_tta needs a model with an 'image' input; model '{model.name}' "
                         f"takes {getattr(model, 'input_names', None) or model.input}.")
    inputs = {k: keras.Input(shape=v.shape[1:], dtype=v.dtype, name=k) for k, v in model.input.items()}
    flipped = dict(inputs, image=HorizontalFlip(name="tta_flip")(inputs["image"]))
    plain, mirrored = model(inputs), model(flipped)
    if not isinstance(plain, dict):
        plain, mirrored = {"label": plain}, {"label": mirrored}
    # The head may be float32 over a mixed-precision body: average in float32.
    outputs = {k: keras.layers.Average(name=k, dtype="float32")([plain[k], mirrored[k]]) for k in plain}
    return keras.Model(inputs, outputs, name=name or f"{model.name}_tta")
