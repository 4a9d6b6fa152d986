"""with_flip_tta / with_tta: predictions averaged over views of an image, as a saveable model."""

import keras
import numpy as np
import pytest

import mmkeras
from mmkeras.models.tta import HorizontalFlip, Shift
from mmkeras.models import unwrap_tta, with_flip_tta, with_tta

KW = dict(num_classes=3, image_shape=(8, 8, 3), vocab_size=20, sequence_length=5)


def _batch(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 255, (n, 8, 8, 3)).astype("float32"),
            "text": rng.integers(0, 20, (n, 5)).astype("int32")}


def test_horizontal_flip_mirrors_the_width_axis():
    x = np.arange(2 * 3 * 4 * 1, dtype="float32").reshape(2, 3, 4, 1)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(HorizontalFlip()(x)), x[:, :, ::-1])


def test_tta_averages_the_two_views_and_is_mirror_invariant(tmp_path):
    keras.utils.set_random_seed(0)
    base = mmkeras.create_model("seed_concat", **KW)
    tta = with_flip_tta(base)
    x = _batch()
    mirrored = dict(x, image=x["image"][:, :, ::-1])
    expected = (base(x)["label"] + base(mirrored)["label"]) / 2
    got = tta(x)["label"]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(expected), atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(tta(mirrored)["label"]),
                               keras.ops.convert_to_numpy(got), atol=1e-6)
    assert not np.allclose(keras.ops.convert_to_numpy(base(x)["label"]), keras.ops.convert_to_numpy(got))
    path = tmp_path / "tta.keras"
    tta.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects: the flip layer is registered
    np.testing.assert_allclose(loaded.predict(x, verbose=0)["label"], tta.predict(x, verbose=0)["label"], atol=1e-6)


def test_tta_keeps_every_output_and_rejects_models_without_an_image_input():
    model = mmkeras.create_model("seed_concat", **KW, aux_loss_weights={"image_label": 0.3})
    assert set(with_flip_tta(model).output) == {"label", "image_label"}
    tokens = keras.Input((5,), dtype="int32", name="text")
    text_only = keras.Model({"text": tokens}, {"label": keras.layers.Embedding(20, 3, name="label")(tokens)})
    with pytest.raises(ValueError, match="'image' input"):
        with_flip_tta(text_only)


def test_shift_moves_content_with_reflected_borders():
    x = np.arange(2 * 4 * 5 * 1, dtype="float32").reshape(2, 4, 5, 1)
    down = keras.ops.convert_to_numpy(Shift(1)(x))
    np.testing.assert_array_equal(down[:, 1:, 1:], x[:, :-1, :-1])
    np.testing.assert_array_equal(down[:, 0, 1:], x[:, 1, :-1])  # the reflected top row
    up = keras.ops.convert_to_numpy(Shift(-1)(x))
    np.testing.assert_array_equal(up[:, :-1, :-1], x[:, 1:, 1:])
    with pytest.raises(ValueError, match="offset=0"):
        Shift(0)


def test_shift_tta_weighs_the_unshifted_pair_half_and_round_trips(tmp_path):
    keras.utils.set_random_seed(0)
    base = mmkeras.create_model("seed_concat", **KW)
    tta = with_tta(base, shift=1)
    x = _batch()

    def p(image):
        return keras.ops.convert_to_numpy(base(dict(x, image=image))["label"])

    img = x["image"]
    shifted = [keras.ops.convert_to_numpy(Shift(o)(img)) for o in (1, -1)]
    expected = (p(img) + p(img[:, :, ::-1])) / 4 + sum(p(s) + p(s[:, :, ::-1]) for s in shifted) / 8
    got = tta.predict(x, verbose=0)["label"]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert unwrap_tta(tta) is base and unwrap_tta(base) is base
    path = tmp_path / "tta.keras"
    tta.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0)["label"], got, atol=1e-6)
    with pytest.raises(ValueError, match="shift=-1"):
        with_tta(base, shift=-1)
