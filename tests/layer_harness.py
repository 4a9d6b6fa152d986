"""One test harness for custom layers, in the spirit of keras-hub's `LayerTestCase`.

A `LayerExample` names a layer class, its constructor arguments and a batch of example
inputs (and masks, where the layer takes them). Each `check_*` function runs one check on
it and fails with a message that names the layer; `CHECKS` lists them, `checks_for`
those that apply to an example, so a test file can parametrize over examples x checks
(tests/test_layers.py does, over every layer registered under the "mmkeras" package).
`run_layer_test(example)` runs them all at once. Gradients are taken with TensorFlow, the
backend mmkeras runs on.

Equality checks first perturb every float weight with noise, and assert that doing so
changes the output, so "identical after the round trip" cannot pass because the weights
never mattered (or because a constant initialiser recreated them).
"""

import dataclasses
import inspect
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf
from keras import ops

# What every layer's config holds besides the constructor's own arguments.
BASE_CONFIG_KEYS = frozenset({"name", "trainable", "dtype"})
# Keyword arguments of keras.layers.Layer itself: not part of a subclass's own signature.
LAYER_INIT_PARAMETERS = frozenset(inspect.signature(keras.layers.Layer.__init__).parameters) - {"self"}


@dataclasses.dataclass(frozen=True)
class LayerExample:
    """A layer class, how to build it and what to call it on.

    Args:
        cls: the layer class.
        init_kwargs: constructor arguments (small sizes: the checks build it many times).
        inputs: a numpy array, or a list of them, batch first.
        masks: Keras masks passed as `mask=` (or, for layers whose `call` takes no mask,
            given to `compute_mask`): an array or a list parallel to `inputs`, None where
            an input is unmasked. Positions where a mask is False are perturbed by
            `check_masks`, which expects the output (where the output mask is True) not
            to change.
        mask_inputs: for layers that take their mask as an input:
            `{index of the masked input: index of its boolean mask input}`.
        zero_gradient: suffixes of weight paths whose gradient is 0 by construction
            (say why where the example is written); each must match a weight. The key
            biases of attention sub-layers are exempt without being listed.
        indicator_inputs: indices (in `inputs`) of float inputs the layer reads only
            through comparisons (is it blank? which state?): no gradient reaches them by
            construction.
        mixed_dtype: the float output dtype expected under "mixed_bfloat16"; None skips
            the mixed-precision check.
        variant: a suffix for the test id, where one class has several examples.
    """

    cls: type
    init_kwargs: dict
    inputs: object
    masks: object = None
    mask_inputs: dict = dataclasses.field(default_factory=dict)
    zero_gradient: tuple = ()
    indicator_inputs: tuple = ()
    mixed_dtype: str = "bfloat16"
    variant: str = ""

    @property
    def id(self):
        return f"{self.cls.__name__}-{self.variant}" if self.variant else self.cls.__name__

    def make(self, **overrides):
        return self.cls(**{**self.init_kwargs, **overrides})

    @property
    def input_list(self):
        return list(self.inputs) if isinstance(self.inputs, (list, tuple)) else [self.inputs]

    def structure(self, arrays):
        """`arrays` (a list) in the structure of `inputs`: a list, or the single array."""
        return list(arrays) if isinstance(self.inputs, (list, tuple)) else arrays[0]

    @property
    def mask_list(self):
        """The Keras masks, one per input (None where unmasked)."""
        if self.masks is None:
            return [None] * len(self.input_list)
        return list(self.masks) if isinstance(self.masks, (list, tuple)) else [self.masks]

    @property
    def keras_masks(self):
        """`mask_list`, or None where the example declares no Keras mask."""
        return None if self.masks is None else self.mask_list


# ----------------------------------------------------------------------------- helpers


def _is_float(dtype):
    return "float" in keras.backend.standardize_dtype(dtype)


def _numpy(outputs):
    """Outputs as a list of numpy arrays (one per output tensor)."""
    return [np.asarray(ops.convert_to_numpy(o)) for o in keras.tree.flatten(outputs)]


