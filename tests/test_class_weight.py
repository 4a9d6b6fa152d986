"""Class weights: "balanced" and dict weights resolved by hand, and the loss of a fit with
auxiliary heads equal to the documented weighted loss computed by hand on its one batch."""

import keras
import numpy as np
import pytest

import mmkeras
from mmkeras import training
from mmkeras.training import resolve_class_weight


def test_balanced_and_dict_weights_by_hand():
    labels = np.array([0, 0, 0, 1, 2, 2])  # class 3 has no training row
    names = ["a", "b", "c", "d"]
    # n / (k * count_c) with n = 6 rows, k = 3 classes present.
    expected = [6 / (3 * 3), 6 / (3 * 1), 6 / (3 * 2), 1.0]
    weights = resolve_class_weight("balanced", labels, names)
    np.testing.assert_allclose(weights, expected, rtol=1e-6)
    assert np.mean(weights[labels]) == pytest.approx(1.0)  # they average 1 over the training rows
    np.testing.assert_allclose(resolve_class_weight({"b": 3.0, 2: 0.5}, labels, names), [1, 3, 0.5, 1])
    assert resolve_class_weight(None, labels, names) is None


@pytest.mark.parametrize("class_weight, message", [
    ("inverse", "Unknown class_weight='inverse'; expected one of: None, 'balanced'"),
    ({"zebra": 2.0}, "key 'zebra' is no class: expected an index in \\[0, 2\\] or one of the class names"),
    ({5: 2.0}, "key 5 is no class"),
    ({0: -1.0}, "must be a finite number >= 0. Received -1.0"),
    ([1.0, 2.0, 3.0], "must be None, 'balanced' or a dict"),
])
def test_bad_class_weights_say_what_they_got(class_weight, message):
    with pytest.raises(ValueError, match=message):
        resolve_class_weight(class_weight, np.array([0, 1, 2]), ["x", "y", "z"])


def _crossentropy(probs, labels):
    return -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0))


def test_weighted_loss_of_every_head_is_as_documented(tiny_datasets):
    """One batch holding every training row, a learning rate of 0 (no update) and a model
    without dropout or batch norm: the fit's loss is the loss of the weights it started from,
    sum over heads of loss_weight * mean_i(w[y_i] * crossentropy_i)."""
    labels = training.split_labels(tiny_datasets, "train")
    one_batch = tiny_datasets.with_batch_size(len(labels))
    keras.utils.set_random_seed(0)
    model = mmkeras.create_model("gmu_cnn_lstm", **tiny_datasets.model_kwargs(),
                                 aux_loss_weights={"image_label": 0.3, "text_label": 0.5})
    training.compile_model(model, learning_rate=0.0)
    probs = model.predict(training.select_inputs(model, tiny_datasets.features("train")), verbose=0)
    loss_weights = {"label": 1.0, "image_label": 0.3, "text_label": 0.5}
    assert set(probs) == set(loss_weights)

    counts = np.bincount(labels, minlength=tiny_datasets.num_classes)
    balanced = len(labels) / (tiny_datasets.num_classes * counts)
    assert counts.min() > 0 and not np.allclose(balanced, 1.0)  # the weights differ from none
    history, stats = training.fit(model, one_batch, epochs=1, verbose=0, class_weight="balanced")
    expected = {name: sum(w * np.mean(per_class[labels] * _crossentropy(probs[head], labels))
                          for head, w in loss_weights.items())
                for name, per_class in (("balanced", balanced), ("none", np.ones_like(balanced)))}
    assert history.history["loss"][0] == pytest.approx(expected["balanced"], rel=1e-5)
    assert abs(expected["balanced"] - expected["none"]) > 1e-3  # so the check above can fail
    np.testing.assert_allclose(stats["class_weights"], balanced, rtol=1e-6)
    # Accuracy stays unweighted.
    assert history.history["label_accuracy"][0] == pytest.approx(np.mean(probs["label"].argmax(-1) == labels))
