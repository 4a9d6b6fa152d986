"""Small custom layers shared by every model. All are registered serializable."""

import keras
from keras import ops

# Token id 0 is padding and 1 is the out-of-vocabulary token ([UNK]), as produced by
# keras.layers.TextVectorization.
PAD_ID = 0
OOV_ID = 1


@keras.saving.register_keras_serializable(package="mmkeras")
class NonEmptyTokens(keras.layers.Layer):
    """Gives every all-padding row one [UNK] token at position 0.

    An empty caption would otherwise produce a fully masked row, which has no defined
    recurrent output and breaks the cuDNN LSTM kernel on GPUs; with this guard an empty
    text reads as "unknown word", a defined input.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def call(self, token_ids):
        token_ids = ops.cast(token_ids, "int32")
        empty = ops.all(ops.equal(token_ids, PAD_ID), axis=-1, keepdims=True)
        first = ops.equal(ops.arange(ops.shape(token_ids)[-1]), 0)[None, :]
        return ops.where(ops.logical_and(empty, first), OOV_ID, token_ids)

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, token_ids):
        return keras.KerasTensor(token_ids.shape, dtype="int32")


@keras.saving.register_keras_serializable(package="mmkeras")
class HorizontalFlip(keras.layers.Layer):
    """Mirrors images left-right (NHWC), always: the deterministic half of flip TTA."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def call(self, images):
        return ops.flip(images, axis=-2)

    def compute_output_shape(self, input_shape):
        return input_shape
