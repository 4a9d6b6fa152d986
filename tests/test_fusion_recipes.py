"""Fusion recipes (mmkeras.fusion_recipes): each trains a warm-started fused model, says
what it did in its stats, and the errors name what was received and what is allowed."""

import keras
import numpy as np
import pytest

import mmkeras
from mmkeras import fusion_recipes, training


@pytest.fixture(scope="module")
def unimodal(trained_unimodal):
    return trained_unimodal


def _fused(tiny_datasets, unimodal):
    keras.utils.set_random_seed(1)
    return mmkeras.create_model("seed_concat", **tiny_datasets.model_kwargs(), image_init=unimodal["image"],
                                text_init=unimodal["text"], freeze_image=True)


def _weights(model, prefix):
    return [np.array(w) for layer in model.layers if layer.name.startswith(prefix) for w in layer.weights]


def test_the_recipes_and_the_default():
    assert fusion_recipes.list_fusion_recipes() == ["experts", "finetune", "frozen"]
    assert fusion_recipes.DEFAULT_FUSION_RECIPE in fusion_recipes.list_fusion_recipes()


def test_frozen_trains_fusion_and_head_only(tiny_datasets, unimodal):
    model = _fused(tiny_datasets, unimodal)
    image_before, head_before = _weights(model, "image_"), _weights(model, "head_")
    trained, history, stats = fusion_recipes.fit_fused(model, tiny_datasets, recipe="frozen", epochs=2, verbose=0)
    assert trained is model and len(history["loss"]) == 2 and history["loss"][1] < history["loss"][0]
    assert all(np.array_equal(a, b) for a, b in zip(image_before, _weights(model, "image_")))
    assert not all(np.array_equal(a, b) for a, b in zip(head_before, _weights(model, "head_")))
    assert stats["recipe"] == "frozen" and stats["epochs"] == 2
    assert stats["train_samples"] == 2 * tiny_datasets.size("train")


def test_finetune_moves_the_borrowed_branches_but_not_their_statistics(tiny_datasets, unimodal):
    # A small VGG image branch: BatchNorm layers to keep in inference mode.
    model = mmkeras.build_fused(image_branch="vgg", text_branch="lstm", fusion="concat",
                                image_config=dict(width=4, blocks=1), **tiny_datasets.model_kwargs())
    image_before = _weights(model, "image_")
    trained, history, stats = fusion_recipes.fit_fused(model, tiny_datasets, recipe="finetune", epochs=1, verbose=0)
    assert stats["epochs"] == 2 and len(history["loss"]) == 2
    assert not all(np.array_equal(a, b) for a, b in zip(image_before, _weights(model, "image_")))
    assert not any(layer.trainable for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))


def test_experts_adds_the_unimodal_heads_and_fits_their_weights(tiny_datasets, unimodal):
    model = _fused(tiny_datasets, unimodal)
    branches_before = _weights(model, "image_") + _weights(model, "text_")
    trained, history, stats = fusion_recipes.fit_fused(model, tiny_datasets, recipe="experts", epochs=1,
                                                       image_model=unimodal["image"], text_model=unimodal["text"],
                                                       modality_dropout=0.3, verbose=0)
    assert set(trained.output) == {"label", "fused_label", "image_label", "text_label"}
    # Both borrowed branches kept the features the experts' heads were trained on.
    assert all(np.array_equal(a, b) for a, b in zip(branches_before, _weights(model, "image_") + _weights(model, "text_")))
    assert stats["recipe"] == "experts" and stats["recipe_seconds"] > 0
    assert set(stats["expert_weights"]) == {"both", "text_only", "image_only", "neither"}
    report, _ = training.evaluate(trained, tiny_datasets, split="validation")
    features, labels = training.split_arrays(tiny_datasets, "validation")
    out = trained.predict(features, verbose=0)
    product = np.log(np.clip(out["image_label"], 1e-7, 1)) + np.log(np.clip(out["text_label"], 1e-7, 1))
    assert report["accuracy"] >= (product.argmax(-1) == labels).mean() - 1e-9


def test_errors_say_what_was_received(tiny_datasets, unimodal):
    model = _fused(tiny_datasets, unimodal)
    with pytest.raises(ValueError, match="Unknown fusion recipe 'lazy'; expected one of: experts, finetune, frozen"):
        fusion_recipes.fit_fused(model, tiny_datasets, recipe="lazy")
    with pytest.raises(ValueError, match="needs the trained unimodal models.*missing: image_model, text_model"):
        fusion_recipes.fit_fused(model, tiny_datasets, recipe="experts", verbose=0)
    with pytest.raises(ValueError, match="modality_dropout"):
        fusion_recipes.fit_fused(model, tiny_datasets, recipe="frozen", modality_dropout=1.5)
    with pytest.raises(ValueError, match="already registered"):
        fusion_recipes.register_fusion_recipe("frozen")(lambda *a, **k: None)
