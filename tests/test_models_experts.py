"""A fused model with its unimodal experts (mmkeras.models.experts): the experts reproduce
the models they come from, the product of experts is what its weights say, fitted weights
are never worse on the fitting data than the plain alternatives, and the model saves."""

import keras
import numpy as np
import pytest

import mmkeras
from mmkeras import training
from mmkeras.models.experts import (EXPERTS, PRESENCE_STATES, blanked, expert_weights, fit_expert_weights,
                                    with_unimodal_experts)


@pytest.fixture(scope="module")
def unimodal(trained_unimodal):
    return trained_unimodal


def _fused(tiny_datasets, unimodal, name="seed_concat"):
    return mmkeras.create_model(name, **tiny_datasets.model_kwargs(), image_init=unimodal["image"],
                                text_init=unimodal["text"], freeze_image=True)


@pytest.fixture(scope="module")
def combined(tiny_datasets, unimodal):
    return with_unimodal_experts(_fused(tiny_datasets, unimodal), unimodal["image"], unimodal["text"])


def _predict(model, features):
    return model.predict(features, verbose=0, batch_size=64)


def test_experts_reproduce_the_models_they_come_from(combined, unimodal, tiny_datasets):
    # Clean and with both modalities blanked: the experts see exactly what their models see.
    features = tiny_datasets.features("test")
    features = {k: np.concatenate([v, blanked(features, "neither")[k]]) for k, v in features.items()}
    out = _predict(combined, features)
    assert set(out) == {"label", "fused_label", "image_label", "text_label"}
    for modality, model in unimodal.items():
        np.testing.assert_allclose(out[f"{modality}_label"], _predict(model, features)["label"], atol=1e-5)


def test_unfitted_product_multiplies_all_three_experts(combined, tiny_datasets):
    out = _predict(combined, tiny_datasets.features("test"))
    logits = sum(np.log(np.clip(out[k], 1e-7, 1)) for k in ("fused_label", "image_label", "text_label"))
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(out["label"], expected / expected.sum(-1, keepdims=True), atol=1e-5)


def test_each_presence_state_uses_its_own_weights(tiny_datasets, unimodal):
    model = with_unimodal_experts(_fused(tiny_datasets, unimodal), unimodal["image"], unimodal["text"])
    table = np.zeros((4, 3), np.float32)
    table[0, 0] = table[1, 2] = table[2, 1] = table[3, 0] = 1.0  # both: fused; text only: text; ...
    model.get_layer("experts_product").expert_weights.assign(table)
    features = tiny_datasets.features("test")
    for state, head in (("both", "fused_label"), ("text_only", "text_label"), ("image_only", "image_label")):
        out = _predict(model, blanked(features, state))
        np.testing.assert_allclose(out["label"], out[head], atol=1e-5, err_msg=state)
    assert expert_weights(model)["text_only"] == {"fused": 0.0, "image": 0.0, "text": 1.0}


def test_fitted_weights_fit_the_held_out_data_no_worse_than_the_plain_alternatives(tiny_datasets, unimodal):
    model = with_unimodal_experts(_fused(tiny_datasets, unimodal), unimodal["image"], unimodal["text"])
    features, labels = training.split_arrays(tiny_datasets, "validation")
    fitted = fit_expert_weights(model, features, labels)
    assert set(fitted) == set(PRESENCE_STATES) and all(set(w) == set(EXPERTS) for w in fitted.values())
    assert all(w >= 0 for weights in fitted.values() for w in weights.values())
    def nll(log_p):  # of softmax(log_p) at the labels
        log_p = log_p - log_p.max(-1, keepdims=True)
        log_p = log_p - np.log(np.exp(log_p).sum(-1, keepdims=True))
        return -log_p[np.arange(len(labels)), labels].mean()

    for state in PRESENCE_STATES:
        out = _predict(model, blanked(features, state))
        logs = {k: np.log(np.clip(v.astype(np.float64), 1e-7, 1)) for k, v in out.items()}
        product = logs["image_label"] + logs["text_label"]
        assert nll(logs["label"]) <= nll(logs["fused_label"]) + 1e-4, state
        assert nll(logs["label"]) <= nll(product) + 1e-4, state
        assert nll(logs["label"]) <= nll(product + logs["fused_label"]) + 1e-4, state


def test_round_trips_through_keras_file(tmp_path, combined, tiny_datasets):
    features = tiny_datasets.features("test")
    combined.get_layer("experts_product").expert_weights.assign(np.full((4, 3), 0.5, np.float32))
    path = tmp_path / "experts.keras"
    combined.save(path)
    loaded = keras.models.load_model(path)
    for key, value in _predict(combined, features).items():
        np.testing.assert_allclose(_predict(loaded, features)[key], value, atol=1e-6, err_msg=key)


