"""Tests generated from the registry: every registered model gets all of them.

Build; finite loss on one step and a lower loss after 20 steps on a tiny batch; `.keras`
save / load with identical predictions and no custom_objects; `model.export` SavedModel
with identical predictions; get_config / from_config round trip; two inits differ.
Ensembles are built from two tiny trained members and checked against `build_ensemble`.
"""

import numpy as np
import pytest

import keras
import tensorflow as tf

import mmkeras
from mmkeras import training
from mmkeras.ensembles import COMBINERS
from mmkeras.export import export_inference

KW = dict(num_classes=4, image_shape=(16, 16, 3), vocab_size=30, sequence_length=8)
MODELS = mmkeras.list_models()
BUILT = [n for n in MODELS if mmkeras.model_family(n) != "ensemble"]  # from KW alone
# Trained, saved and exported one by one: every model, except that the speed-run presets
# (`*_airbench_bilstm`) share each fusion with a `*_resnet9_bilstm` preset, so one of them
# stands for the rest (the branch itself: image_airbench, tests/test_speedrun.py).
TRAINED = [n for n in MODELS if not n.endswith("_airbench_bilstm") or n == "gmu_airbench_bilstm"]


def tiny_batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    text = rng.integers(2, KW["vocab_size"], size=(n, KW["sequence_length"])).astype("int32")
    for i in range(n):  # right padding of varied length, as the pipeline produces
        text[i, 2 + i % 5 :] = 0
    image = rng.integers(0, 256, size=(n, *KW["image_shape"])).astype("float32")
    return {"image": image, "text": text}, rng.integers(0, KW["num_classes"], n).astype("int64")


def _predict(model, x):
    return training.predict_proba(model, x)


@pytest.fixture(scope="module")
def members():
    """An image-only and a text-only model, a few steps trained, for the ensembles."""
    keras.utils.set_random_seed(0)
    x, y = tiny_batch()
    models = [mmkeras.create_model(name, **KW) for name in ("seed_image", "seed_text")]
    for model in models:
        training.compile_model(model, learning_rate=3e-3)
        for _ in range(3):
            model.train_on_batch(x, {"label": y})
    return models


def validation_batch():
    return tiny_batch(16, seed=9)


@pytest.fixture(scope="module", params=TRAINED)
def trained(request):
    name = request.param
    if mmkeras.model_family(name) == "ensemble":
        # Few fitting steps: test_ensembles checks the fits themselves.
        model = mmkeras.create_model(name, members=request.getfixturevalue("members"),
                                     validation_data=validation_batch(), steps=30)
        return name, model, None, None
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
    assert families == {"image", "text", "fused", "ensemble"}
    assert "seed_concat" in MODELS and "seed_image" in MODELS and "seed_text" in MODELS
    assert mmkeras.list_models("ensemble_*") == [
        "ensemble_average", "ensemble_product", "ensemble_stacking", "ensemble_vote", "ensemble_weighted"]


@pytest.mark.parametrize("name", MODELS)
def test_model_info_names_the_parts(name):
    info = mmkeras.model_info(name)
    assert info["name"] == name and info["family"] == mmkeras.model_family(name)
    parts = {k: info[k] for k in ("image_branch", "text_branch", "fusion")}
    used = {k for k, v in parts.items() if v is not None}
    expected = {"image": {"image_branch"}, "text": {"text_branch"}, "ensemble": set(),
                "fused": {"image_branch", "text_branch", "fusion"}}[info["family"]]
    assert used == expected, info
    if info["family"] == "ensemble":
        assert name == f"ensemble_{info['method']}"
    if info["fusion"] is not None:
        assert info["fusion"] in mmkeras.list_fusions()
    info["family"] = "changed"  # a copy: the registry is not changed through it
    assert mmkeras.model_family(name) != "changed"


def test_every_fusion_has_its_three_presets():
    for fusion in mmkeras.list_fusions():
        presets = {mmkeras.model_info(n)["image_branch"]: n for n in MODELS
                   if mmkeras.model_info(n)["fusion"] == fusion}
        seed = "seed_concat" if fusion == "concat" else f"{fusion}_cnn_lstm"
        assert presets.get("simple_cnn") == seed and presets.get("resnet9") == f"{fusion}_resnet9_bilstm"
        assert presets.get("airbench") == f"{fusion}_airbench_bilstm"
        assert mmkeras.model_info(seed)["text_branch"] == "lstm"
        assert mmkeras.model_info(f"{fusion}_resnet9_bilstm")["text_branch"] == "bilstm"


def test_build_and_learn(trained, members):
    name, model, first, last = trained
    assert set(model.input) <= {"image", "text"} and "label" in model.output
    x = tiny_batch(4, seed=5)[0]
    p = _predict(model, x)
    assert p.shape == (4, KW["num_classes"]) and np.allclose(p.sum(-1), 1, atol=1e-5)
    if mmkeras.model_family(name) == "ensemble":
        # The registered name combines the members with its own method.
        method = mmkeras.model_info(name)["method"]
        assert model.name == name and type(model.get_layer(f"combine_{method}")) is COMBINERS[method]
        assert not np.allclose(p, _predict(members[0], x), atol=1e-3)
        return
    assert np.isfinite(first) and np.isfinite(last)
    assert last < first, f"{name}: loss {first:.4f} -> {last:.4f} after 20 steps"


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


@pytest.mark.parametrize("name", BUILT)
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
