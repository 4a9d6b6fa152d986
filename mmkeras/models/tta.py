"""Test-time augmentation as a model: predictions averaged over views of each image.

    model = mmkeras.models.with_flip_tta(trained)        # the image and its mirror
    model = mmkeras.models.with_tta(trained, shift=1)    # + one-pixel shifts: six views

Models trained with random flips and shifts are (nearly) invariant to them, so averaging
views removes part of their variance: a cheap accuracy gain for a few times the inference
cost, and no retraining. With `shift`, the image and its mirror weigh one half and the
four shifted views (up-left and down-right, each mirrored too) the other half: airbench's
"level 2". The wrapper is a plain functional model (the trained model inside it,
registered `HorizontalFlip` / `Shift` layers, an `Average` per output), so it saves, loads
and exports like any mmkeras model; `unwrap_tta` returns the trained model inside.
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


@keras.saving.register_keras_serializable(package="mmkeras")
class Shift(keras.layers.Layer):
    """Moves images (NHWC) by `offset` pixels down and right (negative: up and left),
    borders filled by reflection, size unchanged."""

    def __init__(self, offset=1, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(offset, int) or isinstance(offset, bool) or offset == 0:
            raise ValueError(f"`offset` must be a non-zero int. Received offset={offset!r}")
        self.offset = offset

    def call(self, images):
        s = abs(self.offset)
        padded = ops.pad(images, [[0, 0], [s, s], [s, s], [0, 0]], mode="reflect")
        shape = ops.shape(images)
        start = s - self.offset
        return ops.slice(padded, [0, start, start, 0], shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "offset": self.offset}


def _views(image, shift):
    """[(view, weight)] of an image tensor: itself and its mirror, and with `shift` the
    mirrored pairs shifted by +-shift, weights summing to 1."""
    mirror = HorizontalFlip(name="tta_flip")
    plain = [image, mirror(image)]
    if not shift:
        return plain
    shifted = []
    for offset, tag in ((shift, "down"), (-shift, "up")):
        moved = Shift(offset, name=f"tta_shift_{tag}")(image)
        shifted += [moved, HorizontalFlip(name=f"tta_flip_{tag}")(moved)]
    return plain + plain + shifted  # an Average over these weighs the unshifted pair 1/2


def with_tta(model, *, shift=0, name=None):
    """`model` averaged over the image and its mirror (and, with `shift` pixels, the
    shifted views), output by output."""
    if not isinstance(model.input, dict) or "image" not in model.input:
        raise ValueError(f"Test-time augmentation needs a model with an 'image' input; model '{model.name}' "
                         f"takes {getattr(model, 'input_names', None) or model.input}.")
    if not isinstance(shift, int) or isinstance(shift, bool) or shift < 0:
        raise ValueError(f"`shift` must be an int >= 0. Received shift={shift!r}")
    inputs = {k: keras.Input(shape=v.shape[1:], dtype=v.dtype, name=k) for k, v in model.input.items()}
    outputs, cache = [], {}
    for view in _views(inputs["image"], shift):
        if id(view) not in cache:  # a repeated view is computed once
            out = model(dict(inputs, image=view))
            cache[id(view)] = out if isinstance(out, dict) else {"label": out}
        outputs.append(cache[id(view)])
    # The head may be float32 over a mixed-precision body: average in float32.
    averaged = {k: keras.layers.Average(name=k, dtype="float32")([o[k] for o in outputs]) for k in outputs[0]}
    return keras.Model(inputs, averaged, name=name or f"{model.name}_tta")


def with_flip_tta(model, name=None):
    """`model` averaged over the image and its left-right mirror, output by output."""
    return with_tta(model, shift=0, name=name)


def unwrap_tta(model):
    """The trained model inside a `with_tta` wrapper (`model` itself if it is none)."""
    if any(isinstance(layer, (HorizontalFlip, Shift)) for layer in model.layers):
        inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
        if len(inner) == 1:
            return inner[0]
    return model
