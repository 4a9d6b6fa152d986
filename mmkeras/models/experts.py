"""A fused model that keeps its unimodal experts: fused, image-only and text-only heads
combined as a product of experts whose weights depend on which modalities are present.

Why: when one modality is strong on its own, a fused head trained on top of borrowed
branches learns to answer from that modality and ignore the other (modality laziness),
and a product of two separately trained models beats it. Keeping the trained unimodal
heads inside the fused model, beside the fused head, and weighting the three by
log-probability gives one exportable model that can do what the product ensemble does
and what the fused head adds; weights per presence state let it drop an expert whose
modality is blank (an all-zero image, an all-padding caption: the same blanks the
robustness measures, modality dropout and the "missing" bad-row policy use).
"""

import keras
import numpy as np
from keras import ops

from mmkeras import training
from mmkeras.argument_checks import check_positive_int
from mmkeras.explain.contributions import blank_image, blank_text
from mmkeras.models.tta import unwrap_tta

EXPERTS = ("fused", "image", "text")
# Presence states, in the order of ProductOfExperts' weight rows: (image present, text present).
PRESENCE_STATES = ("both", "text_only", "image_only", "neither")
_LOG_FLOOR = 1e-7  # probabilities are clipped here before the log: a zero is a strong, finite veto


@keras.saving.register_keras_serializable(package="mmkeras")
class ModalityPresence(keras.layers.Layer):
    """[image, text] -> (batch, 2) float32: 1 where the image has a non-zero pixel, and
    where the caption has a non-padding token; 0 for the blanks."""

    def call(self, inputs):
        image, text = inputs
        pixels = ops.reshape(ops.abs(ops.cast(image, "float32")), (ops.shape(image)[0], -1))
        image_present = ops.cast(ops.max(pixels, axis=-1) > 0, "float32")
        text_present = ops.cast(ops.any(ops.not_equal(text, 0), axis=-1), "float32")
        return ops.stack([image_present, text_present], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 2)


