"""Every layer registered under the "mmkeras" package goes through tests/layer_harness.py.

The layers are read from Keras's registry after `import mmkeras`. A fusion's example comes
from its registration (`register_fusion(..., inputs=, example=)`), so a new fusion is
tested the day it is registered; any other layer needs an entry in `EXAMPLES`, or
`test_every_registered_layer_has_an_example` fails. Shapes are tiny (batch 3, a handful
of features) so that the file stays fast.
"""

import dataclasses
import os

import keras
import numpy as np
import pytest
from keras import ops

import mmkeras  # registers the layers
from layer_harness import CHECKS, LayerExample, checks_for, registered_layers

BATCH = 3
REGISTERED = registered_layers("mmkeras")
_rng = np.random.default_rng(0)


def normal(*shape):
    return _rng.normal(size=(BATCH, *shape)).astype("float32")


def probabilities(classes=4):
    return _rng.dirichlet(np.ones(classes), size=BATCH).astype("float32")


def token_mask(length, valid=(5, 2, 3)):
    """Right padding: row r has valid[r] real positions."""
    return np.arange(length)[None, :] < np.asarray(valid)[:, None]


def token_ids(length=5, vocab=20):
    """Right-padded ids; the second row is all padding (an empty text)."""
    ids = _rng.integers(2, vocab, size=(BATCH, length)).astype("int32")
    ids[0, 3:] = 0
    ids[1, :] = 0
    return ids


# Inputs of each kind of fusion (see mmkeras.fusion): sizes differ between the two
# inputs so that a swapped axis cannot go unnoticed; sequence fusions get a text mask.
FUSION_INPUTS = {
    "vectors": dict(inputs=[normal(6), normal(5)]),
    "map_vector": dict(inputs=[normal(3, 4, 5), normal(6)]),
    "sequence_map": dict(inputs=[normal(5, 6), normal(2, 3, 4)], masks=[token_mask(5), None]),
}
REGION_MASK = np.ones((BATCH, 2, 3), bool)
REGION_MASK[:, 0, 0] = False
REGION_MASK[1, 1, :] = False
# What a fusion's registration does not say: the attention fusions honour an image-region
# mask as well.
FUSION_EXTRAS = {
    "CrossModalAttention": dict(masks=[token_mask(5), REGION_MASK]),
    "CoAttention": dict(masks=[token_mask(5), REGION_MASK]),
}

# Every other registered layer, by registered name; the class is looked up in the
# registry, not imported.
EXAMPLES = {
    # Text-branch layers.
    "NonEmptyTokens": dict(init_kwargs={}, inputs=token_ids()),
    "TokenPaddingMask": dict(init_kwargs={}, inputs=token_ids()),
    "ZeroMaskedSteps": dict(init_kwargs=dict(attach_mask=True), inputs=[normal(5, 4), token_mask(5)],
                            mask_inputs={0: 1}),
    # The third row has no valid step: it pools to zeros.
    "MaskedGlobalMaxPooling1D": dict(init_kwargs={}, inputs=[normal(5, 4), token_mask(5, (5, 2, 0))],
                                     mask_inputs={0: 1}),
    "MaskedGlobalAveragePooling1D": dict(init_kwargs={}, inputs=[normal(5, 4), token_mask(5, (5, 2, 0))],
                                         mask_inputs={0: 1}),
    # Shorter than sequence_length: the first 5 of 6 positions are used (so the sixth
    # row of the table gets no gradient, but the weight as a whole does).
    "AddPositionEmbedding": dict(init_kwargs=dict(sequence_length=6), inputs=normal(5, 4), masks=token_mask(5)),
    # Image layers.
    "ApplicationPreprocessing": dict(init_kwargs=dict(backbone="MobileNetV2"),
                                     inputs=_rng.uniform(size=(BATCH, 4, 4, 3)).astype("float32")),
    "HorizontalFlip": dict(init_kwargs={}, inputs=normal(3, 4, 2)),
    "Shift": dict(init_kwargs=dict(offset=-1), inputs=normal(3, 4, 2)),
    # The speed-run branch's layers (mmkeras.branches.airbench_layers).
    "PatchWhitening": dict(init_kwargs=dict(kernel_size=2), inputs=normal(4, 5, 3)),
    "ScaledBias": dict(init_kwargs=dict(gain=8.0), inputs=normal(3, 4, 2)),
    "RandomPixelNoise": dict(init_kwargs=dict(max_stddev=0.1, rate=0.5, value_range=1.0),
                             inputs=_rng.uniform(size=(BATCH, 3, 4, 2)).astype("float32")),
    "AlternatingFlip": dict(init_kwargs=dict(seed=0), inputs=normal(3, 4, 2)),
    # Heads.
    "AuxiliaryHead": dict(init_kwargs=dict(units=3, loss_weight=0.5), inputs=normal(6)),
    # The product of experts of a fused model with unimodal experts: which modalities are
    # present (the second image and the second text are blanks), and the weighted product.
    "ModalityPresence": dict(init_kwargs={}, inputs=[normal(4, 4, 3) * np.array([1, 0, 1])[:, None, None, None],
                                                    token_ids()], indicator_inputs=(0,), mixed_dtype="float32"),
    "ProductOfExperts": dict(init_kwargs=dict(num_experts=3),
                             inputs=[np.array([[1, 1], [1, 0], [0, 1]], "float32"), probabilities(), probabilities(),
                                     probabilities()], indicator_inputs=(0,), mixed_dtype="float32"),
    # Ensemble combiners: two members' probabilities over 4 classes. Combiners compute
    # in float32 whatever the policy: probabilities near 0 need it (log, clip).
    "AverageCombiner": dict(init_kwargs={}, inputs=[probabilities(), probabilities()], mixed_dtype="float32"),
    "WeightedCombiner": dict(init_kwargs=dict(num_members=2), inputs=[probabilities(), probabilities()],
                             mixed_dtype="float32"),
    "VoteCombiner": dict(init_kwargs={}, inputs=[probabilities(), probabilities()], mixed_dtype="float32"),
    "ProductCombiner": dict(init_kwargs={}, inputs=[probabilities(), probabilities()], mixed_dtype="float32"),
    "StackingCombiner": dict(init_kwargs=dict(num_members=2, num_classes=4), inputs=[probabilities(), probabilities()],
                             mixed_dtype="float32"),
}


