"""Tests of the image and text branches, generated from the branch registries.

Every registered branch is built inside a small functional model with a softmax head,
trained a few steps, saved to `.keras` and reloaded without `custom_objects`. Sizes are
tiny so the whole file runs in about a minute on 2 CPU cores; nothing is downloaded.
"""

import os

import numpy as np
import pytest

import keras

from mmkeras.branches import (
    IMAGE_BRANCHES,
    IMAGE_DEFAULTS,
    SIZES,
    TEXT_BRANCHES,
    TEXT_DEFAULTS,
    ImageFeatures,
    TextFeatures,
    branch_options,
    image_branch,
    text_branch,
)

IMAGE_SIZE = 16
CHANNELS = 3
VOCAB_SIZE = 50
SEQUENCE_LENGTH = 12
NUM_CLASSES = 3
BATCH = 6

# Tiny options per branch, so tests are fast; a branch missing here is tested at its
# "small" defaults. Dropout is off so that a few steps reliably lower the loss.
TINY_IMAGE = {
    "simple_cnn": {"filters": 4},
    "vgg": {"width": 4, "blocks": 2},
    "resnet": {"width": 4, "depth": 1, "stages": 2},
    "resnet9": {"width": 2},
    "applications": {
        "backbone": "MobileNetV2",
        "weights": None,
        "input_size": 32,
        "backbone_kwargs": {"alpha": 0.35},
    },
}
# The applications backbone gets 24x24 pixels resized to 32x32 inside the graph.
IMAGE_SHAPES = {"applications": (24, 24, CHANNELS)}
TINY_TEXT = {
    "lstm": {"embed_dim": 8, "units": 8},
    "bilstm": {"embed_dim": 8, "units": 8},
    "gru": {"embed_dim": 8, "units": 8},
    "cnn": {"embed_dim": 8, "filters": 4, "kernel_sizes": (2, 3)},
    "transformer": {"embed_dim": 8, "num_layers": 2, "num_heads": 2, "ff_dim": 16, "dropout": 0.0},
}
# Branches that are plain CNNs over pixels: they must take any number of channels.
CNN_BRANCHES = ["simple_cnn", "vgg", "resnet", "resnet9"]


@pytest.fixture(autouse=True)
def _seeded():
    """Deterministic tests: the same random inits on every run (MMKERAS_TEST_SEED
    picks another seed, to check that nothing passes by luck)."""
    keras.utils.set_random_seed(int(os.environ.get("MMKERAS_TEST_SEED", "0")))


def _image_shape(name):
    return IMAGE_SHAPES.get(name, (IMAGE_SIZE, IMAGE_SIZE, CHANNELS))


def _image_batch(name, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(BATCH, *_image_shape(name))).astype("uint8")


