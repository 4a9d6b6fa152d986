"""The speed-run image branch (`airbench`) and its training recipe (mmkeras.speedrun)."""

import math
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import mmkeras
from mmkeras import speedrun
from mmkeras.branches.airbench_layers import AlternatingFlip, PartialIdentity, PatchWhitening, RandomPixelNoise, ScaledBias
from mmkeras.models.tta import unwrap_tta

SMALL = {"widths": (8, 16, 16)}


def _correlated_images(n=60, size=9, seed=0):
    """Images whose neighbouring pixels and channels are strongly correlated."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, size + 1, size + 1, 1))
    smooth = base[:, 1:, 1:] + base[:, :-1, :-1] + 0.3 * rng.normal(size=(n, size, size, 1))
    return (smooth * np.array([1.0, 0.8, 0.5]) + 0.2 * rng.normal(size=(n, size, size, 3)) + 3.0).astype("float32")


def test_adapted_whitening_decorrelates_patches_to_unit_variance():
    images = _correlated_images()
    layer = PatchWhitening(kernel_size=2)
    layer.adapt(images)
    out = keras.ops.convert_to_numpy(layer(images))
    assert out.shape == (60, 8, 8, 24)
    first = out[..., :12].reshape(-1, 12)
    covariance = first.T @ first / len(first)
    np.testing.assert_allclose(covariance, np.eye(12), atol=0.05)
    np.testing.assert_allclose(out[..., 12:], -out[..., :12], atol=1e-5)  # the negated half
    raw = images[:, :2, :2].reshape(60, -1)
    assert abs(np.corrcoef(raw[:, 0], raw[:, 1])[0, 1]) > 0.5  # the channels were correlated


def test_unadapted_whitening_is_a_plain_patch_embedding():
    images = np.random.default_rng(1).normal(size=(2, 3, 3, 1)).astype("float32")
    out = keras.ops.convert_to_numpy(PatchWhitening(kernel_size=2)(images))
    np.testing.assert_allclose(out[:, 0, 0, :4], images[:, :2, :2, 0].reshape(2, 4), atol=1e-6)
    with pytest.raises(ValueError, match="kernel_size=0"):
        PatchWhitening(kernel_size=0)


def test_partial_identity_passes_the_first_channels_through():
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 4)).astype("float32")
    conv = keras.layers.Conv2D(6, 3, padding="same", use_bias=False, kernel_initializer=PartialIdentity(seed=0))
    out = keras.ops.convert_to_numpy(conv(x))
    np.testing.assert_allclose(out[..., :4], x, atol=1e-6)
    assert np.abs(out[..., 4:]).max() > 0.01
    kernel = keras.ops.convert_to_numpy(conv.kernel)[..., 4:]
    assert np.abs(kernel).max() <= 1 / np.sqrt(3 * 3 * 4) + 1e-6  # torch's default conv init


def test_scaled_bias_moves_gain_squared_faster():
    import tensorflow as tf

    layer = ScaledBias(gain=8.0)
    x = tf.zeros((1, 3))
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(layer(x))
    grad = tape.gradient(y, layer.bias.value)
    np.testing.assert_allclose(grad.numpy(), [8.0, 8.0, 8.0])  # a step of lr*8 moves the shift by lr*64
    with pytest.raises(ValueError, match="gain=0"):
        ScaledBias(gain=0)


def test_pixel_noise_only_in_training_on_about_rate_of_the_images():
    images = np.full((400, 4, 4, 3), 128.0, "float32")
    layer = RandomPixelNoise(max_stddev=0.15, rate=0.5, seed=0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(images)), images)
    noisy = keras.ops.convert_to_numpy(layer(images, training=True))
    changed = np.any(noisy != images, axis=(1, 2, 3)).mean()
    assert 0.4 < changed < 0.6 and noisy.min() >= 0 and noisy.max() <= 255
    with pytest.raises(ValueError, match="rate=2"):
        RandomPixelNoise(rate=2)


def test_alternating_flip_mirrors_each_image_on_every_other_epoch():
    images = np.random.default_rng(0).integers(0, 256, (64, 4, 5, 3)).astype("float32")
    mirrored = images[:, :, ::-1]
    layer = AlternatingFlip(seed=0)

    def flipped(epoch=None):
        if epoch is not None:
            layer.set_epoch(epoch)
        out = keras.ops.convert_to_numpy(layer(images, training=True))
        is_mirror = np.all(out == mirrored, axis=(1, 2, 3))
        assert np.all(is_mirror | np.all(out == images, axis=(1, 2, 3)))
        return is_mirror

    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(images)), images)  # inference
    assert 0.25 < flipped().mean() < 0.75  # no epoch set: random flips
    assert not np.array_equal(flipped(), flipped())
    even, odd = flipped(0), flipped(1)
    assert 0.25 < even.mean() < 0.75 and np.array_equal(odd, ~even)  # each image, one way then the other
    np.testing.assert_array_equal(flipped(2), even)
    # Which half an image is in depends on the image, not on its place in the batch.
    layer.set_epoch(0)
    order = np.random.default_rng(1).permutation(len(images))
    out = keras.ops.convert_to_numpy(layer(images[order], training=True))
    np.testing.assert_array_equal(np.all(out == mirrored[order], axis=(1, 2, 3)), even[order])


def test_triangular_schedule_and_label_smoothing_loss():
    schedule = speedrun.Triangular(1.0, total_steps=100)
    values = [float(schedule(s)) for s in (0, 23, 100, 200)]
    np.testing.assert_allclose(values, [0.2, 1.0, 0.07, 0.07], atol=1e-6)
    assert speedrun.Triangular.from_config(schedule.get_config()).get_config() == schedule.get_config()
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], "float32")
    labels = np.array([0, 2])
    smoothed = speedrun.SparseLabelSmoothingCrossentropy(0.2)(labels, probs)
    expected = keras.losses.CategoricalCrossentropy(label_smoothing=0.2)(np.eye(3)[labels], probs)
    np.testing.assert_allclose(float(smoothed), float(expected), atol=1e-6)
    plain = speedrun.SparseLabelSmoothingCrossentropy(0.0)(labels, probs)
    np.testing.assert_allclose(float(plain), -np.mean(np.log([0.7, 0.8])), atol=1e-6)
    assert float(smoothed) > float(plain)


def test_a_schedule_is_laid_over_fewer_steps_when_a_fit_must_end_sooner():
    schedule = speedrun.Triangular(1.0, total_steps=100)
    schedule.shorten(50)  # 0.2 -> 1 over the first 11 steps, then down to 0.07 at step 50
    np.testing.assert_allclose([float(schedule(s)) for s in (0, 11, 50, 80)], [0.2, 1.0, 0.07, 0.07], atol=1e-6)
    schedule.shorten(200)  # given back, never beyond the steps it was made for
    assert schedule.total_steps == 100 and schedule.get_config()["total_steps"] == 100
    schedule.shorten(50)
    assert schedule.get_config()["total_steps"] == 50
    # A compiled step reads the shortened schedule (the value lives in a variable).
    step = tf.function(lambda s: schedule(s))
    before = float(step(30))
    schedule.shorten(30)
    assert float(step(30)) == pytest.approx(0.07) != before


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_the_fitted_schedule_follows_the_mean_pace_and_gives_epochs_back(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(speedrun.time, "perf_counter", clock)
    schedule = speedrun.Triangular(1.0, total_steps=18 * 10)
    lookahead = speedrun.Lookahead(total_steps=180)
    fitter = speedrun.FitScheduleToTime(1000.0, schedule, lookahead, steps_per_epoch=10)
    fitter.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    fitter.model.stop_training = False
    fitter.on_train_begin()
    shortened = []
    # The first epoch traces (90 s, not counted); then 50 s epochs, one of 150 s (a busy host).
    for epoch, seconds in enumerate([90, 50, 150] + [50] * 15):
        clock.now += seconds
        fitter.on_epoch_end(epoch)
        shortened.append(fitter.shortened_to)
        if fitter.model.stop_training:
            break
    # After the slow epoch the mean pace (100 s) fits 10 epochs in 1,000 s (the last
    # epoch's 150 s: 7, for good); as the pace recovers the epochs come back, up to 17.
    assert shortened[:4] == [None, None, 10, 11] and lookahead.total_steps == schedule.total_steps
    assert shortened[-1] == len(shortened) == 17 and schedule.total_steps == 170 and clock.now <= 1000.0


class _SlowEpochs(keras.callbacks.Callback):
    """Every epoch takes at least `seconds` (a busy machine)."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def on_epoch_end(self, epoch, logs=None):
        time.sleep(self.seconds)