def _takes_mask(layer):
    return "mask" in inspect.signature(layer.call).parameters


def call(example, layer, inputs=None, masks=None):
    """Calls `layer` on `inputs` (a list; default: the example's), passing `masks` (a list
    parallel to it) if the layer takes a mask."""
    inputs = example.input_list if inputs is None else inputs
    if masks is not None and _takes_mask(layer):
        return layer(example.structure(inputs), mask=example.structure(masks))
    return layer(example.structure(inputs))


def perturb_weights(layer, seed=0):
    """Adds noise to every float weight, so outputs depend on weights no init would give."""
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        if _is_float(weight.dtype):
            value = np.asarray(weight.numpy())
            weight.assign(value + rng.normal(0.0, 0.3, value.shape).astype(value.dtype))


def has_float_weights(layer):
    return any(_is_float(w.dtype) for w in layer.weights)


def built_layer(example, seed=0, **overrides):
    """A new layer, built by one call on the example, with its float weights perturbed."""
    layer = example.make(**overrides)
    call(example, layer, masks=example.keras_masks)
    perturb_weights(layer, seed)
    return layer


def assert_outputs_equal(actual, expected, atol=1e-6, what=""):
    assert len(actual) == len(expected), what
    for a, e in zip(actual, expected):
        assert a.shape == e.shape and a.dtype == e.dtype, (what, a.shape, a.dtype, e.shape, e.dtype)
        if _is_float(e.dtype):
            np.testing.assert_allclose(a, e, rtol=0, atol=atol, err_msg=what)
        else:
            np.testing.assert_array_equal(a, e, err_msg=what)


def assert_outputs_differ(a, b, what):
    assert any(not np.allclose(x.astype("float64"), y.astype("float64"), atol=1e-4) for x, y in zip(a, b)), what


def symbolic_inputs(example, named=True):
    return [keras.Input(shape=x.shape[1:], dtype=x.dtype.name, name=f"input_{i}" if named else None)
            for i, x in enumerate(example.input_list)]


def functional_model(example, layer, head=False):
    """`inputs -> layer [-> readout]`, without masks (a model's inputs carry none here)."""
    inputs = symbolic_inputs(example)
    outputs = layer(example.structure(inputs))
    if head:
        outputs = Readout(name="readout")(outputs)
    elif not isinstance(outputs, keras.KerasTensor):
        outputs = list(keras.tree.flatten(outputs))
    return keras.Model(example.structure(inputs), outputs, name=f"{example.cls.__name__.lower()}_model")


