"""Tests for `mmkeras.ensembles`: decision-level ensembles of separately trained members.

Each combiner is checked against numpy on fixed member outputs, and each method's
ensemble against numpy on its members' predictions; `weighted` drives a noise member's
weight to ~0; the fitted methods read the validation split and nothing else (a guard
raises on any other access); save / load keeps predictions (SavedModel export: the
registry-generated tests); members from one builder get unique names; mismatched members
get an error naming both; `create_model("ensemble_<method>", members=...)` builds one.
"""

import collections.abc
import dataclasses
import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

import mmkeras
from mmkeras import training
from mmkeras.ensembles import (COMBINERS, ENSEMBLE_METHODS, build_ensemble, ensemble_names,
                               fit_member_weights, fit_members, member_names)

EPS = 1e-7


# ---------------------------------------------------------------- numpy references

def np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_combine(method, probs, layer=None):
    """What `method` should output for member probabilities `probs` (M, N, C)."""
    probs = np.asarray(probs, dtype="float64")
    if method == "average":
        return probs.mean(axis=0)
    if method == "weighted":
        weights = layer.get_weights()[0]
        return np.einsum("m,mnc->nc", weights, probs)
    if method == "vote":
        tie_break = layer.tie_break if layer is not None else 1e-3
        votes = np.eye(probs.shape[-1])[probs.argmax(axis=-1)].sum(axis=0)
        scores = votes + tie_break * probs.mean(axis=0)
        return scores / scores.sum(axis=-1, keepdims=True)
    if method == "product":
        return np_softmax(np.log(np.clip(probs, EPS, 1.0)).sum(axis=0))
    if method == "stacking":
        kernel, bias = layer.get_weights()
        features = np.concatenate(list(np.log(np.clip(probs, EPS, 1.0))), axis=-1)
        return np_softmax(features @ kernel + bias)
    raise AssertionError(method)


def member_probs(models, features):
    return np.stack([training.predict_proba(m, features) for m in models])


def combiner_of(ensemble):
    return ensemble.layers[-1]


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def kw(tiny_datasets):
    return tiny_datasets.model_kwargs()


@pytest.fixture(scope="module")
def fitted(tiny_datasets, kw):
    """Three members trained separately: two from one builder, one passed as an object."""
    keras.utils.set_random_seed(0)
    members = ["seed_image", mmkeras.create_model("seed_text", **kw), "seed_image"]
    return fit_members(members, tiny_datasets, epochs=2, verbose=0)


@pytest.fixture(scope="module")
def members(fitted):
    return fitted[0]


@pytest.fixture(scope="module")
def ensembles(members, tiny_datasets):
    """One ensemble per method over the trained members (fitted ones on validation)."""
    return {m: build_ensemble(members, m, validation_data=tiny_datasets) for m in ENSEMBLE_METHODS}


def test_names_and_methods():
    assert ENSEMBLE_METHODS == ("average", "weighted", "vote", "product", "stacking")
    registered = mmkeras.list_models("ensemble_*")
    assert registered == sorted(f"ensemble_{m}" for m in ENSEMBLE_METHODS) == ensemble_names()
    assert all(mmkeras.model_family(n) == "ensemble" for n in registered)
    assert ensemble_names("ensemble_[wv]*") == ["ensemble_vote", "ensemble_weighted"]
    assert ensemble_names("seed_*") == [] and mmkeras.list_models("seed_*") != []
    for cls in COMBINERS.values():
        assert keras.saving.get_registered_name(cls) == f"mmkeras>{cls.__name__}"


# ---------------------------------------------------------------- combiners on fixed outputs

