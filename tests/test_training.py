"""Training helpers: compile settings, the timed fit on the paired pipeline, evaluation."""

import numpy as np
import pytest

import keras

import mmkeras
from mmkeras import training


def test_fit_lowers_loss_reports_speed_and_takes_callbacks(tiny_datasets):
    keras.utils.set_random_seed(0)
    model = mmkeras.create_model("seed_concat", **tiny_datasets.model_kwargs())
    seen = []
    cb = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(epoch))
    history, stats = training.fit(model, tiny_datasets, epochs=3, callbacks=[cb], verbose=0)
    assert seen == [0, 1, 2]
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert "val_loss" in history.history
    assert stats["epochs"] == 3 and stats["train_samples"] == 3 * tiny_datasets.size("train")
    assert stats["train_samples_per_second"] == pytest.approx(stats["train_samples"] / stats["train_seconds"])
    # Three epochs leave this model near chance (1/6): check the report against a
    # computation by hand rather than a bound.
    report, pred = training.evaluate(model, tiny_datasets)
    features, labels = tiny_datasets.arrays["test"]
    np.testing.assert_array_equal(pred, training.predict_proba(model, features).argmax(-1))
    assert report["accuracy"] == pytest.approx(np.mean(pred == labels))


def test_seed_models_learn_the_synthetic_set():
    """Fused beats both unimodal models on data where neither modality alone suffices."""
    from mmkeras.data import make_datasets, make_synthetic

    data = make_synthetic(n_train=2000, n_test=400, image_size=16, noise=0.05, seed=1)
    ds = make_datasets(data, batch_size=32, vocab_size=50, sequence_length=10, seed=1)
    acc = {}
    for name in ("seed_image", "seed_text", "seed_concat"):
        keras.utils.set_random_seed(1)
        model = mmkeras.create_model(name, **ds.model_kwargs())
        training.fit(model, ds, epochs=15, verbose=0)
        acc[name] = training.evaluate(model, ds)[0]["accuracy"]
    # Ceilings: text ~0.33 (material only), image ~0.5 (shape only).
    assert acc["seed_text"] < 0.45 and acc["seed_image"] < 0.55, acc
    assert acc["seed_concat"] > max(acc["seed_text"], acc["seed_image"]) + 0.1, acc


def test_compile_settings_cover_every_head():
    kw = dict(num_classes=3, image_shape=(16, 16, 3), vocab_size=30, sequence_length=8)
    model = mmkeras.create_model("gmu_cnn_lstm", **kw, aux_loss_weights={"text_label": 0.25})
    s = training.compile_settings(model)
    assert set(s["loss"]) == {"label", "text_label"}
    assert s["loss_weights"] == {"label": 1.0, "text_label": 0.25}


def test_select_inputs_missing_key():
    model = mmkeras.create_model("seed_text", num_classes=3, vocab_size=30, sequence_length=8)
    with pytest.raises(ValueError, match="image"):
        training.select_inputs(model, {"text": np.zeros((1, 8), "int32")})


def test_precision_policy_builds_mixed_models_and_restores_the_global_policy():
    assert training.resolve_precision("auto") in ("float32", "mixed_bfloat16", "mixed_float16")
    assert training.resolve_precision("float32") == "float32"
    with pytest.raises(ValueError, match="'fp8'.*auto, float32, mixed_bfloat16"):
        training.resolve_precision("fp8")
    before = keras.mixed_precision.global_policy().name
    with training.precision_policy("mixed_bfloat16"):
        model = mmkeras.create_model("image_resnet9", num_classes=3, image_shape=(8, 8, 3),
                                     branch_config={"width": 2})
    assert keras.mixed_precision.global_policy().name == before
    assert model.get_layer("image_prep_conv").compute_dtype == "bfloat16"
    assert model.get_layer("image_prep_conv").variable_dtype == "float32"
    out = model({"image": np.zeros((2, 8, 8, 3), "float32"), "text": np.zeros((2, 1), "int32")})
    assert out["label"].dtype == "float32"  # the softmax head stays float32


def test_evaluate_on_the_shuffled_train_split_lines_predictions_up_with_labels(tiny_datasets):
    keras.utils.set_random_seed(0)
    model = mmkeras.create_model("seed_concat", **tiny_datasets.model_kwargs())
    features, labels = training.split_arrays(tiny_datasets, "train")
    expected = training.predict_proba(model, features).argmax(-1)
    report, pred = training.evaluate(model, tiny_datasets, split="train")
    np.testing.assert_array_equal(pred, expected)
    assert report["accuracy"] == pytest.approx(float(np.mean(expected == labels)))
