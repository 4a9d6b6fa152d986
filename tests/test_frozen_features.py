"""Frozen branch features computed once (mmkeras.frozen_features): the cut model computes
exactly what the whole model does, training the head trains the model and leaves the
frozen part alone, callbacks see the whole model, and unsafe cuts are refused."""

import keras
import numpy as np
import pytest

import mmkeras
from mmkeras import fusion_recipes, training
from mmkeras.frozen_features import fit_frozen_cached, split_frozen
from mmkeras.models.transfer import freeze_prefix


def _fused(tiny_datasets, unimodal, name="gmu_cnn_lstm", **kwargs):
    keras.utils.set_random_seed(0)
    return mmkeras.create_model(name, **tiny_datasets.model_kwargs(), image_init=unimodal["image"],
                                text_init=unimodal["text"], freeze_image=True, **kwargs)


@pytest.mark.parametrize("freeze_text", [False, True])
def test_the_cut_model_computes_what_the_whole_model_does(tiny_datasets, trained_unimodal, freeze_text):
    model = _fused(tiny_datasets, trained_unimodal)
    if freeze_text:
        freeze_prefix(model, "text")
    split = split_frozen(model)
    assert split is not None
    assert any(name.startswith("image_") for name in split.cached)
    # A trainable text branch reads the raw ids; a frozen one is cached as its vector.
    assert any(name.startswith("text_lstm") for name in split.cached) == freeze_text
    features = tiny_datasets.features("test")
    whole = model.predict(features, verbose=0)["label"]
    np.testing.assert_allclose(split.head.predict(split.features(features), verbose=0)["label"], whole,
                               atol=1e-6)


def test_nothing_is_cut_where_it_would_change_training(tiny_datasets, trained_unimodal):
    kw = tiny_datasets.model_kwargs()
    assert split_frozen(mmkeras.create_model("seed_concat", **kw)) is None  # nothing frozen
    # Early fusion trains its image branch behind the augmentation: that must keep acting.
    early = _fused(tiny_datasets, trained_unimodal, "early_cnn_lstm", image_augmentation="flip_translate")
    assert split_frozen(early) is None
    # The speed-run flips hold an epoch counter, not weights: still augmentation.
    early = _fused(tiny_datasets, trained_unimodal, "early_cnn_lstm", image_augmentation="speedrun")
    assert early.get_layer("image_augment_flip").weights and split_frozen(early) is None


def test_a_masked_frozen_sequence_runs_in_the_head(tiny_datasets, trained_unimodal):
    # A frozen text sequence carries a Keras mask that new head inputs would lose: the text
    # branch runs in the head from the raw ids (frozen), the image branch is cached.
    attention = _fused(tiny_datasets, trained_unimodal, "cross_attention_cnn_lstm")
    freeze_prefix(attention, "text")
    split = split_frozen(attention)
    assert split is not None and any(name.startswith("image_") for name in split.cached)
    text_layers = {layer.name for layer in attention.layers if layer.name.startswith("text") and layer.weights}
    assert text_layers and text_layers <= {layer.name for layer in split.head.layers}
    features = tiny_datasets.features("test")
    np.testing.assert_allclose(split.head.predict(split.features(features), verbose=0)["label"],
                               attention.predict(features, verbose=0)["label"], atol=1e-5)
    text_before = [w.numpy().copy() for w in attention.weights if w.path.startswith("text")]
    training.compile_model(attention)
    _, stats = fit_frozen_cached(attention, tiny_datasets, epochs=1, learning_rate=3e-3, verbose=0)
    assert stats["frozen_cache"]["bytes"] > 0
    for before, after in zip(text_before, [w for w in attention.weights if w.path.startswith("text")]):
        np.testing.assert_array_equal(after.numpy(), before)  # frozen in the head, still frozen


class _Seen(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.models, self.epochs = [self.model], 0

    def on_epoch_end(self, epoch, logs=None):
        self.models.append(self.model)
        self.epochs += 1
        self.planned = self.params["epochs"]  # the fit's parameters reach the callbacks
        self.model.stop_training = epoch >= 1  # stops the fit after its second epoch


def test_fitting_the_head_trains_the_model_and_leaves_frozen_layers(tiny_datasets, trained_unimodal):
    model = _fused(tiny_datasets, trained_unimodal)
    training.compile_model(model)
    frozen_before = [w.numpy().copy() for w in model.get_layer("image_conv").weights]
    label_before = model.get_layer("label").kernel.numpy().copy()
    seen = _Seen()
    history, stats = fit_frozen_cached(model, tiny_datasets, epochs=4, learning_rate=3e-3, callbacks=[seen],
                                       verbose=0)
    assert all(m is model for m in seen.models)  # callbacks read and set the whole model
    assert seen.epochs == 2 and len(history.history["loss"]) == 2  # and may stop the fit
    assert seen.planned == 4
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert not np.allclose(model.get_layer("label").kernel.numpy(), label_before)
    for before, after in zip(frozen_before, model.get_layer("image_conv").weights):
        np.testing.assert_array_equal(after.numpy(), before)
    assert stats["frozen_cache"]["bytes"] > 0 and stats["epochs"] == 2


def test_a_cache_over_the_memory_limit_is_not_built(tiny_datasets, trained_unimodal):
    model = _fused(tiny_datasets, trained_unimodal)
    training.compile_model(model)
    assert fit_frozen_cached(model, tiny_datasets, epochs=1, learning_rate=1e-3, max_bytes=1000, verbose=0) is None


def test_fusion_recipes_use_the_cache_unless_modality_dropout_is_on(tiny_datasets, trained_unimodal):
    sources = dict(image_model=trained_unimodal["image"], text_model=trained_unimodal["text"])
    _, _, stats = fusion_recipes.fit_fused(_fused(tiny_datasets, trained_unimodal), tiny_datasets, recipe="experts",
                                           epochs=1, verbose=0, **sources)
    assert stats["frozen_cache"]["phases"] == 1
    _, _, stats = fusion_recipes.fit_fused(_fused(tiny_datasets, trained_unimodal), tiny_datasets, recipe="frozen",
                                           epochs=1, verbose=0, modality_dropout=0.3, **sources)
    assert "frozen_cache" not in stats