def test_early_fusion_runs_the_image_model_beside_it(tiny_datasets, unimodal):
    fused = _fused(tiny_datasets, unimodal, "early_cnn_lstm")
    model = with_unimodal_experts(fused, unimodal["image"], unimodal["text"])  # the stage read from the fusion
    features = tiny_datasets.features("test")
    out = _predict(model, features)
    np.testing.assert_allclose(out["image_label"], _predict(unimodal["image"], features)["label"], atol=1e-5)
    np.testing.assert_allclose(out["fused_label"], _predict(fused, features)["label"], atol=1e-5)


def test_mismatched_branches_are_named(tiny_datasets, unimodal):
    kw = tiny_datasets.model_kwargs()
    other = mmkeras.create_model("concat_resnet9_bilstm", **kw)
    with pytest.raises(ValueError, match="has no layer 'image_pool' like that of 'image_simple_cnn'.*same image branch"):
        with_unimodal_experts(other, unimodal["image"], unimodal["text"])
    with pytest.raises(ValueError, match="reads layer 'fusion_concat', not an 'image_\\*' branch layer"):
        with_unimodal_experts(other, other, unimodal["text"])  # a fused model is no image expert


def test_exports_and_serves_raw_inputs(tmp_path, combined, tiny_datasets):
    from mmkeras.export import export_model

    combined.get_layer("experts_product").expert_weights.assign(np.eye(4, 3, dtype=np.float32) + 0.25)
    # export_model reloads the SavedModel and checks it against the model before keeping it.
    path = export_model(combined, tmp_path / "experts", vectorizer=tiny_datasets.vectorizer,
                        class_names=tiny_datasets.class_names)
    assert (path / "saved_model.pb").is_file()


def test_a_fusion_that_reads_feature_maps_gets_the_pooled_vectors_rebuilt(tmp_path, tiny_datasets, unimodal):
    # Cross-attention reads the image map and the token sequence: the fused graph has no
    # image_flatten and no pooled text vector, so the experts rebuild them from the branch.
    fused = _fused(tiny_datasets, unimodal, "cross_attention_cnn_lstm")
    model = with_unimodal_experts(fused, unimodal["image"], unimodal["text"])
    features = tiny_datasets.features("test")
    out = _predict(model, features)
    for modality, source in unimodal.items():
        np.testing.assert_allclose(out[f"{modality}_label"], _predict(source, features)["label"], atol=1e-5)
    model.save(tmp_path / "cross.keras")
    loaded = keras.models.load_model(tmp_path / "cross.keras")
    np.testing.assert_allclose(_predict(loaded, features)["label"], out["label"], atol=1e-6)


def test_an_image_model_with_test_time_augmentation_is_kept_whole(tiny_datasets, unimodal):
    # The image expert is the image model as saved, views included: with weights (0, 1, 1)
    # the product of experts is exactly the product ensemble of the two saved models.
    from mmkeras.models.tta import with_tta

    image_tta = with_tta(unimodal["image"], shift=1)
    model = with_unimodal_experts(_fused(tiny_datasets, unimodal), image_tta, unimodal["text"])
    features = tiny_datasets.features("test")
    out = _predict(model, features)
    expected = _predict(image_tta, features)["label"]
    np.testing.assert_allclose(out["image_label"], expected, atol=1e-5)
    assert np.abs(out["image_label"] - _predict(unimodal["image"], features)["label"]).max() > 1e-4
    model.get_layer("experts_product").expert_weights.assign(np.tile([[0.0, 1.0, 1.0]], (4, 1)).astype(np.float32))
    product = expected * _predict(unimodal["text"], features)["label"]
    np.testing.assert_allclose(_predict(model, features)["label"], product / product.sum(-1, keepdims=True),
                               atol=1e-5)


def test_weights_are_fitted_on_at_most_max_examples(tiny_datasets, unimodal, monkeypatch):
    model = with_unimodal_experts(_fused(tiny_datasets, unimodal), unimodal["image"], unimodal["text"])
    features, labels = training.split_arrays(tiny_datasets, "validation")
    seen = []
    predict = model.predict
    monkeypatch.setattr(model, "predict", lambda x, **kw: seen.append(len(x["image"])) or predict(x, **kw))
    fit_expert_weights(model, features, labels, max_examples=10)
    assert seen == [10] * len(PRESENCE_STATES) and len(labels) > 10