def fixed_outputs():
    """(M=3, N=6, C=4) member probabilities with the edge cases spelt out."""
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=(3, 6))
    # Row 0: a three-way vote tie (classes 0, 1, 2); mean probability favours class 1.
    probs[:, 0] = [[0.50, 0.45, 0.05, 0.00], [0.05, 0.50, 0.45, 0.00], [0.40, 0.15, 0.45, 0.00]]
    # Row 1: two votes for class 3 beat one confident vote for class 0.
    probs[:, 1] = [[0.97, 0.01, 0.01, 0.01], [0.20, 0.20, 0.20, 0.40], [0.30, 0.00, 0.00, 0.70]]
    # Row 2: one member gives class 2 exactly zero (product must stay finite).
    probs[:, 2] = [[0.10, 0.20, 0.00, 0.70], [0.25, 0.25, 0.25, 0.25], [0.10, 0.10, 0.70, 0.10]]
    return probs.astype("float32")


def make_combiner(method, num_members=3, num_classes=4):
    args = {"num_members": num_members, "num_classes": num_classes}
    params = inspect.signature(COMBINERS[method].__init__).parameters
    return COMBINERS[method](name=f"combine_{method}", **{k: v for k, v in args.items() if k in params})


@pytest.mark.parametrize("method", ENSEMBLE_METHODS)
def test_combiner_matches_numpy_on_fixed_outputs(method):
    probs = fixed_outputs()
    layer = make_combiner(method)
    layer([tf.constant(p) for p in probs])  # build
    if method == "weighted":
        layer.set_member_weights([0.5, 0.3, 0.2])
    if method == "stacking":
        rng = np.random.default_rng(1)
        layer.set_weights([rng.normal(size=(12, 4)).astype("float32"), rng.normal(size=4).astype("float32")])
    out = np.asarray(layer([tf.constant(p) for p in probs]))
    expected = np_combine(method, probs, layer)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert np.isfinite(out).all() and np.allclose(out.sum(-1), 1, atol=1e-5)
    if method == "vote":
        assert out[0].argmax() == 1  # the tie goes to the highest mean probability
        assert out[1].argmax() == 3  # two votes beat one, however confident
        np.testing.assert_allclose(out[1], [1, 0, 0, 2] / np.float32(3), atol=1e-3)
    if method == "product":
        assert out[2, 2] < 1e-5  # a zero is a (finite) veto


