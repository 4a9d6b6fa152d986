"""A SavedModel whose `serve` endpoint runs the model in inference mode."""

import keras
import tensorflow as tf


def input_signature(model):
    """tf.TensorSpecs of the model's named inputs (batch dimension free)."""
    inputs = model.input if isinstance(model.input, dict) else {model.input.name: model.input}
    return {name: tf.TensorSpec(t.shape, t.dtype, name=name) for name, t in inputs.items()}


def export_inference(model, path):
    """Write a SavedModel at `path` with a `serve` endpoint (dict in, dict out).

    `model.export()` traces the call without `training=False`; a nested sub-model (a
    keras.applications backbone) then runs its BatchNorm layers in training mode inside
    the SavedModel and predictions differ from `model.predict`. Passing it explicitly
    fixes that.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda inputs: model(inputs, training=False),
                         input_signature=[input_signature(model)])
    archive.write_out(str(path), verbose=False)
    return path
