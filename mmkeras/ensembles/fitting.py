"""Fitting the combiners that learn: member weights (`weighted`) and a meta-classifier (`stacking`).

Both learn from the members' predictions on a validation split only. `validation_arrays`
is the one place that reads a `PairedDatasets`, and it reads nothing but its "validation"
split (through `training.split_arrays`, so a streamed manifest's images are decoded): never
the test split, nor the training split the members saw.
"""

import keras
import numpy as np
import tensorflow as tf

from mmkeras import training
from mmkeras.data.pipeline import PairedDatasets


def validation_arrays(validation_data):
    """(features dict, int labels) from a `PairedDatasets` (its validation split) or a tuple."""
    if isinstance(validation_data, PairedDatasets):
        features, labels = training.split_arrays(validation_data, "validation")
    elif isinstance(validation_data, (tuple, list)) and len(validation_data) == 2:
        features, labels = validation_data
    else:
        raise ValueError("`validation_data` must be a PairedDatasets (its 'validation' split is used) or a "
                         f"(features_dict, labels) tuple. Received {type(validation_data).__name__}.")
    if not isinstance(features, dict):
        raise ValueError(f"Validation features must be a dict such as {{'image': ..., 'text': ...}}. "
                         f"Received {type(features).__name__}.")
    labels = np.asarray(labels).reshape(-1)
    if labels.size == 0:
        raise ValueError("The validation split is empty: build the datasets with validation_fraction > 0 "
                         "or pass a non-empty (features, labels) tuple.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"Validation labels must be integer class ids. Received dtype {labels.dtype}.")
    sizes = {key: len(value) for key, value in features.items()}
    if any(size != labels.size for size in sizes.values()):
        raise ValueError(f"Validation features and labels differ in length: features {sizes}, "
                         f"labels {labels.size}.")
    return features, labels


def member_probabilities(members, features, batch_size=256):
    """(M, N, C) float64: each member's class probabilities on `features`."""
    return np.stack([training.predict_proba(m, features, batch_size).astype("float64") for m in members])


def _check_probs_labels(member_probs, labels):
    member_probs = np.asarray(member_probs, dtype="float64")
    labels = np.asarray(labels).reshape(-1)
    if member_probs.ndim != 3 or member_probs.shape[1] != labels.size:
        raise ValueError(f"Expected member probabilities of shape (members, {labels.size}, classes). "
                         f"Received shape {member_probs.shape}.")
    num_classes = member_probs.shape[-1]
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"Validation labels must lie in [0, {num_classes}). Received range "
                         f"[{labels.min()}, {labels.max()}].")
    return member_probs, labels


def fit_member_weights(member_probs, labels, steps=300, learning_rate=0.1, epsilon=1e-7):
    """Member weights on the simplex minimising the NLL of `sum_m w_m p_m` on (probs, labels).

    The weights are parametrised as `softmax(z)` and `z` is fitted by Adam on the exact
    gradient, full batch, from `z = 0` (equal weights): deterministic, no randomness.
    The objective is convex in the weights, so a member whose predictions do not help
    (noise) is driven towards weight 0.

    member_probs: (M, N, C) member probabilities; labels: (N,) int class ids.
    Returns float32 weights of shape (M,) summing to 1.
    """
    member_probs, labels = _check_probs_labels(member_probs, labels)
    # Each member's probability of the true class: (M, N).
    true = np.clip(member_probs[:, np.arange(labels.size), labels], epsilon, 1.0)
    z = np.zeros(len(true))
    m, v = np.zeros_like(z), np.zeros_like(z)
    beta1, beta2 = 0.9, 0.999
    for step in range(1, steps + 1):
        w = _softmax(z)
        mixture = w @ true
        grad_w = -(true / mixture).mean(axis=1)
        grad_z = w * (grad_w - w @ grad_w)
        m = beta1 * m + (1 - beta1) * grad_z
        v = beta2 * v + (1 - beta2) * grad_z**2
        z -= learning_rate * (m / (1 - beta1**step)) / (np.sqrt(v / (1 - beta2**step)) + 1e-12)
    return _softmax(z).astype("float32")


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def fit_stacking(combiner, member_probs, labels, steps=300, learning_rate=0.05):
    """Fit a `StackingCombiner`'s meta-classifier on (member probabilities, labels), then freeze it.

    A copy of the combiner (same config) is trained full batch with Adam for `steps`
    steps on the member predictions alone, so no member runs again; its weights are
    copied into `combiner`. Returns the fitted meta-classifier's final loss.
    """
    member_probs, labels = _check_probs_labels(member_probs, labels)
    num_members = member_probs.shape[0]
    if num_members != combiner.num_members:
        raise ValueError(f"Combiner '{combiner.name}' expects {combiner.num_members} members; "
                         f"received predictions of {num_members}.")
    keys = [f"member_{i}" for i in range(num_members)]
    inputs = {k: keras.Input(shape=(member_probs.shape[-1],), name=k) for k in keys}
    learner = combiner.__class__.from_config(combiner.get_config())
    meta = keras.Model(inputs, learner([inputs[k] for k in keys]), name="stacking_meta_classifier")
    meta.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy")
    x = {k: member_probs[i].astype("float32") for i, k in enumerate(keys)}
    data = tf.data.Dataset.from_tensors((x, labels.astype("int32"))).repeat(steps)
    history = meta.fit(data, epochs=1, verbose=0, shuffle=False)
    if not combiner.built:
        combiner.build([(None, member_probs.shape[-1])] * num_members)
    combiner.set_weights(learner.get_weights())
    combiner.trainable = False
    return float(history.history["loss"][-1])