def test_weighted_weights_must_be_a_distribution():
    layer = make_combiner("weighted")
    layer([tf.zeros((1, 4))] * 3)
    with pytest.raises(ValueError, match="summing to 1"):
        layer.set_member_weights([0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="num_members"):
        COMBINERS["weighted"](num_members=0)
    with pytest.raises(ValueError, match="tie_break"):
        COMBINERS["vote"](tie_break=1.0)


# ---------------------------------------------------------------- ensembles of trained members

def test_members_and_methods_differ(ensembles, members, tiny_datasets):
    """So that the equality checks below cannot pass by accident."""
    features = tiny_datasets.arrays["test"][0]
    outputs = list(member_probs(members, features))
    outputs += [training.predict_proba(e, features) for e in ensembles.values()]
    for i, a in enumerate(outputs):
        for b in outputs[i + 1:]:
            assert not np.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("method", ENSEMBLE_METHODS)
def test_ensemble_matches_numpy_on_member_outputs(method, ensembles, members, tiny_datasets):
    ensemble = ensembles[method]
    features = tiny_datasets.arrays["test"][0]
    out = training.predict_proba(ensemble, features)
    expected = np_combine(method, member_probs(members, features), combiner_of(ensemble))
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert set(ensemble.input) == {"image", "text"} and list(ensemble.output) == ["label"]
    if method == "weighted":
        # The stored weights are the NLL fit on validation predictions.
        val_features, val_labels = tiny_datasets.arrays["validation"]
        refit = fit_member_weights(member_probs(members, val_features), val_labels)
        np.testing.assert_allclose(combiner_of(ensemble).get_weights()[0], refit, atol=1e-5)


def validation_nll(model, datasets):
    features, labels = datasets.arrays["validation"]
    probs = training.predict_proba(model, features)
    return -np.log(np.clip(probs[np.arange(len(labels)), labels], EPS, 1)).mean()


def test_fitting_lowers_validation_nll(ensembles, tiny_datasets):
    # Weighted starts from equal weights (= average); stacking from the uniform distribution.
    average = validation_nll(ensembles["average"], tiny_datasets)
    assert validation_nll(ensembles["weighted"], tiny_datasets) <= average
    assert validation_nll(ensembles["stacking"], tiny_datasets) < np.log(tiny_datasets.num_classes) - 0.05


def projection_member(seed, name, kw, images):
    """A confident member whose softmax reads a fixed random projection of standardised pixels."""
    image = keras.Input(kw["image_shape"], name="image")
    text = keras.Input((kw["sequence_length"],), dtype="int32", name="text")
    x = keras.layers.Flatten(name="image_flatten")(image)
    standardise = keras.layers.Normalization(axis=-1, name="image_standardise")
    standardise.adapt(images.reshape(len(images), -1).astype("float32"))
    init = keras.initializers.RandomNormal(stddev=0.3, seed=seed)
    x = keras.layers.Dense(kw["num_classes"], kernel_initializer=init, name="head_logits")(standardise(x))
    label = keras.layers.Softmax(name="label")(x)
    return keras.Model({"image": image, "text": text}, {"label": label}, name=name)


def test_weighted_gives_noise_member_near_zero_weight(tiny_datasets, kw):
    features = tiny_datasets.arrays["validation"][0]
    good = projection_member(1, "good", kw, features["image"])
    noise = projection_member(2, "noise", kw, features["image"])
    good_probs = training.predict_proba(good, features)
    labels = good_probs.argmax(-1)  # `good` is right by construction, and confident
    assert len(np.unique(labels)) >= 3 and good_probs.max(-1).mean() > 0.8
    noise_accuracy = (training.predict_proba(noise, features).argmax(-1) == labels).mean()
    assert noise_accuracy < 0.5, "the noise member must not know the labels"
    ensemble = build_ensemble([noise, good], "weighted", validation_data=(features, labels))
    weights = combiner_of(ensemble).get_weights()[0]
    assert weights[0] < 0.02 and abs(weights.sum() - 1) < 1e-5, weights
    assert (training.predict_proba(ensemble, features).argmax(-1) == labels).all()


class Forbidden:
    """Stands for a split that must never be read: any attribute access raises."""

    def __init__(self, what):
        self.what = what

    def __getattr__(self, attr):
        raise AssertionError(f"the {self.__dict__.get('what')} was read (.{attr})")


class GuardedArrays(collections.abc.Mapping):
    """`arrays` that records every split read and raises on any but the allowed one."""

    def __init__(self, arrays, allowed):
        self.arrays, self.allowed, self.read = arrays, allowed, []

    def __getitem__(self, split):
        self.read.append(split)
        if split != self.allowed:
            raise AssertionError(f"split {split!r} was read")
        return self.arrays[split]

    def __iter__(self):
        return iter(self.arrays)

    def __len__(self):
        return len(self.arrays)


@pytest.mark.parametrize("method", ["stacking", "weighted"])
def test_fitted_methods_read_validation_only(method, members, tiny_datasets):
    arrays = GuardedArrays(tiny_datasets.arrays, allowed="validation")
    guarded = dataclasses.replace(tiny_datasets, train=Forbidden("train pipeline"),
                                  test=Forbidden("test pipeline"), arrays=arrays)
    ensemble = build_ensemble(members, method, validation_data=guarded)
    assert set(arrays.read) == {"validation"}  # features and labels: read separately
    # The guard is live: reading the test split through it fails.
    with pytest.raises(AssertionError, match="'test' was read"):
        training.evaluate(ensemble, guarded, split="test")
    with pytest.raises(AssertionError, match="test pipeline was read"):
        guarded.test.take(1)


@pytest.mark.parametrize("method", ENSEMBLE_METHODS)
def test_save_and_load_keep_the_combiner(method, ensembles, tiny_datasets, tmp_path):
    # SavedModel export of each method: tests/test_models_registry.py, as for every model.
    ensemble = ensembles[method]
    features = {k: v[:16] for k, v in tiny_datasets.arrays["test"][0].items()}
    expected = training.predict_proba(ensemble, features)
    path = tmp_path / f"{method}.keras"
    ensemble.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects: the combiners are registered
    np.testing.assert_allclose(training.predict_proba(loaded, features), expected, atol=1e-6)
    assert [l.name for l in loaded.layers] == [l.name for l in ensemble.layers]
    assert type(combiner_of(loaded)) is type(combiner_of(ensemble)) and loaded.trainable_weights == []
    for a, b in zip(combiner_of(loaded).get_weights(), combiner_of(ensemble).get_weights()):
        np.testing.assert_array_equal(a, b)


def test_members_frozen_renamed_and_left_untouched(ensembles, members):
    ensemble = ensembles["average"]
    names = [l.name for l in ensemble.layers]
    assert names == ["image", "text", "member_0_seed_image", "member_1_seed_text", "member_2_seed_image",
                     "combine_average"]
    assert names[2:5] == member_names(members)
    assert ensemble.trainable_weights == [] and ensembles["stacking"].trainable_weights == []
    assert all(not ensemble.get_layer(n).trainable for n in names[2:5])
    assert not combiner_of(ensembles["stacking"]).trainable
    # The caller's models keep their names and stay trainable.
    assert [m.name for m in members] == ["seed_image", "seed_text", "seed_image"]
    assert all(m.trainable and m.trainable_weights for m in members)


def test_same_builder_twice_gets_unique_names(kw):
    a, b = mmkeras.create_model("seed_image", **kw), mmkeras.create_model("seed_image", **kw)
    image = keras.Input(kw["image_shape"], name="image")
    text = keras.Input((kw["sequence_length"],), dtype="int32", name="text")
    inputs = {"image": image, "text": text}
    with pytest.raises(ValueError, match="unique"):  # what plain Keras does with them
        keras.Model(inputs, {"label": keras.layers.Average()([a(inputs)["label"], b(inputs)["label"]])})
    ensemble = build_ensemble([a, b], "average")
    assert [l.name for l in ensemble.layers][2:4] == ["member_0_seed_image", "member_1_seed_image"]


def test_members_from_keras_paths(members, ensembles, tiny_datasets, tmp_path):
    paths = []
    for i, model in enumerate(members):
        paths.append(str(tmp_path / f"m{i}.keras"))
        model.save(paths[-1])
    ensemble = build_ensemble(paths, "average")
    features = tiny_datasets.arrays["test"][0]
    np.testing.assert_allclose(training.predict_proba(ensemble, features),
                               training.predict_proba(ensembles["average"], features), atol=1e-6)


def test_training_helpers_accept_an_ensemble(ensembles, tiny_datasets):
    report, pred = training.evaluate(ensembles["vote"], tiny_datasets)
    features, labels = tiny_datasets.arrays["test"]
    np.testing.assert_array_equal(pred, training.predict_proba(ensembles["vote"], features).argmax(-1))
    assert report["accuracy"] == pytest.approx((pred == labels).mean())


# ---------------------------------------------------------------- fit_members

def test_fit_members_keeps_each_history(fitted, tiny_datasets):
    models, records = fitted
    assert list(records) == ["member_0_seed_image", "member_1_seed_text", "member_2_seed_image"]
    for record in records.values():
        assert len(record["history"]["loss"]) == 2 and len(record["history"]["val_loss"]) == 2
        assert record["stats"]["epochs"] == 2 and record["stats"]["train_seconds"] > 0
        assert record["stats"]["train_samples"] == 2 * tiny_datasets.size("train")
    first, second = records["member_0_seed_image"], records["member_2_seed_image"]
    assert first["history"] is not second["history"] and first["history"]["loss"] != second["history"]["loss"]
    assert models[0] is not models[2] and all(m.optimizer is not None for m in models)


def test_fit_members_rejects_unknown_names_and_repeats(tiny_datasets, kw):
    with pytest.raises(ValueError, match="seed_imag'"):
        fit_members(["seed_imag"], tiny_datasets, epochs=1)
    model = mmkeras.create_model("seed_image", **kw)
    with pytest.raises(ValueError, match="appears twice"):
        fit_members([model, model], tiny_datasets, epochs=1)


# ---------------------------------------------------------------- errors

def test_mismatched_class_counts_name_both_members(kw):
    a = mmkeras.create_model("seed_image", **kw)
    b = mmkeras.create_model("seed_text", **{**kw, "num_classes": kw["num_classes"] + 1})
    with pytest.raises(ValueError) as err:
        build_ensemble([a, b], "average")
    message = str(err.value)
    assert "member 0 'seed_image'" in message and "member 1 'seed_text'" in message
    assert f"{kw['num_classes']} classes" in message and f"outputs {kw['num_classes'] + 1}" in message


@pytest.mark.parametrize("key, override, shapes", [
    ("text", dict(sequence_length=12), ("(10,)", "(12,)")),
    ("image", dict(image_shape=(32, 32, 3)), ("(16, 16, 3)", "(32, 32, 3)")),
])
def test_mismatched_input_specs_name_both_members(key, override, shapes, kw):
    a = mmkeras.create_model("seed_image", **kw)
    b = mmkeras.create_model("seed_text", **{**kw, **override})
    with pytest.raises(ValueError) as err:
        build_ensemble([a, b], "product")
    message = str(err.value)
    assert f"'{key}' input" in message
    assert "member 0 'seed_image'" in message and "member 1 'seed_text'" in message
    assert all(s in message for s in shapes)


def test_unknown_method_lists_allowed(members):
    with pytest.raises(ValueError) as err:
        build_ensemble(members, "median")
    assert "method='median'" in str(err.value)
    assert all(m in str(err.value) for m in ENSEMBLE_METHODS)


@pytest.mark.parametrize("call, match", [
    (lambda m: build_ensemble(m[:1], "average"), "at least 2 members. Received 1"),
    (lambda m: build_ensemble(m, "weighted"), "validation_data=None"),
    (lambda m: build_ensemble(m, "stacking", validation_data=[1, 2, 3]), "Received list"),
    (lambda m: build_ensemble(m, "vote", tie_brake=0.1), r"\['tie_brake'\].*allowed: tie_break"),
    (lambda m: build_ensemble(m + ["missing.keras"], "average"), "'missing.keras'"),
    (lambda m: build_ensemble(m, "vote", tie_break=2.0), "tie_break=2.0"),
    (lambda m: build_ensemble(m, "weighted", validation_data=(m, [0]), steps=0), "steps=0"),
])
def test_bad_arguments(call, match, members):
    with pytest.raises(ValueError, match=match):
        call(members)


def test_method_accepts_registry_style_name(members, ensembles, tiny_datasets):
    features = tiny_datasets.arrays["test"][0]
    ensemble = build_ensemble(members, "ensemble_product")
    assert ensemble.name == "ensemble_product"
    np.testing.assert_allclose(training.predict_proba(ensemble, features),
                               training.predict_proba(ensembles["product"], features), atol=1e-6)


def test_create_model_builds_a_registered_ensemble(members, ensembles, tiny_datasets):
    features = tiny_datasets.arrays["test"][0]
    ensemble = mmkeras.create_model("ensemble_product", members=members, validation_data=None)
    assert ensemble.name == "ensemble_product"
    np.testing.assert_allclose(training.predict_proba(ensemble, features),
                               training.predict_proba(ensembles["product"], features), atol=1e-6)
    # The combiner's options pass through.
    vote = mmkeras.create_model("ensemble_vote", members=members, tie_break=0.01)
    assert combiner_of(vote).tie_break == 0.01
    with pytest.raises(ValueError, match=r"'ensemble_vote' needs the argument\(s\) \['members'\]"):
        mmkeras.create_model("ensemble_vote", tie_break=0.01)
