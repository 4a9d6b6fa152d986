"""A streamed manifest through every path a PairedData takes: training.fit and evaluate,
ensemble members and a fitted ensemble. (export_model of a manifest-trained model and the
exported model's predictions on the raw image files: tests/test_export_resize.py.)

The manifest holds the same pixels (lossless PNG) as the PairedData it was written from, so
each result must equal the in-memory twin's, not just exist.
"""

import keras
import numpy as np
import pytest

import mmkeras
from mmkeras import training
from mmkeras.data import load_manifest, make_datasets
from mmkeras.ensembles import fit_members

KWARGS = dict(batch_size=8, vocab_size=40, sequence_length=8, validation_fraction=0.25, seed=1)


@pytest.fixture(scope="module")
def twins(manifest_file):
    path, paired = manifest_file
    data = load_manifest(path, split_column="split", verbose=False)
    streamed, memory = make_datasets(data, **KWARGS), make_datasets(paired, **KWARGS)
    assert streamed.stream is not None and memory.stream is None
    return data, streamed, memory


def test_fit_and_evaluate_a_streamed_manifest(twins):
    _, streamed, memory = twins
    keras.utils.set_random_seed(0)
    model = mmkeras.create_model("seed_concat", **streamed.model_kwargs())
    _, stats = training.fit(model, streamed, epochs=1, verbose=0, class_weight="balanced")
    assert len(stats["class_weights"]) == streamed.num_classes
    report, pred = training.evaluate(model, streamed)
    # The same model on the in-memory twin's test split (the same pixels, the same tokens).
    memory_report, memory_pred = training.evaluate(model, memory)
    np.testing.assert_array_equal(pred, memory_pred)
    recalls, memory_recalls = report.pop("per_class_recall"), memory_report.pop("per_class_recall")
    assert report == memory_report and list(recalls.values()) == list(memory_recalls.values())
    assert list(recalls) == streamed.class_names
    features, labels = training.split_arrays(streamed, "test")
    np.testing.assert_array_equal(pred, training.predict_proba(model, features).argmax(-1))
    assert report["accuracy"] == pytest.approx(np.mean(pred == labels))


def test_ensemble_of_members_trained_on_a_streamed_manifest(twins):
    _, streamed, memory = twins
    keras.utils.set_random_seed(0)
    members, records = fit_members(["seed_image", "seed_text"], streamed, epochs=1, verbose=0,
                                   class_weight="balanced")
    assert all(len(r["stats"]["class_weights"]) == streamed.num_classes for r in records.values())
    weights = {}
    for name, ds in (("streamed", streamed), ("memory", memory)):
        ensemble = mmkeras.create_model("ensemble_weighted", members=members, validation_data=ds)
        weights[name] = ensemble.get_layer("combine_weighted").get_weights()
    # Fitted on the streamed validation split's decoded images: the in-memory twin's weights.
    assert len(weights["streamed"]) and not np.allclose(weights["streamed"][0], 0.5)
    for a, b in zip(weights["streamed"], weights["memory"]):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    report, pred = training.evaluate(ensemble, streamed)
    assert report["accuracy"] == pytest.approx(np.mean(pred == training.split_labels(streamed, "test")))