def test_a_fit_with_a_time_limit_anneals_within_it(tiny_datasets):
    keras.utils.set_random_seed(0)
    model = mmkeras.create_model("image_airbench", **tiny_datasets.model_kwargs(), branch_config=SMALL)
    # Epochs of >= 0.5 s and 2.4 s to train: 8 epochs do not fit, about 4 do.
    trained, history, stats = speedrun.fit_speedrun(model, tiny_datasets, epochs=8, verbose=0, tta=False,
                                                    time_limit=2.4, callbacks=[_SlowEpochs(0.5)])
    shortened = stats["schedule_shortened_to"]
    assert shortened is not None and 2 <= shortened < 8 and len(history["loss"]) == shortened
    steps = math.ceil(tiny_datasets.size("train") / tiny_datasets.batch_size)
    schedule = trained.optimizer._learning_rate  # ended at the end of its (shortened) schedule
    assert schedule.total_steps == shortened * steps
    assert float(schedule(shortened * steps)) == pytest.approx(speedrun.LEARNING_RATE_PER_EXAMPLE
                                                               * tiny_datasets.batch_size * 0.07)
    # A limit that is never reached changes nothing.
    keras.utils.set_random_seed(0)
    model = mmkeras.create_model("image_airbench", **tiny_datasets.model_kwargs(), branch_config=SMALL)
    _, history, stats = speedrun.fit_speedrun(model, tiny_datasets, epochs=3, verbose=0, tta=False, time_limit=600)
    assert stats["schedule_shortened_to"] is None and len(history["loss"]) == 3
    with pytest.raises(ValueError, match="time_limit=0"):
        speedrun.fit_speedrun(model, tiny_datasets, epochs=3, time_limit=0)


