"""Tests for `mmkeras.fusion`. The generic tests are generated from `FUSIONS`, so a new
fusion is tested the day it is added (it only needs an entry in `EXAMPLE_KWARGS`)."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from mmkeras import fusion
from mmkeras.fusion import FUSION_INPUTS, FUSIONS, get_fusion

BATCH = 3

# Small constructor arguments for each registered fusion.
EXAMPLE_KWARGS = {
    "concat": dict(projection_dim=8),
    "weighted_sum": dict(units=8),
    "gmu": dict(units=8),
    "tensor": dict(units=8, projection_dim=4),
    "low_rank_tensor": dict(units=8, rank=3),
    "bilinear": dict(units=8, factor=3),
    "film": dict(),
    "cross_attention": dict(units=8, num_heads=2),
    "co_attention": dict(units=8, num_heads=2),
    "early": dict(channels=4),
}

# Per-example input shapes (no batch axis) for each kind of input; the sizes differ
# from each other so a swapped axis cannot go unnoticed.
INPUT_SHAPES = {
    "vectors": [(12,), (10,)],
    "map_vector": [(5, 6, 3), (10,)],
    "sequence_map": [(7, 10), (4, 5, 6)],
}

# Expected output shape (no batch axis) of each fusion built with EXAMPLE_KWARGS.
EXPECTED_SHAPES = {
    "concat": (16,),
    "weighted_sum": (8,),
    "gmu": (8,),
    "tensor": (8,),
    "low_rank_tensor": (8,),
    "bilinear": (8,),
    "film": (5, 6, 3),
    "cross_attention": (8,),
    "co_attention": (16,),
    "early": (5, 6, 7),
}

NAMES = list(FUSIONS)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1)


def make_layer(fusion_name, **overrides):
    return get_fusion(fusion_name, **{**EXAMPLE_KWARGS[fusion_name], **overrides})


def make_data(name, seed=0, batch=BATCH):
    rng = np.random.default_rng(seed)
    shapes = INPUT_SHAPES[FUSION_INPUTS[name]]
    return [rng.normal(size=(batch, *shape)).astype("float32") for shape in shapes]


def make_model(name, layer, head_units=None):
    shapes = INPUT_SHAPES[FUSION_INPUTS[name]]
    inputs = [keras.Input(shape, name=f"input_{i}") for i, shape in enumerate(shapes)]
    outputs = layer(inputs)
    if head_units is not None:
        outputs = keras.layers.Flatten(name="flatten")(outputs)
        outputs = keras.layers.Dense(head_units, name="head")(outputs)
    return keras.Model(inputs, outputs, name=f"{name}_model")


def run(layer, data, **kwargs):
    return ops.convert_to_numpy(layer(data, **kwargs))


def test_registry_is_complete():
    assert set(FUSIONS) == set(FUSION_INPUTS) == set(EXAMPLE_KWARGS) == set(EXPECTED_SHAPES)
    assert set(FUSION_INPUTS.values()) == set(INPUT_SHAPES)
    for name, cls in FUSIONS.items():
        assert cls.__name__ in fusion.__all__
        assert keras.saving.get_registered_name(cls) == f"mmkeras>{cls.__name__}"


def test_get_fusion_unknown_name_lists_choices():
    with pytest.raises(ValueError) as error:
        get_fusion("nope")
    message = str(error.value)
    assert "fusion='nope'" in message
    for name in FUSIONS:
        assert name in message


@pytest.mark.parametrize("name", NAMES)
def test_output_in_functional_graph(name):
    model = make_model(name, make_layer(name))
    assert tuple(model.output.shape) == (None, *EXPECTED_SHAPES[name])
    outputs = model.predict(make_data(name), verbose=0)
    assert outputs.shape == (BATCH, *EXPECTED_SHAPES[name])
    assert outputs.dtype == np.float32
    assert np.all(np.isfinite(outputs))


@pytest.mark.parametrize("name", NAMES)
def test_mixed_precision(name):
    layer = make_layer(name, dtype="mixed_float16")
    outputs = layer(make_data(name))
    assert keras.backend.standardize_dtype(outputs.dtype) == "float16"
    assert np.all(np.isfinite(ops.convert_to_numpy(outputs)))
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in layer.weights)


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip(name):
    layer = make_layer(name)
    data = make_data(name)
    expected = run(layer, data)
    config = layer.get_config()

    # The config holds exactly the constructor arguments, plus the base layer's.
    base_keys = set(keras.layers.Layer(name="base").get_config())
    params = set(inspect.signature(type(layer).__init__).parameters) - {"self", "kwargs"}
    assert set(config) - base_keys == params

    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    clone(data)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(run(clone, data), expected, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_random_inits_differ(name):
    data = make_data(name)
    first, second = make_layer(name), make_layer(name)
    a, b = run(first, data), run(second, data)
    assert first.weights, "a fusion with weights is needed for equality tests to mean anything"
    assert not np.allclose(a, b, atol=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_save_and_load_keras_file(name, tmp_path):
    model = make_model(name, make_layer(name, name="fusion"), head_units=2)
    data = make_data(name, seed=3)
    expected = model.predict(data, verbose=0)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects: the layers are registered
    assert isinstance(loaded.get_layer("fusion"), FUSIONS[name])
    np.testing.assert_allclose(loaded.predict(data, verbose=0), expected, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_saved_model_export(name, tmp_path):
    model = make_model(name, make_layer(name), head_units=2)
    data = make_data(name, seed=7)
    expected = model.predict(data, verbose=0)
    model.export(tmp_path / "exported", verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "exported"))
    np.testing.assert_allclose(reloaded.serve(data).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_training_lowers_loss(name):
    layer = make_layer(name, name="fusion")
    model = make_model(name, layer, head_units=1)
    data = make_data(name, seed=5, batch=16)
    targets = np.random.default_rng(6).normal(size=(16, 1)).astype("float32")
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    before_weights = [w.numpy().copy() for w in layer.trainable_weights]
    before = model.evaluate(data, targets, verbose=0)
    model.fit(data, targets, epochs=15, batch_size=16, verbose=0)
    after = model.evaluate(data, targets, verbose=0)
    assert after < 0.9 * before
    # Gradients reach the fusion's own weights. Attention key biases are exempt: a
    # bias shared by all keys shifts every score equally, so its gradient is 0.
    for weight, old in zip(layer.trainable_weights, before_weights):
        if not weight.path.endswith("key/bias"):
            assert not np.allclose(weight.numpy(), old), weight.path


# --- Argument and input validation -------------------------------------------------

BAD_ARGUMENTS = [
    ("concat", dict(projection_dim=0), "projection_dim=0"),
    ("weighted_sum", dict(units=-3), "units=-3"),
    ("gmu", dict(units=2.5), "units=2.5"),
    ("gmu", dict(units=4, return_gate="yes"), "return_gate='yes'"),
    ("tensor", dict(units=True), "units=True"),
    ("tensor", dict(projection_dim=-1), "projection_dim=-1"),
    ("low_rank_tensor", dict(units=8, rank=0), "rank=0"),
    ("bilinear", dict(units=8, factor=0), "factor=0"),
    ("bilinear", dict(units=8, dropout=1.5), "dropout=1.5"),
    ("cross_attention", dict(units=10, num_heads=4), "units=10, num_heads=4"),
    ("cross_attention", dict(units=8, return_attention_scores=1), "return_attention_scores=1"),
    ("co_attention", dict(units=8, num_heads=0), "num_heads=0"),
    ("early", dict(channels="4"), "channels='4'"),
]


@pytest.mark.parametrize("name, kwargs, received", BAD_ARGUMENTS)
def test_bad_arguments_raise(name, kwargs, received):
    with pytest.raises(ValueError, match="Received") as error:
        get_fusion(name, **kwargs)
    assert received in str(error.value)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_inputs_raise(name):
    # A single tensor, or the two inputs in the wrong order, is refused at build time.
    first, second = make_data(name)
    with pytest.raises(ValueError, match="Received input shapes"):
        make_layer(name)(first)
    if first.ndim != second.ndim:
        with pytest.raises(ValueError, match="Received input shapes"):
            make_layer(name)([second, first])


# --- Layer-specific behaviour ------------------------------------------------------


def test_concat_without_projection_is_plain_concatenation():
    image, text = make_data("concat")
    layer = fusion.ConcatFusion()
    np.testing.assert_array_equal(run(layer, [image, text]), np.concatenate([image, text], -1))


def test_weighted_sum_weights_are_normalised_and_used():
    layer = fusion.WeightedSumFusion(units=8)
    image, text = make_data("weighted_sum")
    layer([image, text])
    np.testing.assert_allclose(ops.convert_to_numpy(layer.modality_weights), [0.5, 0.5])
    layer.modality_logits.assign([2.0, -1.0])
    weights = ops.convert_to_numpy(layer.modality_weights)
    assert weights.sum() == pytest.approx(1.0, abs=1e-6)
    assert weights[0] > 0.9
    image_part = ops.convert_to_numpy(layer.image_projection(image))
    text_part = ops.convert_to_numpy(layer.text_projection(text))
    expected = weights[0] * image_part + weights[1] * text_part
    np.testing.assert_allclose(run(layer, [image, text]), expected, atol=1e-6)


def test_gmu_returns_gates_in_unit_interval_that_mix_the_modalities():
    layer = fusion.GatedMultimodalUnit(units=8, return_gate=True)
    image, text = make_data("gmu")
    hidden, gate = (ops.convert_to_numpy(t) for t in layer([image, text]))
    assert gate.shape == hidden.shape == (BATCH, 8)
    assert np.all((gate > 0) & (gate < 1))
    h_image = ops.convert_to_numpy(layer.image_hidden(image))
    h_text = ops.convert_to_numpy(layer.text_hidden(text))
    np.testing.assert_allclose(hidden, gate * h_image + (1 - gate) * h_text, atol=1e-6)

    inputs = [keras.Input((12,)), keras.Input((10,))]
    symbolic = layer(inputs)
    assert [tuple(t.shape) for t in symbolic] == [(None, 8), (None, 8)]


def test_tensor_fusion_holds_unimodal_features_and_constant():
    image, text = make_data("tensor")
    outputs = run(fusion.TensorFusion(), [image, text])
    assert outputs.shape == (BATCH, 13 * 11)
    product = outputs.reshape(BATCH, 13, 11)
    np.testing.assert_allclose(product[:, :12, -1], image, atol=1e-6)
    np.testing.assert_allclose(product[:, -1, :10], text, atol=1e-6)
    outer = image[:, :, None] * text[:, None, :]
    np.testing.assert_allclose(product[:, :12, :10], outer, atol=1e-5)
    np.testing.assert_allclose(product[:, -1, -1], 1.0)


def test_low_rank_tensor_fusion_matches_its_formula():
    layer = fusion.LowRankTensorFusion(units=5, rank=3)
    image, text = make_data("low_rank_tensor")
    outputs = run(layer, [image, text])
    ones = np.ones((BATCH, 1), "float32")
    zi = np.einsum("bi,riu->bru", np.concatenate([image, ones], -1), layer.image_factor.numpy())
    zt = np.einsum("bi,riu->bru", np.concatenate([text, ones], -1), layer.text_factor.numpy())
    expected = np.einsum("r,bru->bu", layer.fusion_weights.numpy(), zi * zt) + layer.bias.numpy()
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_bilinear_output_has_unit_norm(dropout):
    layer = fusion.BilinearFusion(units=8, factor=3, dropout=dropout)
    data = make_data("bilinear")
    for training in (False, True):
        outputs = run(layer, data, training=training)
        np.testing.assert_allclose(np.linalg.norm(outputs, axis=-1), 1.0, atol=1e-4)


def test_film_modulates_by_text_and_is_identity_at_zero():
    layer = fusion.FiLM()
    feature_map, text = make_data("film")
    other_text = np.random.default_rng(9).normal(size=text.shape).astype("float32")
    outputs = run(layer, [feature_map, text])
    assert not np.allclose(outputs, run(layer, [feature_map, other_text]), atol=1e-3)
    gamma = ops.convert_to_numpy(layer.gamma(text))[:, None, None, :]
    beta = ops.convert_to_numpy(layer.beta(text))[:, None, None, :]
    np.testing.assert_allclose(outputs, (1 + gamma) * feature_map + beta, atol=1e-5)
    # With gamma = beta = 0 the `1 +` makes FiLM the identity.
    for weight in layer.weights:
        weight.assign(np.zeros(weight.shape, "float32"))
    np.testing.assert_allclose(run(layer, [feature_map, text]), feature_map, atol=1e-6)


MAP_NAMES = [name for name in NAMES if FUSION_INPUTS[name] != "vectors"]


@pytest.mark.parametrize("name", MAP_NAMES)
def test_unknown_spatial_dims(name):
    # Height and width known only at run time, and different from call to call.
    shapes = INPUT_SHAPES[FUSION_INPUTS[name]]
    map_index = 0 if FUSION_INPUTS[name] == "map_vector" else 1
    channels = shapes[map_index][-1]
    symbolic_shapes = list(shapes)
    symbolic_shapes[map_index] = (None, None, channels)
    inputs = [keras.Input(shape) for shape in symbolic_shapes]
    model = keras.Model(inputs, make_layer(name)(inputs))
    expected = EXPECTED_SHAPES[name]
    if len(expected) == 3:
        assert tuple(model.output.shape) == (None, None, None, expected[-1])
    else:
        assert tuple(model.output.shape) == (None, *expected)
    rng = np.random.default_rng(4)
    for height, width in ((4, 5), (7, 3)):
        data = make_data(name, batch=2)
        data[map_index] = rng.normal(size=(2, height, width, channels)).astype("float32")
        outputs = model.predict(data, verbose=0)
        if len(expected) == 3:
            assert outputs.shape == (2, height, width, expected[-1])
        else:
            assert outputs.shape == (2, *expected)
        assert np.all(np.isfinite(outputs))


def test_early_fusion_appends_projected_text_to_every_pixel():
    layer = fusion.EarlyFusion(channels=4)
    inputs = [keras.Input((None, None, 3), dtype="uint8"), keras.Input((10,))]
    model = keras.Model(inputs, layer(inputs))
    image = np.random.default_rng(0).integers(0, 255, size=(2, 6, 3, 3)).astype("uint8")
    text = np.random.default_rng(1).normal(size=(2, 10)).astype("float32")
    outputs = model.predict([image, text], verbose=0)
    assert outputs.shape == (2, 6, 3, 7)
    np.testing.assert_array_equal(outputs[..., :3], image.astype("float32"))
    projected = ops.convert_to_numpy(layer.text_projection(text))
    np.testing.assert_allclose(
        outputs[..., 3:], np.broadcast_to(projected[:, None, None, :], (2, 6, 3, 4)), atol=1e-6
    )


# --- Masks for the sequence fusions ------------------------------------------------

SEQUENCE_NAMES = [name for name in NAMES if FUSION_INPUTS[name] == "sequence_map"]


def _pad_tokens(text, mask, extra, seed=11):
    """Appends `extra` random tokens, all marked as padding."""
    noise = np.random.default_rng(seed).normal(size=(text.shape[0], extra, text.shape[2]))
    padded_text = np.concatenate([text, noise.astype("float32")], axis=1)
    padded_mask = np.concatenate([mask, np.zeros((mask.shape[0], extra), bool)], axis=1)
    return padded_text, padded_mask


@pytest.mark.parametrize("name", SEQUENCE_NAMES)
def test_padded_tokens_do_not_change_output(name):
    layer = make_layer(name)
    text, image = make_data(name)
    mask = np.ones(text.shape[:2], bool)
    mask[0, 4:] = False  # the first example already has padding of its own
    expected = run(layer, [text, image], mask=[mask, None])

    padded_text, padded_mask = _pad_tokens(text, mask, extra=5)
    actual = run(layer, [padded_text, image], mask=[padded_mask, None])
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    # Without its mask the same padded input does change the output.
    assert not np.allclose(run(layer, [padded_text, image]), expected, atol=1e-3)


@pytest.mark.parametrize("name", SEQUENCE_NAMES)
def test_mask_flows_from_embedding_in_functional_model(name):
    # Token 0 is padding: Embedding(mask_zero=True) attaches the mask and Keras passes it.
    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    image_map = keras.Input(INPUT_SHAPES["sequence_map"][1], name="image_map")
    tokens = keras.layers.Embedding(20, 10, mask_zero=True, name="embedding")(token_ids)
    model = keras.Model([token_ids, image_map], make_layer(name)([tokens, image_map]))

    ids = np.array([[3, 4, 5, 0], [6, 7, 8, 9], [2, 0, 0, 0]], "int32")
    padded = np.concatenate([ids, np.zeros((3, 6), "int32")], axis=1)
    _, image = make_data(name)
    expected = model.predict([ids, image], verbose=0)
    np.testing.assert_allclose(model.predict([padded, image], verbose=0), expected, atol=1e-5)


@pytest.mark.parametrize("name", SEQUENCE_NAMES)
def test_masked_image_regions_are_ignored(name):
    layer = make_layer(name)
    text, image = make_data(name)
    region_mask = np.ones(image.shape[:3], bool)
    region_mask[:, 0, :] = False  # the first row of regions
    expected = run(layer, [text, image], mask=[None, region_mask])
    changed = image.copy()
    changed[:, 0] = 100.0
    actual = run(layer, [text, changed], mask=[None, region_mask])
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    assert not np.allclose(run(layer, [text, changed]), run(layer, [text, image]), atol=1e-3)


def test_cross_attention_scores_cover_the_image_grid():
    layer = fusion.CrossModalAttention(units=8, num_heads=2, return_attention_scores=True)
    text, image = make_data("cross_attention")
    mask = np.ones(text.shape[:2], bool)
    mask[1, 3:] = False
    pooled, scores = (ops.convert_to_numpy(t) for t in layer([text, image], mask=[mask, None]))
    assert pooled.shape == (BATCH, 8)
    assert scores.shape == (BATCH, 2, 7, 4 * 5)  # (batch, heads, tokens, H * W)
    row_sums = scores.sum(-1)
    # Each valid token's weights over the regions sum to 1; padded tokens' rows are 0.
    valid = np.broadcast_to(mask[:, None, :], row_sums.shape)
    np.testing.assert_allclose(row_sums, valid.astype("float32"), atol=1e-5)
    # Same pooled output as without scores, after copying the weights.
    plain = fusion.CrossModalAttention(units=8, num_heads=2)
    plain([text, image])
    plain.set_weights(layer.get_weights())
    np.testing.assert_allclose(run(plain, [text, image], mask=[mask, None]), pooled, atol=1e-6)

    inputs = [keras.Input((None, 10)), keras.Input((4, 5, 6))]
    symbolic = layer(inputs)
    assert [tuple(t.shape) for t in symbolic] == [(None, 8), (None, 2, None, 20)]
