"""Tests for `mmkeras.fusion`. The generic tests are generated from the fusion registry,
so a fusion is tested the day it is registered: its registration gives the example
constructor arguments and the inputs it takes.

The layer checks every registered layer gets (output spec, config and `.keras` round
trips, gradients to every weight, a fit step, masks, mixed bfloat16) run in
tests/test_layers.py on the same registrations; here: the registry, SavedModel export,
float16, argument and input checks, each fusion's own behaviour, and a user's fusion."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import mmkeras
from mmkeras import fusion
from mmkeras.fusion import fusion_info, get_fusion, list_fusions, register_fusion

BATCH = 3

# Per-example input shapes (no batch axis) for each kind of input; the sizes differ
# from each other so a swapped axis cannot go unnoticed.
INPUT_SHAPES = {
    "vectors": [(12,), (10,)],
    "map_vector": [(5, 6, 3), (10,)],
    "sequence_map": [(7, 10), (4, 5, 6)],
}

NAMES = list_fusions()


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1)


def make_layer(fusion_name, **overrides):
    return get_fusion(fusion_name, **{**fusion_info(fusion_name).example, **overrides})


def make_data(name, seed=0, batch=BATCH):
    rng = np.random.default_rng(seed)
    shapes = INPUT_SHAPES[fusion_info(name).inputs]
    return [rng.normal(size=(batch, *shape)).astype("float32") for shape in shapes]


def make_model(name, layer, head_units=None):
    shapes = INPUT_SHAPES[fusion_info(name).inputs]
    inputs = [keras.Input(shape, name=f"input_{i}") for i, shape in enumerate(shapes)]
    outputs = layer(inputs)
    if head_units is not None:
        outputs = keras.layers.Flatten(name="flatten")(outputs)
        outputs = keras.layers.Dense(head_units, name="head")(outputs)
    return keras.Model(inputs, outputs, name=f"{name}_model")


def run(layer, data, **kwargs):
    return ops.convert_to_numpy(layer(data, **kwargs))


def test_registry_describes_every_fusion():
    assert NAMES == sorted(NAMES) and len(NAMES) >= 10
    assert {fusion_info(n).inputs for n in NAMES} == set(INPUT_SHAPES)
    assert [n for n in NAMES if fusion_info(n).stage == "input"] == ["early"]
    for name in NAMES:
        spec = fusion_info(name)
        assert spec.name == name and get_fusion(name, **spec.example).__class__ is spec.cls
        assert spec.cls.__name__ in fusion.__all__
        assert keras.saving.get_registered_name(spec.cls) == f"mmkeras>{spec.cls.__name__}"
        # The sizes build layers: each is a valid set of constructor arguments.
        assert set(spec.sizes) == {"small", "base"}
        for kwargs in spec.sizes.values():
            assert isinstance(spec.cls(**kwargs), spec.cls)
    assert mmkeras.list_fusions("*attention") == ["co_attention", "cross_attention"]


def test_get_fusion_unknown_name_lists_choices():
    with pytest.raises(ValueError) as error:
        get_fusion("nope")
    message = str(error.value)
    assert "fusion='nope'" in message
    for name in NAMES:
        assert name in message


@pytest.mark.parametrize("kwargs, received", [
    (dict(inputs="pair"), "inputs='pair'"),
    (dict(stage="late"), "stage='late'"),
    (dict(stage="input", inputs="vectors"), "inputs='vectors'"),
    (dict(sizes={"small": {}}), "sizes={'small': {}}"),
    (dict(name="gmu"), "name='gmu'"),
])
def test_bad_registrations_raise(kwargs, received):
    args = {**dict(name="never_registered", inputs="vectors", sizes={"small": {}, "base": {}}), **kwargs}
    with pytest.raises(ValueError, match="Received") as error:
        register_fusion(args.pop("name"), **args)(fusion.ConcatFusion)
    assert received in str(error.value)
    assert "never_registered" not in NAMES and "never_registered" not in list_fusions()


def test_declared_inputs_must_match_the_layout():
    with pytest.raises(ValueError, match="input_layout"):
        register_fusion("never_registered", inputs="sequence_map",
                        sizes={"small": {}, "base": {}})(fusion.ConcatFusion)
    assert "never_registered" not in list_fusions()


@pytest.mark.parametrize("name", NAMES)
def test_mixed_precision(name):
    layer = make_layer(name, dtype="mixed_float16")
    outputs = layer(make_data(name))
    assert keras.backend.standardize_dtype(outputs.dtype) == "float16"
    assert np.all(np.isfinite(ops.convert_to_numpy(outputs)))
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in layer.weights)


@pytest.mark.parametrize("name", NAMES)
def test_random_inits_differ(name):
    data = make_data(name)
    first, second = make_layer(name), make_layer(name)
    a, b = run(first, data), run(second, data)
    assert first.weights, "a fusion with weights is needed for equality tests to mean anything"
    assert not np.allclose(a, b, atol=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_saved_model_export(name, tmp_path):
    model = make_model(name, make_layer(name), head_units=2)
    data = make_data(name, seed=7)
    expected = model.predict(data, verbose=0)
    model.export(tmp_path / "exported", verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "exported"))
    np.testing.assert_allclose(reloaded.serve(data).numpy(), expected, atol=1e-5)


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


MAP_NAMES = [name for name in NAMES if fusion_info(name).inputs != "vectors"]


@pytest.mark.parametrize("name", MAP_NAMES)
def test_unknown_spatial_dims(name):
    # Height and width known only at run time, and different from call to call.
    shapes = INPUT_SHAPES[fusion_info(name).inputs]
    map_index = 0 if fusion_info(name).inputs == "map_vector" else 1
    channels = shapes[map_index][-1]
    symbolic_shapes = list(shapes)
    symbolic_shapes[map_index] = (None, None, channels)
    inputs = [keras.Input(shape) for shape in symbolic_shapes]
    model = keras.Model(inputs, make_layer(name)(inputs))
    expected = make_model(name, make_layer(name)).output.shape[1:]  # with the known map size
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

SEQUENCE_NAMES = [name for name in NAMES if fusion_info(name).inputs == "sequence_map"]


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


# --- A user's own fusion -----------------------------------------------------------

USER_FUSION = '''
from keras import ops

from mmkeras.fusion import FusionLayer, register_fusion


@register_fusion("user_sum", inputs="vectors", sizes={"small": {"units": 8}, "base": {"units": 16}})
class UserSum(FusionLayer):
    """Sum of the two projected modalities."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.image_projection, self.text_projection = self.projections(units, "tanh")

    def build(self, input_shape):
        image_shape, text_shape = self.build_projections(input_shape)

    def call(self, inputs, mask=None):
        image, text = inputs
        return self.image_projection(image) + self.text_projection(text)

    def compute_output_shape(self, input_shape):
        return (self.split_input_shapes(input_shape)[0][0], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}