class Readout(keras.layers.Layer):
    """Test-only head: every output cast to float32, flattened, concatenated, `Dense(1)`.

    It takes any output structure and dtype (ids, booleans, pairs of tensors), so every
    layer can sit in a model that `fit` trains.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(1, name="dense")

    def build(self, input_shape):
        width = sum(int(np.prod(shape[1:])) for shape in _shape_list(input_shape))
        self.dense.build((None, width))

    def call(self, outputs):
        flat = [ops.reshape(ops.cast(o, "float32"), (ops.shape(o)[0], -1)) for o in keras.tree.flatten(outputs)]
        return self.dense(ops.concatenate(flat, axis=-1) if len(flat) > 1 else flat[0])

    def compute_mask(self, inputs, mask=None):
        return None  # consumes (and so accepts) a mask attached to the layer's output


def _is_shape(value):
    return isinstance(value, (list, tuple)) and all(v is None or isinstance(v, int) for v in value)


def _shape_list(structure):
    if _is_shape(structure):
        return [tuple(structure)]
    return [s for item in structure for s in _shape_list(item)]


# ----------------------------------------------------------------------------- checks


def check_build_and_call(example):
    """Builds on the first call; float outputs are finite float32; calls are repeatable."""
    layer = example.make()
    assert not layer.built
    outputs = _numpy(call(example, layer, masks=example.keras_masks))
    assert layer.built, example.id
    for out in outputs:
        assert out.shape[0] == example.input_list[0].shape[0], (example.id, out.shape)
        if _is_float(out.dtype):
            assert out.dtype == np.float32, (example.id, out.dtype)
            assert np.isfinite(out).all(), example.id
    assert_outputs_equal(_numpy(call(example, layer, masks=example.keras_masks)), outputs, what=example.id)


def check_output_spec(example):
    """compute_output_shape (where defined) and the symbolic call agree with a real call."""
    layer = example.make()
    outputs = _numpy(call(example, layer, masks=example.keras_masks))
    if type(layer).compute_output_shape is not keras.layers.Layer.compute_output_shape:
        shapes = [tuple(x.shape) for x in example.input_list]
        declared = layer.compute_output_shape(example.structure(shapes))
        assert _shape_list(declared) == [o.shape for o in outputs], (example.id, declared)
    symbolic = keras.tree.flatten(example.make()(example.structure(symbolic_inputs(example, named=False))))
    assert [tuple(s.shape) for s in symbolic] == [(None, *o.shape[1:]) for o in outputs], example.id
    assert [keras.backend.standardize_dtype(s.dtype) for s in symbolic] == [
        keras.backend.standardize_dtype(o.dtype) for o in outputs], example.id


def check_masks(example):
    """Changing what masked-out positions hold changes no output the mask leaves visible.

    Control: with that mask all True, the same change does change the output.
    """
    pairs = _masked_inputs(example)
    assert pairs, f"{example.id} declares no mask"
    layer = built_layer(example)
    inputs = example.input_list
    masks = example.keras_masks
    rng = np.random.default_rng(1)
    for index, mask_index in pairs:
        mask = np.asarray(inputs[mask_index] if mask_index is not None else masks[index], bool)
        assert (~mask).any() and mask.any(), f"{example.id}: the mask of input {index} must hide some positions"
        x = inputs[index]
        hidden = (~mask).reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
        changed = list(inputs)
        changed[index] = np.where(hidden, rng.normal(5.0, 10.0, x.shape).astype(x.dtype), x)
        assert_outputs_equal(_visible(example, layer, changed, masks), _visible(example, layer, inputs, masks),
                             atol=1e-5, what=f"{example.id}: masked-out positions of input {index}")

        # The same change with nothing masked must show, or the check above proves nothing.
        all_true = np.ones_like(mask)
        if mask_index is not None:
            before, after = list(inputs), changed
            before[mask_index] = after[mask_index] = all_true
            unmasked = masks
        else:
            before, after = inputs, changed
            unmasked = list(masks)
            unmasked[index] = all_true
        assert_outputs_differ(_visible(example, layer, after, unmasked), _visible(example, layer, before, unmasked),
                              f"{example.id}: unmasked, the change to input {index} should show")


def _masked_inputs(example):
    """(masked input index, mask input index, or None for a Keras mask) pairs."""
    pairs = sorted(example.mask_inputs.items())
    pairs += [(i, None) for i, m in enumerate(example.mask_list) if m is not None]
    return pairs


def _visible(example, layer, inputs, masks):
    """The outputs where their Keras mask is True (all of an output without a mask)."""
    outputs = _numpy(call(example, layer, inputs, masks))
    mask = layer.compute_mask(example.structure(inputs), None if masks is None else example.structure(masks))
    mask = list(mask) if isinstance(mask, (list, tuple)) else [mask] * len(outputs)
    return [out if m is None else out[np.asarray(ops.convert_to_numpy(m), bool)] for out, m in zip(outputs, mask)]


def check_config_round_trip(example):
    """get_config holds the constructor arguments; from_config gives an equal config and,
    with the weights copied, the same outputs."""
    layer = built_layer(example)
    config = layer.get_config()
    # Every constructor argument is kept, and nothing else but what a parent class takes
    # (a subclass of Dense keeps Dense's arguments too).
    own = _init_parameters(example.cls) - LAYER_INIT_PARAMETERS
    inherited = set().union(*(_init_parameters(c) for c in example.cls.__mro__
                              if isinstance(c, type) and issubclass(c, keras.layers.Layer)))
    assert BASE_CONFIG_KEYS <= set(config), (example.id, sorted(config))
    assert own <= set(config), (example.id, sorted(own - set(config)))
    unknown = set(config) - BASE_CONFIG_KEYS - LAYER_INIT_PARAMETERS - inherited
    assert not unknown, (example.id, sorted(unknown))

    clone = example.cls.from_config(config)
    assert clone.get_config() == config, example.id
    expected = _numpy(call(example, layer, masks=example.keras_masks))
    fresh = _numpy(call(example, clone, masks=example.keras_masks))
    if has_float_weights(layer):
        assert_outputs_differ(fresh, expected, f"{example.id}: perturbed weights should change the output")
    clone.set_weights(layer.get_weights())
    assert_outputs_equal(_numpy(call(example, clone, masks=example.keras_masks)), expected, what=example.id)


def _init_parameters(cls):
    parameters = inspect.signature(cls.__init__).parameters.values()
    return {p.name for p in parameters if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def check_keras_round_trip(example):
    """A functional model holding the layer saves to `.keras` and loads, without
    custom_objects, to the same predictions (atol 1e-6)."""
    layer = example.make(name="layer_under_test")
    model = functional_model(example, layer)
    x = example.structure(example.input_list)
    initial = _numpy(model(x))
    perturb_weights(layer)
    expected = _numpy(model(x))
    if has_float_weights(layer):
        assert_outputs_differ(initial, expected, f"{example.id}: perturbed weights should change the output")
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, f"{example.cls.__name__}.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)  # no custom_objects: the class is registered
    assert type(loaded.get_layer("layer_under_test")) is example.cls, example.id
    assert_outputs_equal(_numpy(loaded.predict(x, verbose=0, batch_size=len(example.input_list[0]))),
                         expected, what=example.id)


def zero_gradient_paths(example, layer):
    """Paths of the trainable weights whose gradient is 0 by construction."""
    paths = set()
    for suffix in example.zero_gradient:
        matching = {w.path for w in layer.trainable_weights if w.path.endswith(suffix)}
        assert matching, f"{example.id}: no weight matches zero_gradient {suffix!r}"
        paths |= matching
    # An attention key bias is shared by all keys: it shifts every score of a query by the
    # same amount, which the softmax cancels.
    for sublayer in layer._flatten_layers():
        if isinstance(sublayer, keras.layers.MultiHeadAttention):
            paths |= {w.path for w in sublayer.trainable_weights if w.path.endswith("/key/bias")}
    return paths


def check_gradients(example):
    """Gradients reach every trainable weight (finite, not all zero) and the float inputs
    (finite; also not all zero when the layer has no trainable weight of its own)."""
    layer = example.make()
    call(example, layer, masks=example.keras_masks)
    rng = np.random.default_rng(2)
    inputs = [tf.constant(x) for x in example.input_list]
    float_inputs = [x for i, x in enumerate(inputs) if _is_float(x.dtype) and i not in example.indicator_inputs]
    with tf.GradientTape() as tape:
        tape.watch(float_inputs)
        outputs = keras.tree.flatten(call(example, layer, inputs, example.keras_masks))
        # A random projection: a plain sum has zero gradient through a softmax or a norm.
        loss = sum(ops.sum(ops.cast(o, "float32") * rng.normal(size=o.shape).astype("float32"))
                   for o in outputs if _is_float(o.dtype))
    weights = layer.trainable_weights
    if not weights and not float_inputs:
        return  # ids in, ids or booleans out: nothing is differentiable
    grads = tape.gradient(loss, [w.value for w in weights] + float_inputs)
    exempt = zero_gradient_paths(example, layer)
    for weight, grad in zip(weights, grads):
        assert grad is not None, f"{example.id}: no gradient reaches {weight.path}"
        grad = ops.convert_to_numpy(grad)
        assert np.isfinite(grad).all(), f"{example.id}: non-finite gradient for {weight.path}"
        if weight.path not in exempt:
            assert np.any(grad != 0), f"{example.id}: zero gradient for {weight.path}"
    for i, grad in enumerate(grads[len(weights):]):
        assert grad is not None, f"{example.id}: no gradient reaches float input {i}"
        grad = ops.convert_to_numpy(grad)
        assert np.isfinite(grad).all(), f"{example.id}: non-finite gradient for float input {i}"
        if not weights:
            assert np.any(grad != 0), f"{example.id}: zero gradient for float input {i}"


def check_fit_step(example):
    """One `fit` step of a tiny model (inputs -> layer -> readout) runs with a finite loss
    and changes every trainable weight of the layer."""
    layer = example.make()
    model = functional_model(example, layer, head=True)
    # Eagerly: tracing a train step costs seconds per layer; the graph-mode call is
    # exercised by `predict` in check_keras_round_trip.
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", run_eagerly=True)
    batch = len(example.input_list[0])
    y = np.random.default_rng(3).normal(size=(batch, 1)).astype("float32")
    before = [np.array(w.numpy()) for w in layer.trainable_weights]
    readout = [np.array(w.numpy()) for w in model.get_layer("readout").trainable_weights]
    history = model.fit(example.structure(example.input_list), y, batch_size=batch, epochs=1, verbose=0,
                        shuffle=False)
    assert np.isfinite(history.history["loss"][0]), example.id
    exempt = zero_gradient_paths(example, layer)
    for weight, old in zip(layer.trainable_weights, before):
        if weight.path not in exempt:
            assert not np.array_equal(weight.numpy(), old), f"{example.id}: fit left {weight.path} unchanged"
    for weight, old in zip(model.get_layer("readout").trainable_weights, readout):
        assert not np.array_equal(weight.numpy(), old), f"{example.id}: fit left the readout unchanged"


def check_mixed_precision(example):
    """Under "mixed_bfloat16": float32 variables, float outputs in `mixed_dtype`, finite,
    and within bfloat16 precision of the float32 layer with the same weights."""
    if example.mixed_dtype is None:
        return
    reference = built_layer(example)
    expected = _numpy(call(example, reference, masks=example.keras_masks))
    layer = example.make(dtype="mixed_bfloat16")
    call(example, layer, masks=example.keras_masks)
    for weight in layer.weights:
        if _is_float(weight.dtype):
            assert keras.backend.standardize_dtype(weight.dtype) == "float32", (example.id, weight.path)
    layer.set_weights(reference.get_weights())
    outputs = keras.tree.flatten(call(example, layer, masks=example.keras_masks))
    for out, ref in zip(outputs, expected):
        dtype = keras.backend.standardize_dtype(out.dtype)
        if not _is_float(ref.dtype):
            assert dtype == ref.dtype.name, (example.id, dtype)
            continue
        assert dtype == example.mixed_dtype, (example.id, dtype)
        out = ops.convert_to_numpy(ops.cast(out, "float32"))
        assert np.isfinite(out).all(), example.id
        # bfloat16 keeps 8 bits of mantissa: a few parts in a thousand per operation.
        np.testing.assert_allclose(out, ref, rtol=5e-2, atol=5e-2 * max(np.abs(ref).max(), 1.0),
                                   err_msg=example.id)


CHECKS = {
    "build_and_call": check_build_and_call,
    "output_spec": check_output_spec,
    "masks": check_masks,
    "config_round_trip": check_config_round_trip,
    "keras_round_trip": check_keras_round_trip,
    "gradients": check_gradients,
    "fit_step": check_fit_step,
    "mixed_precision": check_mixed_precision,
}


def checks_for(example):
    """The names of the checks that apply to `example` (masks only where it has some)."""
    return [name for name in CHECKS if name != "masks" or _masked_inputs(example)]


def run_layer_test(example):
    """Every check that applies to `example`, in order."""
    for name in checks_for(example):
        CHECKS[name](example)


def registered_layers(package="mmkeras"):
    """`{registered name: class}` of the Layer subclasses registered under `package`."""
    prefix = f"{package}>"
    return {
        key[len(prefix):]: obj
        for key, obj in keras.saving.get_custom_objects().items()
        if key.startswith(prefix) and isinstance(obj, type) and issubclass(obj, keras.layers.Layer)
    }