def fusion_example(name):
    """The example of a registered fusion, from its registration: a user's fusion goes
    through the harness the day it is registered."""
    spec = mmkeras.fusion.fusion_info(name)
    kwargs = dict(getattr(spec, "example", None) or spec.sizes["small"])
    return LayerExample(cls=spec.cls, init_kwargs=kwargs,
                        **{**FUSION_INPUTS[spec.inputs], **FUSION_EXTRAS.get(spec.cls.__name__, {})})


ALL = [fusion_example(name) for name in mmkeras.list_fusions()] + [
    LayerExample(cls=REGISTERED[name], **spec) for name, spec in EXAMPLES.items() if name in REGISTERED]


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(int(os.environ.get("MMKERAS_TEST_SEED", "0")))


def test_every_registered_layer_has_an_example():
    assert REGISTERED, "no layer is registered under the 'mmkeras' package"
    tested = {example.cls for example in ALL}
    missing = sorted(name for name, cls in REGISTERED.items() if cls not in tested)
    assert not missing, (f"registered mmkeras layers without an example: {missing}; register a fusion "
                         "with mmkeras.fusion.register_fusion, any other layer needs an entry in EXAMPLES")
    stale = sorted(set(EXAMPLES) - set(REGISTERED))
    assert not stale, f"EXAMPLES entries that name no registered layer: {stale}"


@pytest.mark.parametrize("example, check", [(e, c) for e in ALL for c in checks_for(e)],
                         ids=[f"{e.id}-{c}" for e in ALL for c in checks_for(e)])
def test_layer(example, check):
    CHECKS[check](example)


# ----------------------------------------------------------------------------- the harness can fail


class _Projection(keras.layers.Layer):
    """`x @ kernel` over the last axis: a minimal well-behaved layer (not registered)."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units))

    def call(self, x):
        return ops.matmul(x, ops.cast(self.kernel, x.dtype))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class _ForgetsArgument(_Projection):
    def get_config(self):
        return keras.layers.Layer.get_config(self)


class _MaskedMean(_Projection):
    """Projects, then averages over the valid steps."""

    def call(self, x, mask=None):
        weights = ops.cast(mask, x.dtype)[:, :, None]
        return ops.sum(super().call(x) * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def compute_mask(self, inputs, mask=None):
        return None


class _IgnoresMask(_MaskedMean):
    def call(self, x, mask=None):
        return ops.mean(_Projection.call(self, x), axis=1)


class _UnusedWeight(_Projection):
    def build(self, input_shape):
        super().build(input_shape)
        self.unused = self.add_weight(name="unused", shape=(self.units,))


class _WrongOutputShape(_Projection):
    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units + 1)


class _Float32Output(_Projection):
    def call(self, x):
        return ops.cast(super().call(x), "float32")


@pytest.mark.filterwarnings("ignore:Gradients do not exist for variables")
@pytest.mark.parametrize("cls, check, error", [
    (_ForgetsArgument, "config_round_trip", AssertionError),
    (_IgnoresMask, "masks", AssertionError),
    (_UnusedWeight, "gradients", AssertionError),
    (_UnusedWeight, "fit_step", AssertionError),
    (_WrongOutputShape, "output_spec", AssertionError),
    (_Projection, "keras_round_trip", TypeError),  # not registered: needs custom_objects
    (_Float32Output, "mixed_precision", AssertionError),
], ids=lambda value: getattr(value, "__name__", value))
def test_the_harness_catches_a_broken_layer(cls, check, error):
    example = LayerExample(cls=cls, init_kwargs=dict(units=3), inputs=normal(5, 4), masks=token_mask(5))
    with pytest.raises(error):
        CHECKS[check](example)
    if cls is not _Projection:  # the same check passes on the layer done right
        CHECKS[check](dataclasses.replace(example, cls=_MaskedMean if check == "masks" else _Projection))
