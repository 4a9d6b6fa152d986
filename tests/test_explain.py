"""mmkeras.explain: Shapley modality contributions, integrated gradients on tokens and pixels,
Grad-CAM, fusion internals. Tiny models trained for two epochs on the synthetic set."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import mmkeras
from mmkeras import explain, training
from mmkeras.bench.measure import perturbations
from mmkeras.explain.contributions import blank_image, blank_text

# Trained for a few epochs (attributions need a model that uses its inputs); the fusion
# internals are checked on fresh models.
TRAINED = {"seed_concat": 2, "seed_text": 4, "seed_image": 2, "cross_attention_cnn_lstm": 3, "text_transformer": 2}
FRESH = ("gmu_cnn_lstm", "weighted_sum_cnn_lstm")


@pytest.fixture(scope="module")
def models(tiny_datasets):
    built = {}
    for name in (*TRAINED, *FRESH):
        keras.utils.set_random_seed(0)
        built[name] = mmkeras.create_model(name, **tiny_datasets.model_kwargs())
        if name in TRAINED:
            training.fit(built[name], tiny_datasets, epochs=TRAINED[name], verbose=0)
    return built


@pytest.fixture(scope="module")
def features(tiny_datasets):
    feats, _ = tiny_datasets.arrays["test"]
    return {k: v[:16] for k, v in feats.items()}


def _reference_passes(model, features):
    """The four passes computed independently, from the robustness blanks."""
    blanks = perturbations(features)
    neither = dict(blanks["image_missing"], text=blanks["text_missing"]["text"])
    return [training.predict_proba(model, f).astype(np.float64)
            for f in (features, blanks["text_missing"], blanks["image_missing"], neither)]


def test_blanks_are_the_robustness_blanks(features):
    blanks = perturbations(features)
    np.testing.assert_array_equal(blank_image(features["image"]), blanks["image_missing"]["image"])
    np.testing.assert_array_equal(blank_text(features["text"]), blanks["text_missing"]["text"])


@pytest.mark.parametrize("name", ["seed_concat", "cross_attention_cnn_lstm"])
def test_shapley_values_and_exact_efficiency(models, features, name):
    model = models[name]
    out = explain.modality_contributions(model, features, all_classes=True, batch_size=5)
    both, image_only, text_only, neither = _reference_passes(model, features)
    np.testing.assert_allclose(out["image"], 0.5 * ((both - text_only) + (image_only - neither)), atol=1e-6)
    np.testing.assert_allclose(out["text"], 0.5 * ((both - image_only) + (text_only - neither)), atol=1e-6)
    # Efficiency: exact up to float64 rounding.
    np.testing.assert_allclose(out["image"] + out["text"], out["p_both"] - out["p_neither"], rtol=0, atol=1e-12)
    assert np.abs(out["image"]).max() > 1e-3 and np.abs(out["text"]).max() > 1e-5  # both players matter
    top = explain.modality_contributions(model, features)
    np.testing.assert_array_equal(top["class_id"], both.argmax(-1))
    rows = np.arange(len(both))
    np.testing.assert_allclose(top["image"], out["image"][rows, top["class_id"]], atol=1e-6)
    np.testing.assert_allclose(top["image"] + top["text"], top["p_both"] - top["p_neither"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name, silent, used", [("seed_text", "image", "text"), ("seed_image", "text", "image"),
                                                ("text_transformer", "image", "text")])
def test_unimodal_model_gets_exactly_zero_for_the_input_it_ignores(models, features, name, silent, used):
    out = explain.modality_contributions(models[name], features, all_classes=True)
    assert np.all(out[silent] == 0.0)
    assert np.abs(out[used]).max() > 1e-4
    np.testing.assert_allclose(out[used], out["p_both"] - out["p_neither"], rtol=0, atol=1e-12)
    shares = explain.mean_modality_shares(models[name], features)
    assert shares[f"{silent}_share"] == 0.0 and shares[f"{used}_share"] == 1.0


def test_ensemble_contributions(models, features):
    ensemble = mmkeras.create_model("ensemble_average", members=[models["seed_image"], models["seed_text"]])
    out = explain.modality_contributions(ensemble, features, all_classes=True)
    np.testing.assert_allclose(out["image"] + out["text"], out["p_both"] - out["p_neither"], rtol=0, atol=1e-12)
    assert np.abs(out["image"]).max() > 1e-4 and np.abs(out["text"]).max() > 1e-4
    # An average of an image-only and a text-only member: each player's value is half its member's.
    image_alone = explain.modality_contributions(models["seed_image"], features, all_classes=True)
    np.testing.assert_allclose(out["image"], 0.5 * image_alone["image"], atol=1e-6)
    scores = explain.token_attributions(ensemble, features)["scores"]
    assert np.abs(scores).max() > 0
    with pytest.raises(ValueError, match="ensemble"):
        explain.grad_cam(ensemble, features)


def test_mean_modality_shares(models, features):
    shares = explain.mean_modality_shares(models["seed_concat"], features)
    out = explain.modality_contributions(models["seed_concat"], features)
    image, text = np.abs(out["image"]).sum(), np.abs(out["text"]).sum()
    assert shares["image_share"] == pytest.approx(image / (image + text))
    assert shares["image_share"] + shares["text_share"] == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["seed_text", "text_transformer", "cross_attention_cnn_lstm"])
def test_token_integrated_gradients_completeness_and_padding(models, features, name):
    out = explain.token_attributions(models[name], features, batch_size=70)
    delta = out["p_input"] - out["p_baseline"]
    tolerance = explain.TOKEN_COMPLETENESS_TOLERANCE
    assert np.abs(delta).max() > 4 * tolerance  # the check below means something
    np.testing.assert_allclose(out["scores"].sum(-1), delta, rtol=0, atol=tolerance)
    padded = features["text"] == 0
    assert padded.any() and np.all(out["scores"][padded] == 0.0)
    assert np.abs(out["scores"][~padded]).max() > 0
    p = training.predict_proba(models[name], features)
    np.testing.assert_allclose(out["p_input"], p[np.arange(len(p)), out["class_id"]], atol=1e-5)


def test_token_scores_of_an_explicit_class_and_of_an_image_only_model(models, features):
    some = explain.token_attributions(models["seed_concat"], features, class_id=2)
    assert np.all(some["class_id"] == 2)
    np.testing.assert_allclose(some["p_input"], training.predict_proba(models["seed_concat"], features)[:, 2],
                               atol=1e-5)
    assert np.all(explain.token_attributions(models["seed_image"], features)["scores"] == 0.0)


@pytest.mark.parametrize("name", ["seed_image", "cross_attention_cnn_lstm"])
def test_pixel_integrated_gradients_completeness(models, features, name):
    out = explain.pixel_attributions(models[name], features)
    assert out["scores"].shape == features["image"].shape[:3]
    delta = out["p_input"] - out["p_baseline"]
    tolerance = explain.PIXEL_COMPLETENESS_TOLERANCE
    assert np.abs(delta).max() > 4 * tolerance
    np.testing.assert_allclose(out["scores"].sum((1, 2)), delta, rtol=0, atol=tolerance)
    assert np.all(explain.pixel_attributions(models["seed_text"], features)["scores"] == 0.0)


def test_grad_cam(models, features):
    out = explain.grad_cam(models["cross_attention_cnn_lstm"], features)
    assert out["heatmap"].shape == features["image"].shape[:3] and out["map_size"] == (7, 7)
    assert out["heatmap"].min() >= 0 and out["heatmap"].max() > 0
    # Heatmaps differ between images (not a constant map).
    assert np.abs(out["heatmap"][0] - out["heatmap"][1]).max() > 0
    with pytest.raises(ValueError, match="no image feature map"):
        explain.grad_cam(models["seed_text"], features)


def test_fusion_internals(models, features):
    gmu = explain.fusion_internals(models["gmu_cnn_lstm"], features)
    assert gmu["fusion"] == "fusion_gmu" and gmu["gate"].shape == (16, 128)
    assert 0 < gmu["gate"].min() and gmu["gate"].max() < 1
    np.testing.assert_allclose(gmu["image_gate"], gmu["gate"].mean(-1), rtol=1e-6)
    # The gate recomputed by hand from the trained layer's weights and inputs.
    layer = models["gmu_cnn_lstm"].get_layer("fusion_gmu")
    inputs = keras.Model(models["gmu_cnn_lstm"].input, layer.input).predict(features, verbose=0)
    np.testing.assert_allclose(gmu["gate"], layer.gate(np.concatenate(inputs, -1)), atol=1e-5)

    attention = explain.fusion_internals(models["cross_attention_cnn_lstm"], features)
    real = features["text"] != 0
    sums = attention["attention"].sum(-1)  # (N, heads, T): 1 over the regions for each real token
    np.testing.assert_allclose(sums.transpose(0, 2, 1)[real], 1.0, atol=1e-5)
    assert np.all(sums.transpose(0, 2, 1)[~real] == 0)
    np.testing.assert_allclose(attention["attention_map"].sum((1, 2)), 1.0, atol=1e-5)

    weighted = explain.fusion_internals(models["weighted_sum_cnn_lstm"])
    assert weighted["modality_weights"].shape == (2,) and weighted["modality_weights"].sum() == pytest.approx(1)
    assert explain.fusion_internals(models["seed_concat"], features) == {"fusion": "fusion_concat"}
    assert explain.fusion_internals(models["seed_text"], features) == {"fusion": None}


def test_bad_arguments(models, features):
    with pytest.raises(ValueError, match="'image'"):
        explain.modality_contributions(models["seed_concat"], {"text": features["text"]})
    with pytest.raises(ValueError, match="steps"):
        explain.token_attributions(models["seed_concat"], features, steps=0)
    with pytest.raises(ValueError, match="batch_size"):
        explain.modality_contributions(models["seed_concat"], features, batch_size=0)


def test_shares_from_passes_are_the_mean_shares(models, features):
    from mmkeras.explain.contributions import shares_from_passes

    out = explain.modality_contributions(models["seed_concat"], features, all_classes=True)
    shares = shares_from_passes(out["p_both"], out["p_image_only"], out["p_text_only"], out["p_neither"])
    expected = explain.mean_modality_shares(models["seed_concat"], features)
    assert shares["image_share"] == pytest.approx(expected["image_share"], abs=1e-9)
    assert 0 < shares["image_share"] < 1