def _token_batch(length=SEQUENCE_LENGTH, seed=0):
    """Right-padded ids: full row, short rows, a one-token row and an all-padding row."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB_SIZE, size=(BATCH, length)).astype("int32")
    for row, valid in enumerate([length, 5, 1, 0, 3, length - 2]):
        ids[row, valid:] = 0
    return ids


def _labels():
    return np.arange(BATCH) % NUM_CLASSES


def _image_model(name, *, prefix="image", **options):
    image = keras.Input(_image_shape(name), dtype="uint8", name="pixels")
    features = image_branch(name, image, prefix=prefix, **{**TINY_IMAGE.get(name, {}), **options})
    probs = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="head")(features.vector)
    return keras.Model(image, probs), features


def _text_model(name, *, prefix="text", **options):
    token_ids = keras.Input((SEQUENCE_LENGTH,), dtype="int32", name="token_ids")
    features = text_branch(
        name,
        token_ids,
        vocab_size=VOCAB_SIZE,
        sequence_length=SEQUENCE_LENGTH,
        prefix=prefix,
        **{**TINY_TEXT.get(name, {}), **options},
    )
    probs = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="head")(features.vector)
    return keras.Model(token_ids, probs), features


def _branch_layer_names(model):
    return [
        layer.name
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer) and layer.name != "head"
    ]


def _compile(model, learning_rate=1e-3, run_eagerly=False):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        jit_compile=False,
        run_eagerly=run_eagerly,
    )


def _vector(model, x):
    """The branch's `vector` (the head's input) of a model built by the helpers above."""
    return keras.Model(model.inputs, model.get_layer("head").input).predict(x, verbose=0)


def _assert_differ(a, b):
    """Relative difference: a randomly initialised keras.applications backbone outputs
    features of ~1e-11 in inference mode (BatchNorm statistics not yet adapted)."""
    assert np.abs(a - b).max() > 1e-3 * np.abs(a).max() > 0


def _assert_same(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * max(np.abs(a).max(), 1e-30))


def _check_trains_and_round_trips(model, x, tmp_path, run_eagerly=False):
    _compile(model, run_eagerly=run_eagerly)
    history = model.fit(x, _labels(), batch_size=BATCH, epochs=6, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0], losses

    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)  # no custom_objects: all layers registered
    np.testing.assert_allclose(
        model.predict(x, verbose=0), reloaded.predict(x, verbose=0), atol=1e-5
    )
    _assert_same(_vector(model, x), _vector(reloaded, x))


# ----------------------------------------------------------------------------- registry


@pytest.mark.parametrize("kind", ["image", "text"])
def test_defaults_are_data_and_cover_every_option(kind):
    registry, defaults = {
        "image": (IMAGE_BRANCHES, IMAGE_DEFAULTS),
        "text": (TEXT_BRANCHES, TEXT_DEFAULTS),
    }[kind]
    assert set(registry) == set(defaults)
    for name in registry:
        for size in SIZES:
            assert sorted(defaults[name][size]) == sorted(branch_options(kind, name))


def test_registries_hold_the_documented_branches():
    assert list(IMAGE_BRANCHES) == ["simple_cnn", "vgg", "resnet", "resnet9", "airbench", "applications"]
    assert list(TEXT_BRANCHES) == ["lstm", "bilstm", "gru", "cnn", "transformer"]


# ----------------------------------------------------------------------------- image


@pytest.mark.parametrize("name", list(IMAGE_BRANCHES))
def test_image_branch_builds_with_prefixed_deterministic_names(name):
    model_a, features = _image_model(name, prefix="left")
    model_b, _ = _image_model(name, prefix="left")
    assert isinstance(features, ImageFeatures)

    names = _branch_layer_names(model_a)
    assert names and all(n.startswith("left_") for n in names), names
    assert names == _branch_layer_names(model_b)

    batch, (vector_dim,) = features.vector.shape[0], features.vector.shape[1:]
    assert batch is None and vector_dim is not None
    assert len(features.feature_map.shape) == 4 and features.feature_map.shape[-1] is not None

    x = _image_batch(name)
    probs_a = model_a.predict(x, verbose=0)
    probs_b = model_b.predict(x, verbose=0)
    assert probs_a.shape == (BATCH, NUM_CLASSES)
    assert np.all(np.isfinite(probs_a))
    np.testing.assert_allclose(probs_a.sum(-1), 1.0, atol=1e-5)
    # Two random inits differ, so the round-trip equality checks cannot pass by accident.
    _assert_differ(_vector(model_a, x), _vector(model_b, x))


@pytest.mark.parametrize("name", list(IMAGE_BRANCHES))
def test_image_branch_trains_and_round_trips(name, tmp_path):
    model, _ = _image_model(name)
    # Tracing a keras.applications backbone's train step costs ~15 s on 2 CPU cores; run
    # it eagerly here (test_applications_frozen_backbone_is_unchanged_by_fit traces it).
    run_eagerly = name == "applications"
    _check_trains_and_round_trips(model, _image_batch(name), tmp_path, run_eagerly=run_eagerly)


def test_image_feature_shapes():
    image = keras.Input((32, 32, 3), dtype="uint8")
    simple = image_branch("simple_cnn", image, prefix="a", filters=8)
    assert simple.feature_map.shape == (None, 15, 15, 8)
    assert simple.vector.shape == (None, 15 * 15 * 8)
    vgg = image_branch("vgg", image, prefix="b", width=4, blocks=3)
    assert vgg.feature_map.shape == (None, 4, 4, 16)
    assert vgg.vector.shape == (None, 16)
    resnet = image_branch("resnet", image, prefix="c", width=4, depth=1, stages=3)
    assert resnet.feature_map.shape == (None, 8, 8, 16)
    assert resnet.vector.shape == (None, 16)
    resnet9 = image_branch("resnet9", image, prefix="d", width=2)
    assert resnet9.feature_map.shape == (None, 4, 4, 16)
    assert resnet9.vector.shape == (None, 16)


def test_image_rescale_layer_maps_pixels_to_unit_range():
    image = keras.Input((8, 8, 3), dtype="uint8")
    features = image_branch("simple_cnn", image, filters=2)
    model = keras.Model(image, features.vector)
    rescale = model.get_layer("image_rescale")
    assert isinstance(rescale, keras.layers.Rescaling)
    pixels = np.full((1, 8, 8, 3), 255, dtype="uint8")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(rescale(pixels)), 1.0)


@pytest.mark.parametrize("name", CNN_BRANCHES)
def test_cnn_branches_take_rescaled_pixels_with_extra_channels(name):
    image = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 5), dtype="float32")
    features = image_branch(name, image, rescale=False, **TINY_IMAGE[name])
    model = keras.Model(image, features.vector)
    assert "image_rescale" not in [layer.name for layer in model.layers]
    x = np.random.default_rng(0).uniform(size=(2, IMAGE_SIZE, IMAGE_SIZE, 5)).astype("float32")
    out = model(x)
    assert np.all(np.isfinite(out))
    # The fifth channel is read, not dropped: changing it alone changes the vector.
    changed = x.copy()
    changed[..., 4] = 1.0 - changed[..., 4]
    _assert_differ(keras.ops.convert_to_numpy(out), keras.ops.convert_to_numpy(model(changed)))


def test_applications_frozen_backbone_is_unchanged_by_fit():
    model, _ = _image_model("applications", trainable=False)
    backbone = model.get_layer("image_backbone")
    assert isinstance(backbone, keras.Model) and not backbone.trainable
    assert not backbone.trainable_weights
    assert type(model.get_layer("image_preprocess")).__name__ == "ApplicationPreprocessing"
    assert isinstance(model.get_layer("image_resize"), keras.layers.Resizing)
    before = [np.array(w) for w in backbone.weights]
    head_before = np.array(model.get_layer("head").kernel)

    _compile(model)
    model.fit(_image_batch("applications"), _labels(), batch_size=BATCH, epochs=1, verbose=0)

    for w, old in zip(backbone.weights, before):
        np.testing.assert_array_equal(np.array(w), old, err_msg=w.path)
    assert np.abs(np.array(model.get_layer("head").kernel) - head_before).max() > 0


def test_applications_preprocessing_follows_the_backbone():
    # MobileNetV2 maps [0, 255] to [-1, 1]; ResNet50 ("caffe") flips to BGR and centres.
    from mmkeras.branches.applications import ApplicationPreprocessing

    pixels = np.full((1, 2, 2, 3), 1.0, dtype="float32")  # already rescaled to [0, 1]
    mobilenet = ApplicationPreprocessing("MobileNetV2")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(mobilenet(pixels)), 1.0, atol=1e-6)
    resnet = ApplicationPreprocessing("ResNet50")
    expected = 255.0 - np.array([103.939, 116.779, 123.68])
    out = keras.ops.convert_to_numpy(resnet(pixels))
    np.testing.assert_allclose(out[0, 0, 0], expected, atol=1e-4)


# ----------------------------------------------------------------------------- text


@pytest.mark.parametrize("name", list(TEXT_BRANCHES))
def test_text_branch_builds_with_prefixed_deterministic_names(name):
    model_a, features = _text_model(name, prefix="caption")
    model_b, _ = _text_model(name, prefix="caption")
    assert isinstance(features, TextFeatures)

    # All the branch's layers, including those only `sequence` and `mask` depend on.
    full = keras.Model(model_a.inputs, [model_a.output, features.sequence, features.mask])
    names = _branch_layer_names(full)
    assert names and all(n.startswith("caption_") for n in names), names
    assert _branch_layer_names(model_a) == _branch_layer_names(model_b)
    for required in ("caption_nonempty", "caption_mask", "caption_embedding"):
        assert required in names

    assert features.vector.shape[0] is None and features.vector.shape[1] is not None
    assert features.sequence.shape[:2] == (None, SEQUENCE_LENGTH)
    assert features.mask.shape == (None, SEQUENCE_LENGTH)
    assert features.mask.dtype == "bool"

    x = _token_batch()
    probs_a = model_a.predict(x, verbose=0)
    probs_b = model_b.predict(x, verbose=0)
    assert probs_a.shape == (BATCH, NUM_CLASSES)
    assert np.all(np.isfinite(probs_a))
    _assert_differ(_vector(model_a, x), _vector(model_b, x))


@pytest.mark.parametrize("name", list(TEXT_BRANCHES))
def test_text_branch_trains_and_round_trips(name, tmp_path):
    model, _ = _text_model(name)
    _check_trains_and_round_trips(model, _token_batch(), tmp_path)


@pytest.mark.parametrize("name", list(TEXT_BRANCHES))
def test_text_padding_never_changes_the_vector(name):
    # Any length up to sequence_length (here 16): the same weights see 12 and 16 steps.
    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    features = text_branch(
        name, token_ids, vocab_size=VOCAB_SIZE, sequence_length=16, **TINY_TEXT.get(name, {})
    )
    model = keras.Model(
        token_ids, {"vector": features.vector, "sequence": features.sequence, "mask": features.mask}
    )
    ids = _token_batch()
    longer = np.concatenate([ids, np.zeros((BATCH, 4), "int32")], axis=1)
    out = model.predict(ids, verbose=0)
    out_longer = model.predict(longer, verbose=0)

    assert np.all(np.isfinite(out["vector"]))  # row 3 is all padding
    np.testing.assert_allclose(out["vector"], out_longer["vector"], atol=1e-5)
    assert features.vector.shape[-1] == out["vector"].shape[-1]
    assert out["sequence"].shape[:2] == ids.shape
    # The mask marks real tokens; an empty caption reads as one [UNK] token.
    expected_mask = ids != 0
    expected_mask[3, 0] = True
    np.testing.assert_array_equal(out["mask"], expected_mask)
    np.testing.assert_array_equal(out["sequence"][~expected_mask], 0.0)

    # Changing what padded positions hold (the padding embedding) changes nothing.
    embedding = model.get_layer("text_embedding")
    table = np.array(embedding.embeddings)
    table[0] = np.random.default_rng(1).normal(size=table.shape[1]) * 10.0
    embedding.embeddings.assign(table)
    np.testing.assert_allclose(model.predict(ids, verbose=0)["vector"], out["vector"], atol=1e-5)


def test_image_and_text_branches_share_a_model_without_name_clashes():
    image = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), dtype="uint8", name="pixels")
    token_ids = keras.Input((SEQUENCE_LENGTH,), dtype="int32", name="token_ids")
    img = image_branch("resnet", image, **TINY_IMAGE["resnet"])
    txt = text_branch(
        "transformer", token_ids, vocab_size=VOCAB_SIZE, sequence_length=SEQUENCE_LENGTH,
        **TINY_TEXT["transformer"],
    )
    merged = keras.layers.Concatenate(name="fusion_concat")([img.vector, txt.vector])
    model = keras.Model({"pixels": image, "token_ids": token_ids}, merged)
    names = [n for n in _branch_layer_names(model) if n != "fusion_concat"]
    assert all(n.startswith(("image_", "text_")) for n in names)
    assert len(names) == len(set(names))


# ----------------------------------------------------------------------------- errors


def test_unknown_branch_names_raise_with_the_received_value():
    image = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    token_ids = keras.Input((SEQUENCE_LENGTH,), dtype="int32")
    with pytest.raises(ValueError, match=r"alexnet.*simple_cnn, vgg, resnet, resnet9, airbench, applications"):
        image_branch("alexnet", image)
    with pytest.raises(ValueError, match=r"bert.*lstm, bilstm, gru, cnn, transformer"):
        text_branch("bert", token_ids, vocab_size=VOCAB_SIZE, sequence_length=SEQUENCE_LENGTH)


def test_unknown_options_and_values_raise_with_the_received_value():
    image = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), dtype="uint8")
    token_ids = keras.Input((SEQUENCE_LENGTH,), dtype="int32")
    with pytest.raises(ValueError, match=r"\['widht'\].*'resnet'.*allowed: width, depth"):
        image_branch("resnet", image, widht=8)
    with pytest.raises(ValueError, match=r"\['unit'\].*'lstm'.*units"):
        text_branch(
            "lstm", token_ids, vocab_size=VOCAB_SIZE, sequence_length=SEQUENCE_LENGTH, unit=8
        )
    with pytest.raises(ValueError, match="size='huge'"):
        image_branch("vgg", image, size="huge")
    with pytest.raises(ValueError, match="backbone='MobileNetV9'.*MobileNetV2"):
        image_branch("applications", image, backbone="MobileNetV9")
    with pytest.raises(ValueError, match="prefix='2bad name'"):
        image_branch("vgg", image, prefix="2bad name")
    with pytest.raises(ValueError, match="rescale=False.*uint8"):
        image_branch("vgg", image, rescale=False)
    with pytest.raises(ValueError, match="sequence_length=4"):
        text_branch("gru", token_ids, vocab_size=VOCAB_SIZE, sequence_length=4)
    with pytest.raises(ValueError, match="num_heads=3"):
        text_branch(
            "transformer", token_ids, vocab_size=VOCAB_SIZE, sequence_length=SEQUENCE_LENGTH,
            embed_dim=8, num_heads=3,
        )
    with pytest.raises(ValueError, match="simple_cnn.*image.shape"):
        image_branch("simple_cnn", keras.Input((None, None, 3), dtype="uint8"))
    with pytest.raises(ValueError, match="width=0"):
        image_branch("resnet9", image, width=0)


# ----------------------------------------------------------------------------- precision


@pytest.fixture
def mixed_precision():
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    yield
    keras.config.set_dtype_policy(policy)


def test_every_branch_runs_under_mixed_precision(mixed_precision):
    token_ids = keras.Input((SEQUENCE_LENGTH,), dtype="int32", name="token_ids")
    image = keras.Input((24, 24, 3), dtype="uint8", name="pixels")
    vectors = [
        text_branch(
            name, token_ids, vocab_size=VOCAB_SIZE, sequence_length=SEQUENCE_LENGTH,
            prefix=f"text_{name}", **TINY_TEXT.get(name, {}),
        ).vector
        for name in TEXT_BRANCHES
    ] + [
        image_branch(name, image, prefix=f"image_{name}", **TINY_IMAGE.get(name, {})).vector
        for name in IMAGE_BRANCHES
    ]
    model = keras.Model({"token_ids": token_ids, "pixels": image}, vectors)
    outputs = model.predict(
        {"token_ids": _token_batch(), "pixels": _image_batch("applications")}, verbose=0
    )
    for vector in outputs:
        assert vector.dtype == np.float16 and np.all(np.isfinite(vector))