def test_lookahead_pulls_the_weights_towards_their_average():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
    start = model.get_weights()[0].copy()
    callback = speedrun.Lookahead(total_steps=5, every=5)
    callback.set_model(model)
    callback.on_train_begin()
    moved = start + 1.0
    for step in range(5):
        model.set_weights([moved])
        callback.on_train_batch_end(step)
    decay = 0.95 ** 5  # at the last step: progress 1
    np.testing.assert_allclose(model.get_weights()[0], start + (1 - decay) * 1.0, atol=1e-6)
    model.set_weights([moved + 1.0])  # a step after the last average is dropped at the end
    callback.on_train_end()
    np.testing.assert_allclose(model.get_weights()[0], start + (1 - decay) * 1.0, atol=1e-6)


def test_planned_epochs_follow_the_data():
    assert speedrun.planned_epochs(45_000, 512) == 10
    assert speedrun.planned_epochs(2_000, 32) == 14  # 63 steps an epoch, 880 steps
    assert speedrun.planned_epochs(100, 16) == speedrun.MAX_EPOCHS
    with pytest.raises(ValueError, match="n_train=0"):
        speedrun.planned_epochs(0, 16)
    # What a budget with room may make of them: twice, within MAX_EPOCHS.
    assert [speedrun.extended_epochs(e) for e in (10, 14, 30, speedrun.MAX_EPOCHS)] == [
        20, 28, speedrun.MAX_EPOCHS, speedrun.MAX_EPOCHS]
    with pytest.raises(ValueError, match="epochs=0"):
        speedrun.extended_epochs(0)
    # Muon's step target: airbench94_muon's 200 steps (8 epochs of 25 at 50,000 images).
    assert speedrun.planned_epochs(50_000, 2000, "muon") == 8
    assert speedrun.planned_epochs(45_000, 2000, "muon") == 9
    assert speedrun.planned_epochs(7_200, 250, "muon") == 8  # 29 steps an epoch: 7, at least 8
    # Fewer images, more passes: 1 / sqrt(images) below MUON_SMALL_SET.
    assert [speedrun.planned_epochs(n, 62, "muon") for n in (1_800, 800, 100)] == [16, 24, 40]
    with pytest.raises(ValueError, match="optimizer='adam'"):
        speedrun.planned_epochs(45_000, 2000, "adam")


