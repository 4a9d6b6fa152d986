"""Auxiliary (multitask) heads, whose loss weights travel with the model."""

import keras

from mmkeras.argument_checks import check_non_negative


@keras.saving.register_keras_serializable(package="mmkeras")
class AuxiliaryHead(keras.layers.Dense):
    """A `Dense` head trained beside the main one, with its weight in the total loss.

    The weight is part of the layer's config, so a model reloaded from a `.keras` file
    compiles with the weights it was built with (`training.compile_settings` reads them
    through `aux_loss_weights`).

    Args:
        units: output width (the class count).
        loss_weight: the head's weight in the total loss, >= 0.
        **kwargs: any other `keras.layers.Dense` argument.
    """

    def __init__(self, units, *, loss_weight, **kwargs):
        loss_weight = check_non_negative("loss_weight", loss_weight)
        super().__init__(units, **kwargs)
        self.loss_weight = loss_weight

    def get_config(self):
        return {**super().get_config(), "loss_weight": self.loss_weight}


def aux_loss_weights(model):
    """{output name: loss weight} of the model's outputs that an `AuxiliaryHead` produces."""
    if not isinstance(model.output, dict):
        return {}
    # Each output tensor records the layer that produced it.
    heads = {key: tensor._keras_history.operation for key, tensor in model.output.items()}
    return {key: head.loss_weight for key, head in heads.items() if isinstance(head, AuxiliaryHead)}
