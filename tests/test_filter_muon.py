"""FilterMuon (mmkeras.filter_muon): Muon on convolution kernels, Nesterov SGD on the rest."""

import math
import subprocess
import sys

import keras
import numpy as np
import pytest

import mmkeras
from mmkeras import speedrun
from mmkeras.filter_muon import FilterMuon, orthogonalize


def test_orthogonalize_flattens_the_singular_values():
    rng = np.random.default_rng(0)
    for shape in ((6, 20), (20, 6)):
        # Singular values from 0.1 to 10: the iteration brings them all near 1.
        u, _ = np.linalg.qr(rng.normal(size=(shape[0], shape[0])))
        v, _ = np.linalg.qr(rng.normal(size=(shape[1], shape[1])))
        k = min(shape)
        matrix = (u[:, :k] * np.geomspace(0.1, 10, k)) @ v[:, :k].T
        out = keras.ops.convert_to_numpy(orthogonalize(keras.ops.convert_to_tensor(matrix, "float32"), steps=5))
        singular = np.linalg.svd(out, compute_uv=False)
        assert out.shape == shape and singular.min() > 0.5 and singular.max() < 1.3


def _conv_model():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(center=False, scale=False, name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def test_a_step_renormalizes_kernels_and_takes_sgd_steps_elsewhere():
    keras.utils.set_random_seed(0)
    model = _conv_model()
    optimizer = FilterMuon(1.0, filter_rate=0.1, momentum=0.5, rates={"head/bias": 0.2}, default_rate=0.3, decay=0.0)
    kernel, head, bias = (v.numpy().copy() for v in (model.get_layer("conv").kernel, *model.get_layer("head").weights))
    grads = [np.ones_like(kernel) * np.arange(4), np.ones_like(head), np.ones_like(bias)]
    optimizer.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in grads], model.trainable_variables))
    # Nesterov SGD from zero momentum: a step of rate x (1 + momentum) x gradient.
    np.testing.assert_allclose(model.get_layer("head").kernel.numpy(), head - 0.3 * 1.5, atol=1e-6)
    np.testing.assert_allclose(model.get_layer("head").bias.numpy(), bias - 0.2 * 1.5, atol=1e-6)
    # The kernel: renormalized to norm sqrt(4), then an orthogonalized step of norm <= 0.1 x ~1.
    moved = model.get_layer("conv").kernel.numpy()
    expected = kernel * 2.0 / np.linalg.norm(kernel)
    assert 0.0 < np.linalg.norm(moved - expected) < 0.1 * 1.3
    assert optimizer.rate_of(model.get_layer("conv").kernel) is None
    assert optimizer.rate_of(model.get_layer("head").kernel) == 0.3


def test_coupled_decay_shrinks_sgd_variables_only():
    keras.utils.set_random_seed(0)
    model = _conv_model()
    optimizer = FilterMuon(1.0, filter_rate=0.1, momentum=0.0, default_rate=0.5, decay=0.1)
    head = model.get_layer("head").kernel.numpy().copy()
    zeros = [keras.ops.zeros_like(v) for v in model.trainable_variables]
    optimizer.apply_gradients(zip(zeros, model.trainable_variables))
    # decay / rate added to the gradient, times the rate: the variable shrinks by `decay`.
    np.testing.assert_allclose(model.get_layer("head").kernel.numpy(), head * 0.9, atol=1e-6)


def test_filter_muon_checks_its_options_and_round_trips():
    with pytest.raises(ValueError, match="filter_rate=0"):
        FilterMuon(filter_rate=0)
    with pytest.raises(ValueError, match="momentum=1"):
        FilterMuon(momentum=1)
    with pytest.raises(ValueError, match="ns_steps=0"):
        FilterMuon(ns_steps=0)
    with pytest.raises(ValueError, match="rates"):
        FilterMuon(rates={"a/bias": -1})
    optimizer = FilterMuon(speedrun.speedrun_schedule("muon", 10, 100), rates={"a/bias": 0.5}, decay=0.01)
    clone = FilterMuon.from_config(optimizer.get_config())
    assert clone.rates == {"a/bias": 0.5} and clone.decay == 0.01 and clone.filter_rate == optimizer.filter_rate
    # The muon schedule: 1 -> 0 linearly.
    schedule = speedrun.speedrun_schedule("muon", 10, 100)
    assert [round(float(schedule(s)), 3) for s in (0, 5, 10)] == [1.0, 0.556, 0.0]


def test_fit_speedrun_with_muon_learns_and_round_trips(tiny_datasets, tmp_path):
    keras.utils.set_random_seed(0)
    model = mmkeras.create_model("image_airbench", **tiny_datasets.model_kwargs(), branch_config={"widths": (8, 16, 16)})
    trained, history, stats = speedrun.fit_speedrun(model, tiny_datasets, epochs=4, verbose=0, optimizer="muon")
    assert history["loss"][-1] < history["loss"][0] - 0.01 and stats["optimizer"] == "muon"
    optimizer = model.optimizer
    assert isinstance(optimizer, FilterMuon)
    # The BatchNorm shifts' rates allow for their gain (8: 64x slower than the whitening bias).
    assert optimizer.rates["image_block1_1_shift/bias"] * 64 == pytest.approx(optimizer.rates["image_whiten/bias"])
    for kernel in (v for v in model.trainable_variables if len(v.shape) == 4):  # renormalized every step
        assert np.linalg.norm(kernel.numpy()) == pytest.approx(math.sqrt(kernel.shape[-1]), rel=0.2)
    features, _ = mmkeras.training.split_arrays(tiny_datasets, "test")
    trained.save(tmp_path / "muon.keras")
    loaded = keras.saving.load_model(tmp_path / "muon.keras")
    np.testing.assert_allclose(loaded.predict(features, verbose=0)["label"],
                               trained.predict(features, verbose=0)["label"], atol=1e-5)
    # A fresh process that imports only mmkeras loads it (its optimizer, schedule and loss
    # are registered by the package's import).
    code = f"import keras, mmkeras; keras.saving.load_model({str(tmp_path / 'muon.keras')!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    with pytest.raises(ValueError, match="optimizer='adam'"):
        speedrun.fit_speedrun(model, tiny_datasets, epochs=1, optimizer="adam")


class _SlowEpochs(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        import time

        time.sleep(0.5)


def test_a_muon_fit_with_a_time_limit_decays_to_zero_within_it(tiny_datasets):
    keras.utils.set_random_seed(0)
    model = mmkeras.create_model("image_airbench", **tiny_datasets.model_kwargs(), branch_config={"widths": (8, 16, 16)})
    # Epochs of >= 0.5 s and 2.4 s to train: 8 epochs do not fit (no lookahead to shorten).
    trained, history, stats = speedrun.fit_speedrun(model, tiny_datasets, epochs=8, verbose=0, tta=False,
                                                    time_limit=2.4, callbacks=[_SlowEpochs()], optimizer="muon")
    shortened = stats["schedule_shortened_to"]
    assert shortened is not None and 2 <= shortened < 8 and len(history["loss"]) == shortened
    steps = math.ceil(tiny_datasets.size("train") / tiny_datasets.batch_size)
    assert float(trained.optimizer._learning_rate(shortened * steps)) == pytest.approx(0.0, abs=1e-6)