def test_the_recipe_follows_the_data():
    # Muon on images <= 64x64: at its published batch where an epoch has >= 20 steps of it,
    # else the batch halved until one does (never below MUON_MIN_BATCH); SGD on larger images.
    assert speedrun.recipe_for(45_000, (32, 32)) == ("muon", 2000)
    assert speedrun.recipe_for(500_000) == ("muon", 2000)
    assert speedrun.recipe_for(39_999, 32) == ("muon", 1000)
    assert speedrun.recipe_for(7_200, (32, 32)) == ("muon", 250)
    assert speedrun.recipe_for(1_800, 32) == ("muon", 62)
    assert speedrun.recipe_for(100, 32) == ("muon", 62)
    # Larger images up to 64x64: as many pixels a batch as 2,000 of 32x32, then halved alike.
    assert speedrun.recipe_for(45_000, (64, 64)) == ("muon", 500)
    assert speedrun.recipe_for(5_821, 64) == ("muon", 250)
    assert speedrun.recipe_for(7_200, (28, 40)) == ("muon", 228)  # 1,828 a batch, halved
    assert speedrun.recipe_for(45_000, (64, 65)) == ("sgd", speedrun.BATCH_SIZE)
    assert speedrun.recipe_for(7_200, 224) == ("sgd", speedrun.BATCH_SIZE)
    with pytest.raises(ValueError, match="n_train=0"):
        speedrun.recipe_for(0)


def test_fit_speedrun_learns_and_saves_with_its_tta(tiny_datasets, tmp_path):
    keras.utils.set_random_seed(0)
    model = mmkeras.create_model("image_airbench", **tiny_datasets.model_kwargs(), image_augmentation="speedrun",
                                 branch_config=SMALL)
    assert mmkeras.model_info("image_airbench")["training"] == "speedrun"
    kernel = keras.ops.convert_to_numpy(model.get_layer("image_whiten").kernel).copy()
    trained, history, stats = speedrun.fit_speedrun(model, tiny_datasets, epochs=4, verbose=0)
    assert history["loss"][-1] < history["loss"][0] - 0.01
    assert [int(layer.epoch.numpy()) for layer in speedrun.flip_layers(trained)] == [3]  # alternated
    assert stats["tta"] and stats["whitening_images"] == tiny_datasets.size("train")
    assert not np.allclose(keras.ops.convert_to_numpy(model.get_layer("image_whiten").kernel), kernel)
    assert unwrap_tta(trained) is model and trained is not model
    features, _ = mmkeras.training.split_arrays(tiny_datasets, "test")
    with_tta, without = (mmkeras.training.predict_proba(m, features) for m in (trained, model))
    assert not np.allclose(with_tta, without)  # the six views are averaged
    path = tmp_path / "airbench.keras"
    trained.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(features, verbose=0)["label"],
                               trained.predict(features, verbose=0)["label"], atol=1e-5)


def test_airbench_branch_checks_its_options():
    with pytest.raises(ValueError, match="widths"):
        mmkeras.create_model("image_airbench", num_classes=3, branch_config={"widths": (8, 0)})
    with pytest.raises(ValueError, match="at least 9x9"):
        mmkeras.create_model("image_airbench", num_classes=3, image_shape=(8, 8, 3))


def test_early_fusion_borrows_the_adapted_branch_exactly(tiny_datasets):
    keras.utils.set_random_seed(0)
    kwargs = tiny_datasets.model_kwargs()
    source = mmkeras.create_model("image_airbench", **kwargs, branch_config=SMALL)
    speedrun.adapt_whitening(source, tiny_datasets)
    fused = mmkeras.create_model("early_airbench_bilstm", **kwargs, image_config=SMALL, image_init=source)
    assert fused.get_layer("image_whiten").kernel.shape[2] > source.get_layer("image_whiten").kernel.shape[2]
    features, _ = mmkeras.training.split_arrays(tiny_datasets, "test")
    vector = {m: keras.Model(m.input, m.get_layer("image_scale").output) for m in (source, fused)}
    np.testing.assert_allclose(vector[fused].predict(features, verbose=0),
                               vector[source].predict(features, verbose=0), atol=1e-4)
