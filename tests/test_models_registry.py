"""Tests generated from the registry: every registered model gets all of them.

Build; finite loss on one step and a lower loss after 20 steps on a tiny batch; `.keras`
save / load with identical predictions and no custom_objects; `model.export` SavedModel
with identical predictions; get_config / from_config round trip; two inits differ.
"""

import numpy as np
import pytest

import keras
import tensorflow as tf

import mmkeras
from mmkeras import training
from mmkeras.export import export_inference

KW = dict(num_classes=4, image_shape=(16, 16, 3), vocab_size=30, sequence_length=8)
MODELS = mmkeras.list_models()


def tiny_batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    text = rng.integers(2, KW["vocab_size"], size=(n, KW["sequence_length"])).astype("int32")
    for i in range(n):  # right padding of varied length, as the pipeline produces
        text[i, 2 + i % 5 :] = 0
    image = rng.integers(0, 256, size=(n, *KW["image_shape"])).astype("float32")
    return {"image": image, "text": text}, rng.integers(0, KW["num_classes"], n).astype("int64")


def _predict(model, x):
    return training.predict_proba(model, x)


@pytest.fixture(scope="module", params=MODELS)
def trained(request):
    name = request.param
    keras.utils.set_random_seed(1)
    model = mmkeras.create_model(name, **KW)
    training.compile_model(model, learning_rate=3e-3)
    x, y = tiny_batch()
    xs = training.select_inputs(model, x)
    ys = {k: y for k in model.output}
    first = model.train_on_batch(xs, ys, return_dict=True)["loss"]
    for _ in range(19):
        last = model.train_on_batch(xs, ys, return_dict=True)["loss"]
    return name, model, first, last


def test_registry_lists_every_family():
    families = {mmkeras.model_family(n) for n in MODELS}
    assert {"image", "text", "fused"} <= families
    assert "seed_concat" in MODELS and "seed_image" in MODELS and "seed_text" in MODELS


def test_build_and_learn(trained):
    name, model, first, last = trained
    assert np.isfinite(first) and np.isfinite(last)
    assert last < first, f"{name}: loss {first:.4f} -> {last:.4f} after 20 steps"
    assert set(model.input) <= {"image", "text"} and "label" in model.output
    p = _predict(model, tiny_batch(4, seed=5)[0])
    assert p.shape == (4, KW["num_classes"]) and np.allclose(p.sum(-1), 1, atol=1e-5)


def test_keras_round_trip(trained, tmp_path):
    name, model, _, _ = trained
    x = tiny_batch(8, seed=3)[0]
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects: everything is registered
    np.testing.assert_allclose(_predict(loaded, x), _predict(model, x), atol=1e-5)


def test_savedmodel_export(trained, tmp_path):
    name, model, _, _ = trained
    x = tiny_batch(8, seed=3)[0]
    export_inference(model, tmp_path / name)
    served = tf.saved_model.load(str(tmp_path / name))
    out = served.serve({k: tf.constant(v) for k, v in x.items()})
    np.testing.assert_allclose(np.asarray(out["label"]), _predict(model, x), atol=1e-5)


def test_config_round_trip(trained):
    name, model, _, _ = trained
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    x = tiny_batch(8, seed=4)[0]
    np.testing.assert_allclose(_predict(clone, x), _predict(model, x), atol=1e-5)
    assert [l.name for l in clone.layers] == [l.name for l in model.layers]


@pytest.mark.parametrize("name", MODELS)
def test_two_inits_differ(name):
    x = tiny_batch(4, seed=6)[0]
    outputs = {}
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        model = mmkeras.create_model(name, **KW)
        outputs[seed] = [np.asarray(model(x, training=t)["label"]) for t in (False, True)]
    inference_a, inference_b = outputs[1][0], outputs[2][0]
    if np.allclose(inference_a, inference_a[:1], atol=1e-6):
        # An untrained keras.applications backbone (BatchNorm with unit statistics) gives
        # near-zero features in inference mode: compare in training mode instead.
        inference_a, inference_b = outputs[1][1], outputs[2][1]
    assert not np.allclose(inference_a, inference_b, atol=1e-6)


def test_unimodal_models_take_paired_batches():
    """keras #23258: an extra dict key must never reach a single-input model by position."""
    x, y = tiny_batch(6)
    for name, own in (("seed_image", "image"), ("seed_text", "text")):
        model = mmkeras.create_model(name, **KW)
        assert set(model.input) == {"image", "text"}
        # Every Keras path takes the paired dict: call, predict, fit.
        direct = np.asarray(model(x)["label"])
        np.testing.assert_allclose(model.predict(x, verbose=0)["label"], direct, atol=1e-6)
        training.compile_model(model)
        model.fit(x, {"label": y}, epochs=1, verbose=0)
        # The other modality has no effect at all; its own modality does.
        before = np.asarray(model(x)["label"])
        other = "text" if own == "image" else "image"
        blanked = dict(x, **{other: np.zeros_like(x[other])})
        np.testing.assert_allclose(np.asarray(model(blanked)["label"]), before, atol=1e-6)
        changed = dict(x, **{own: x[own][::-1].copy()})
        assert not np.allclose(np.asarray(model(changed)["label"]), before, atol=1e-6)


@pytest.mark.parametrize("name", ["seed_concat", "seed_text"])
def test_padding_never_changes_prediction(name):
    x, _ = tiny_batch(6)
    model = mmkeras.create_model(name, **KW)
    longer = mmkeras.create_model(name, **dict(KW, sequence_length=20))
    longer.set_weights(model.get_weights())
    padded = dict(x, text=np.pad(x["text"], ((0, 0), (0, 12))))
    np.testing.assert_allclose(_predict(longer, padded), _predict(model, x), atol=1e-5)


def test_empty_text_is_defined():
    x, _ = tiny_batch(3)
    x["text"][:] = 0
    p = _predict(mmkeras.create_model("seed_concat", **KW), x)
    assert np.isfinite(p).all()


@pytest.mark.parametrize("kwargs, received", [
    (dict(num_classes=1), "num_classes=1"),
    (dict(image_shape=(16, 16)), "image_shape=(16, 16)"),
    (dict(size="huge"), "size='huge'"),
    (dict(widht=3), "widht"),
])
def test_bad_arguments(kwargs, received):
    with pytest.raises(ValueError) as err:
        mmkeras.create_model("seed_concat", **{**KW, **kwargs})
    assert received in str(err.value)


def test_unknown_model_lists_allowed():
    with pytest.raises(ValueError) as err:
        mmkeras.create_model("seed_concatt", **KW)
    assert "seed_concatt" in str(err.value) and "seed_concat" in str(err.value)


def test_list_models_wildcard():
    assert mmkeras.list_models("seed_*") == ["seed_concat", "seed_image", "seed_text"]
    assert mmkeras.list_models("nothing*") == []
