"""Combiner layers: each takes the members' class probabilities and returns one distribution.

Every combiner is called on a list of M tensors of shape (batch, C), one per member, and
returns (batch, C) probabilities that sum to 1. All are registered serializable layers
written with `keras.ops`, so an ensemble reloads from `.keras` without `custom_objects`.
"""

import keras
import numpy as np
from keras import ops

from mmkeras.argument_checks import check_non_negative, check_open_unit, check_positive_int


class ProbabilityCombiner(keras.layers.Layer):
    """Base class: `[p_1, ..., p_M]`, each (batch, C) -> (batch, C).

    Subclasses that know their member count check it when built, so a combiner cannot be
    applied to the wrong number of members by accident.
    """

    num_members = None

    def build(self, input_shape):
        shapes = self._member_shapes(input_shape)
        if self.num_members is not None and len(shapes) != self.num_members:
            raise ValueError(f"Combiner '{self.name}' was configured for {self.num_members} members "
                             f"but is called on {len(shapes)}.")

    def _member_shapes(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or not input_shape or not isinstance(
                input_shape[0], (list, tuple)):
            raise ValueError(f"Combiner '{self.name}' takes a list of member probabilities, each "
                             f"(batch, classes). Received input shape {input_shape!r}.")
        shapes = [tuple(s) for s in input_shape]
        if len(shapes) < 2 or any(len(s) != 2 for s in shapes) or len({s[-1] for s in shapes}) != 1:
            raise ValueError(f"Combiner '{self.name}' needs at least 2 inputs of shape (batch, classes) "
                             f"with one class count. Received shapes {shapes}.")
        return shapes

    @staticmethod
    def stack(inputs):
        """(batch, M, C) from the list of member probabilities."""
        return ops.stack([ops.cast(p, "float32") for p in inputs], axis=1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])


@keras.saving.register_keras_serializable(package="mmkeras")
class AverageCombiner(ProbabilityCombiner):
    """Mean of the members' probabilities."""

    def call(self, inputs):
        return ops.mean(self.stack(inputs), axis=1)


@keras.saving.register_keras_serializable(package="mmkeras")
class WeightedCombiner(ProbabilityCombiner):
    """Convex combination `sum_m w_m p_m` with fixed (non-trainable) member weights.

    The weights live in the layer's `member_weights` variable, so they are saved with the
    model; `build_ensemble(method="weighted")` fits them on a validation split
    (`fitting.fit_member_weights`) and assigns them with `set_member_weights`.

    Args:
        num_members: how many members are combined (the length of `member_weights`).
    """

    def __init__(self, num_members, **kwargs):
        num_members = check_positive_int("num_members", num_members)
        super().__init__(**kwargs)
        self.num_members = num_members

    def build(self, input_shape):
        super().build(input_shape)
        self.member_weights = self.add_weight(
            name="member_weights", shape=(self.num_members,),
            initializer=keras.initializers.Constant(1.0 / self.num_members), trainable=False,
        )

    def set_member_weights(self, weights):
        """Assign weights: one non-negative number per member, summing to 1."""
        values = np.asarray(weights, dtype="float32").reshape(-1)
        if values.shape != (self.num_members,) or (values < 0).any() or abs(values.sum() - 1.0) > 1e-4:
            raise ValueError(f"Member weights must be {self.num_members} non-negative numbers summing to "
                             f"1. Received {values.tolist()}.")
        self.member_weights.assign(values)

    def call(self, inputs):
        weights = ops.reshape(ops.cast(self.member_weights, "float32"), (1, self.num_members, 1))
        return ops.sum(self.stack(inputs) * weights, axis=1)

    def get_config(self):
        return {**super().get_config(), "num_members": self.num_members}