'''

USER_SCRIPT = '''
import keras
import numpy as np

import mmkeras
import user_fusion  # registering the class gives it presets and Keras serialization
from mmkeras import training

assert "user_sum" in mmkeras.list_fusions()
assert mmkeras.list_models("user_sum_*") == ["user_sum_airbench_bilstm", "user_sum_cnn_lstm", "user_sum_resnet9_bilstm"]
info = mmkeras.model_info("user_sum_resnet9_bilstm")
assert (info["family"], info["fusion"], info["image_branch"], info["text_branch"]) == (
    "fused", "user_sum", "resnet9", "bilstm"), info
kw = dict(num_classes=3, image_shape=(16, 16, 3), vocab_size=20, sequence_length=6)
rng = np.random.default_rng(0)
x = {"image": rng.integers(0, 256, (8, 16, 16, 3)).astype("float32"),
     "text": rng.integers(1, 20, (8, 6)).astype("int32")}
y = rng.integers(0, 3, 8)
model = mmkeras.create_model("user_sum_cnn_lstm", size="base", **kw)
assert model.get_layer("fusion_user_sum").units == 16
training.compile_model(model)
before = [w.copy() for w in model.get_layer("fusion_user_sum").get_weights()]
loss = model.train_on_batch(x, {"label": y}, return_dict=True)["loss"]
assert np.isfinite(loss)
assert not any(np.array_equal(a, b) for a, b in zip(before, model.get_layer("fusion_user_sum").get_weights()))
model.save("user.keras")
loaded = keras.models.load_model("user.keras")  # no custom_objects
assert type(loaded.get_layer("fusion_user_sum")) is user_fusion.UserSum
np.testing.assert_allclose(training.predict_proba(loaded, x), training.predict_proba(model, x), atol=1e-6)
print("user fusion ok")
'''


def test_user_fusion_gets_presets_and_loads_without_custom_objects(tmp_path):
    # A fresh process: registering in this one would add presets to every registry test.
    (tmp_path / "user_fusion.py").write_text(textwrap.dedent(USER_FUSION))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    result = subprocess.run([sys.executable, "-c", USER_SCRIPT], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "user fusion ok" in result.stdout
