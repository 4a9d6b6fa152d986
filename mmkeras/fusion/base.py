"""What every fusion layer shares: argument checks, input-shape checks, per-modality
projections, mask handling."""

import keras

from mmkeras.argument_checks import (  # noqa: F401  (re-exported for the fusion modules)
    check_bool, check_optional_positive_int, check_positive_int, check_rate)


class FusionLayer(keras.layers.Layer):
    """Base for layers that merge two modalities given as a list `[first, second]`.

    Subclasses declare `input_layout`: for each input, its name and the names of its
    axes. `split_input_shapes` checks a received shape against it, so a wrong wiring
    fails at build time with a message that says what was expected.
    """

    input_layout = (("image", ("batch", "features")), ("text", ("batch", "features")))

    def split_input_shapes(self, input_shape):
        """Validates `input_shape` against `input_layout`; returns one tuple per input."""
        expected = ", ".join(f"{name} ({', '.join(axes)})" for name, axes in self.input_layout)
        shapes = _as_shape_list(input_shape)
        ok = shapes is not None and len(shapes) == len(self.input_layout)
        if ok:
            for shape, (_, axes) in zip(shapes, self.input_layout):
                # The feature axis sizes weights, so it must be known.
                ok = ok and len(shape) == len(axes) and shape[-1] is not None
        if not ok:
            raise ValueError(
                f"`{type(self).__name__}` expects a list of inputs [{expected}] with a known "
                f"last axis. Received input shapes: {input_shape}"
            )
        return shapes

    def projections(self, units, activation=None, names=("image_projection", "text_projection")):
        """One `Dense(units, activation)` per name, in this layer's dtype policy, in order.

        Most fusions first project each modality to one common width; the layers keep
        the names given (weights are saved and copied by name).
        """
        return tuple(
            keras.layers.Dense(units, activation=activation, name=name, dtype=self.dtype_policy)
            for name in names
        )

    def build_projections(self, input_shape):
        """Checks `input_shape`, builds the two per-modality projections where this layer
        has them (`image_projection`, `text_projection` from `projections`) and returns the
        split shapes."""
        image_shape, text_shape = self.split_input_shapes(input_shape)
        if getattr(self, "image_projection", None) is not None:
            self.image_projection.build(image_shape)
            self.text_projection.build(text_shape)
        return image_shape, text_shape

    def compute_mask(self, inputs, mask=None):
        # Masks are consumed here: no output keeps a timestep axis to mask. Overriding
        # this also declares masking support, so Keras passes masks in without warning.
        return None


def _as_shape_list(input_shape):
    if not isinstance(input_shape, (list, tuple)) or not input_shape:
        return None
    if not all(isinstance(shape, (list, tuple)) for shape in input_shape):
        return None
    return [tuple(shape) for shape in input_shape]


def split_masks(mask, count=2):
    """Keras passes `mask` as None or as a list parallel to the inputs."""
    if mask is None:
        return (None,) * count
    return tuple(mask)