@keras.saving.register_keras_serializable(package="mmkeras")
class VoteCombiner(ProbabilityCombiner):
    """Majority vote of the members' top classes, returned as a distribution.

    Each member casts one vote for its argmax; a class's score is its vote count plus
    `tie_break` times the members' mean probability for it, and the scores are normalised
    to sum to 1. Since `tie_break < 1` and mean probabilities lie in [0, 1], the bonus
    never outweighs a vote: it only orders classes with equal counts.

    Args:
        tie_break: weight of the mean probability, in (0, 1).
    """

    def __init__(self, tie_break=1e-3, **kwargs):
        tie_break = check_open_unit("tie_break", tie_break)
        super().__init__(**kwargs)
        self.tie_break = tie_break

    def call(self, inputs):
        probs = self.stack(inputs)
        votes = ops.sum(ops.one_hot(ops.argmax(probs, axis=-1), probs.shape[-1], dtype="float32"), axis=1)
        scores = votes + self.tie_break * ops.mean(probs, axis=1)
        return scores / ops.sum(scores, axis=-1, keepdims=True)

    def get_config(self):
        return {**super().get_config(), "tie_break": self.tie_break}


@keras.saving.register_keras_serializable(package="mmkeras")
class ProductCombiner(ProbabilityCombiner):
    """Normalised product of experts: `softmax(sum_m log p_m)`.

    Probabilities are clipped to `[epsilon, 1]` first, so one member's zero cannot veto a
    class outright (nor produce log(0)).

    Args:
        epsilon: lower clip of the probabilities, in (0, 1).
    """

    def __init__(self, epsilon=1e-7, **kwargs):
        epsilon = check_open_unit("epsilon", epsilon)
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, inputs):
        log_probs = ops.log(ops.clip(self.stack(inputs), self.epsilon, 1.0))
        return ops.softmax(ops.sum(log_probs, axis=1), axis=-1)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="mmkeras")
class StackingCombiner(ProbabilityCombiner):
    """A meta-classifier over the members' predictions: multinomial logistic regression.

    Features are the members' clipped log-probabilities, concatenated (M * C values); a
    `Dense(num_classes)` sub-layer `meta_dense` (zero-initialised, so fitting starts from
    the uniform distribution and is deterministic) maps them to logits, then a softmax.
    `build_ensemble(method="stacking")` fits it on validation predictions only
    (`fitting.fit_stacking`) and then freezes it.

    Args:
        num_members: how many members are combined.
        num_classes: the members' class count.
        epsilon: lower clip of the probabilities before the log, in (0, 1).
        l2: L2 penalty on the meta-classifier's kernel while it is fitted.
    """

    def __init__(self, num_members, num_classes, epsilon=1e-7, l2=1e-3, **kwargs):
        num_members = check_positive_int("num_members", num_members)
        num_classes = check_positive_int("num_classes", num_classes)
        epsilon = check_open_unit("epsilon", epsilon)
        l2 = check_non_negative("l2", l2)
        super().__init__(**kwargs)
        self.num_members = num_members
        self.num_classes = num_classes
        self.epsilon = epsilon
        self.l2 = l2
        self.meta_dense = keras.layers.Dense(
            num_classes, kernel_initializer="zeros", bias_initializer="zeros",
            kernel_regularizer=keras.regularizers.L2(l2) if l2 else None,
            name="meta_dense", dtype=self.dtype_policy,
        )
        # `trainable=False` from a saved config reached only this layer, made before its sub-layer.
        self.meta_dense.trainable = self.trainable

    def build(self, input_shape):
        super().build(input_shape)
        shapes = self._member_shapes(input_shape)
        if shapes[0][-1] != self.num_classes:
            raise ValueError(f"Combiner '{self.name}' was configured for {self.num_classes} classes but "
                             f"its inputs have {shapes[0][-1]}.")
        self.meta_dense.build((shapes[0][0], self.num_members * self.num_classes))

    def call(self, inputs):
        features = ops.concatenate(
            [ops.log(ops.clip(ops.cast(p, "float32"), self.epsilon, 1.0)) for p in inputs], axis=-1)
        return ops.softmax(ops.cast(self.meta_dense(features), "float32"), axis=-1)

    def get_config(self):
        return {**super().get_config(), "num_members": self.num_members, "num_classes": self.num_classes,
                "epsilon": self.epsilon, "l2": self.l2}


# method name -> combiner class; the order is the order of ENSEMBLE_METHODS.
COMBINERS = {
    "average": AverageCombiner,
    "weighted": WeightedCombiner,
    "vote": VoteCombiner,
    "product": ProductCombiner,
    "stacking": StackingCombiner,
}

ENSEMBLE_METHODS = tuple(COMBINERS)