@keras.saving.register_keras_serializable(package="mmkeras")
class ProductOfExperts(keras.layers.Layer):
    """[presence (B, 2), p_1, ..., p_n] -> softmax(sum_e w[state, e] * log p_e).

    `w` has one row per presence state (PRESENCE_STATES: both, text only, image only,
    neither) and one non-negative weight per expert. It is not trained by gradient
    descent with the rest of the model: `fit_expert_weights` fits it on held-out data.
    Until then every expert has weight 1 in every state (a plain product of experts).

    Args:
        num_experts: how many probability inputs follow the presence input (>= 1).
    """

    def __init__(self, num_experts, **kwargs):
        super().__init__(**kwargs)
        self.num_experts = check_positive_int("num_experts", num_experts)

    def build(self, input_shape):
        if len(input_shape) != self.num_experts + 1:
            raise ValueError(f"`ProductOfExperts(num_experts={self.num_experts})` expects "
                             f"{self.num_experts + 1} inputs [presence, p_1, ...]. Received "
                             f"{len(input_shape)} input shapes: {input_shape}")
        self.expert_weights = self.add_weight(
            name="expert_weights", shape=(len(PRESENCE_STATES), self.num_experts),
            initializer="ones", trainable=False)

    def call(self, inputs):
        presence, *probabilities = inputs
        image_present, text_present = presence[:, 0], presence[:, 1]
        # Row index of the state: both 0, text only 1, image only 2, neither 3.
        state = ops.cast((1 - image_present) + 2 * (1 - text_present), "int32")
        weights = ops.take(ops.cast(self.expert_weights, "float32"), state, axis=0)  # (B, n)
        logs = ops.stack([ops.log(ops.clip(ops.cast(p, "float32"), _LOG_FLOOR, 1.0)) for p in probabilities],
                         axis=1)  # (B, n, classes)
        return ops.softmax(ops.sum(weights[:, :, None] * logs, axis=1), axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape[1]

    def get_config(self):
        return {**super().get_config(), "num_experts": self.num_experts}


def _head_layers(model):
    """The layers of a unimodal model's head, input to output: `head_*` then `label`."""
    names = [layer.name for layer in model.layers if layer.name.startswith("head_")] + ["label"]
    try:
        return [model.get_layer(n) for n in names]
    except ValueError as error:
        raise ValueError(f"Model '{model.name}' has no 'label' head layer: expected a unimodal mmkeras "
                         "model (mmkeras.create_model('image_*' / 'text_*')).") from error


def _cloned_head(x, source, modality):
    """The head of unimodal `source` rebuilt on `x` with its trained weights (frozen)."""
    for layer in _head_layers(source):
        config = dict(layer.get_config(), name=f"{modality}_expert_{layer.name}")
        clone = type(layer).from_config(config)
        x = clone(x)
        clone.set_weights(layer.get_weights())
        clone.trainable = False
    return x


def branch_vector(source, fused, modality):
    """The fused model's tensor that plays the part of `source`'s head input."""
    return _in_fused(_head_layers(source)[0].input, fused, modality, source)


def _in_fused(tensor, fused, modality, source):
    """`tensor` of `source`'s graph, as computed on `fused`'s graph: the same layer's
    output where `fused` has it; else (a fusion that reads the feature map or the token
    sequences leaves the pooled vector out of the fused graph) rebuilt from the nearest
    layers `fused` has, with frozen copies of `source`'s layers in between."""
    history = tensor._keras_history
    layer = history.operation
    if not layer.name.startswith(f"{modality}_") and layer.name not in ("image", "text"):
        raise ValueError(f"The head of '{source.name}' reads layer '{layer.name}', not an '{modality}_*' "
                         "branch layer.")
    mismatch = ValueError(f"Fused model '{fused.name}' has no layer '{layer.name}' like that of '{source.name}': "
                          f"build it with the same {modality} branch and options as '{source.name}'.")
    try:
        counterpart = fused.get_layer(layer.name)
    except ValueError:
        counterpart = None
    if counterpart is not None and type(counterpart) is not type(layer):
        raise mismatch
    output = counterpart.output if counterpart is not None else None
    if output is None:
        if not layer.weights and not isinstance(layer, keras.layers.InputLayer):
            node = layer._inbound_nodes[history.node_index]
            args, kwargs = keras.tree.map_structure(
                lambda x: _in_fused(x, fused, modality, source) if isinstance(x, keras.KerasTensor) else x,
                (node.arguments.args, node.arguments.kwargs))
            clone = type(layer).from_config(dict(layer.get_config(), name=f"{modality}_expert_{layer.name}"))
            output = clone(*args, **kwargs)
        else:  # a layer with weights, not in the fused model: another branch altogether
            raise mismatch
    # A layer with several outputs (an LSTM returning its states): the one the head reads.
    return output[history.tensor_index] if isinstance(output, (list, tuple)) else output


def with_unimodal_experts(fused, image_model, text_model, *, input_stage=None, name=None):
    """`fused` with the heads of two trained unimodal models beside its own head.

    The branches of `fused` must be those of the unimodal models (copied in, e.g. by
    `build_fused(image_init=..., text_init=...)`), so each expert head reads the same
    features it was trained on, at no extra cost. With `input_stage` (None: whether a
    fusion layer of `fused` is registered with stage "input"; an early
    fusion, whose image branch also reads the text) the image model runs whole beside it,
    and so does an image model wrapped in test-time augmentation (`models.with_tta`): the
    image expert is then exactly the image model as trained and saved, views included,
    so the product of experts can always do what the product ensemble of the two
    unimodal models does.

    Outputs: "label" (the product of experts, what inference and export use),
    "fused_label" (the fused head), "image_label" and "text_label" (the experts, frozen).
    """
    if input_stage is None:
        input_stage = _has_input_stage_fusion(fused)
    image_whole = input_stage or unwrap_tta(image_model) is not image_model
    inputs = fused.input
    fused_probabilities = fused.output["label"] if isinstance(fused.output, dict) else fused.output
    experts = {}
    classes = fused_probabilities.shape[-1]
    for modality, source in (("image", image_model), ("text", text_model)):
        source_classes = _head_layers(unwrap_tta(source))[-1].units
        if source_classes != classes:
            raise ValueError(f"The {modality} expert '{source.name}' answers {source_classes} classes, the fused "
                             f"model '{fused.name}' {classes}: experts must be trained on the same classes.")
        if modality == "image" and image_whole:
            source.trainable = False
            experts[modality] = source(inputs)["label"]
        else:
            experts[modality] = _cloned_head(branch_vector(source, fused, modality), source, modality)
    presence = ModalityPresence(name="experts_presence")([inputs["image"], inputs["text"]])
    label = ProductOfExperts(len(EXPERTS), dtype="float32", name="experts_product")(
        [presence, fused_probabilities, experts["image"], experts["text"]])
    outputs = {"label": label, "fused_label": fused_probabilities,
               "image_label": experts["image"], "text_label": experts["text"]}
    return keras.Model(inputs, outputs, name=name or fused.name)


def blanked(features, state):
    """`features` with the modalities absent in presence `state` blanked."""
    out = dict(features)
    if state in ("text_only", "neither"):
        out["image"] = blank_image(features["image"]).numpy()
    if state in ("image_only", "neither"):
        out["text"] = blank_text(features["text"]).numpy()
    return out


def _nll_and_accuracy(weights, logs, labels):
    z = np.einsum("e,nec->nc", weights, logs)
    z = z - z.max(-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -log_p[np.arange(len(labels)), labels].mean(), float((z.argmax(-1) == labels).mean()), log_p


def _fit_state(logs, labels, steps=400, learning_rate=0.05):
    """Non-negative expert weights minimising the validation NLL (Adam on softplus(theta));
    returns the best of those and of the plain candidates by validation NLL. Not by
    accuracy: on a few hundred pairs accuracy moves in steps of a pair, and the validation
    split also chose the fused head's best epoch, so its accuracy there is optimistic (on
    8,000 CIFAR-10 pairs a weighted_sum row kept its fused head alone by one validation
    pair and lost 1.1 test points to the fitted product)."""
    theta = np.full(logs.shape[1], np.log(np.e - 1))  # softplus(theta) = 1
    m = v = np.zeros_like(theta)
    onehot = np.eye(logs.shape[-1])[labels]
    for t in range(1, steps + 1):
        w = np.log1p(np.exp(theta))
        _, _, log_p = _nll_and_accuracy(w, logs, labels)
        grad_z = (np.exp(log_p) - onehot) / len(labels)  # d NLL / d z
        grad_w = np.einsum("nc,nec->e", grad_z, logs)
        grad = grad_w / (1 + np.exp(-theta))
        m, v = 0.9 * m + 0.1 * grad, 0.999 * v + 0.001 * grad**2
        theta -= learning_rate * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    candidates = [np.log1p(np.exp(theta))] + [np.array(c, float) for c in
                                               ((1, 0, 0), (0, 1, 1), (1, 1, 1), (0, 1, 0), (0, 0, 1))]
    scored = [(_nll_and_accuracy(w, logs, labels)[0], i, w) for i, w in enumerate(candidates)]
    return min(scored, key=lambda s: (s[0], s[1]))[2]


# Twelve weights (four states x three experts) need no more held-out examples than this;
# on CIFAR-10's 5,000 validation pairs the four passes of a model with a six-view image
# expert cost minutes per fused row.
MAX_FIT_EXAMPLES = 2000


def fit_expert_weights(model, features, labels, batch_size=256, max_examples=MAX_FIT_EXAMPLES, seed=0):
    """Fit the product-of-experts weights of `model` (from `with_unimodal_experts`) on
    held-out `features` / `labels` (the validation split; a seeded subset of
    `max_examples` of it when it is larger), separately for each presence state, on copies
    of the data with the absent modalities blanked.

    In each state the weights minimise the log-loss of the product; a simple alternative
    (fused head alone, the product of the two experts, all three equally) replaces them
    only where its log-loss on this data is lower (where the fit has not converged), so
    the model's held-out log-loss is never worse than the product ensemble's of its two
    experts. Returns {state: {expert: weight}}.
    """
    layer = model.get_layer("experts_product")
    labels = np.asarray(labels).astype(np.int64)
    if max_examples is not None and len(labels) > max_examples:
        rows = np.sort(np.random.default_rng(seed).permutation(len(labels))[:max_examples])
        features, labels = {k: np.asarray(v)[rows] for k, v in features.items()}, labels[rows]
    heads = ("fused_label", "image_label", "text_label")
    table = np.zeros((len(PRESENCE_STATES), len(EXPERTS)), np.float32)
    for i, state in enumerate(PRESENCE_STATES):
        out = training.predict_outputs(model, blanked(features, state), batch_size=batch_size)
        logs = np.stack([np.log(np.clip(out[h].astype(np.float64), _LOG_FLOOR, 1.0)) for h in heads], axis=1)
        table[i] = _fit_state(logs, labels)
    layer.expert_weights.assign(table)
    return expert_weights(model)


def expert_weights(model):
    """{presence state: {expert: weight}} of a model from `with_unimodal_experts`."""
    table = np.asarray(model.get_layer("experts_product").expert_weights)
    return {state: dict(zip(EXPERTS, map(float, row))) for state, row in zip(PRESENCE_STATES, table)}


def _has_input_stage_fusion(model):
    """Whether a fusion layer of `model` is registered with stage "input" (early fusion)."""
    from mmkeras.fusion import fusion_info, list_fusions

    specs = [fusion_info(n) for n in list_fusions()]
    return any(isinstance(layer, tuple(s.cls for s in specs if s.stage == "input")) for layer in model.layers)
