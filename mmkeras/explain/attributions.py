"""Where in each modality: integrated gradients on token embeddings and on pixels, Grad-CAM.

Integrated gradients (Sundararajan et al., 2017) integrate the gradient of the class
probability along the straight path from a baseline to the input; the attributions then
sum to p(input) - p(baseline) (completeness), up to the quadrature error. The integral is
taken with Gauss-Legendre quadrature on [0, 1] (`steps` nodes); ReLU kinks along the
path limit how fast any quadrature converges, so the error is stated, not assumed: with
the default 32 steps, |sum of scores - (p_input - p_baseline)| stays below
TOKEN_COMPLETENESS_TOLERANCE (tokens) and PIXEL_COMPLETENESS_TOLERANCE (pixels) on the
test models (tests/test_explain.py checks both); more steps shrink it. Every result
carries p_input and p_baseline, so the error of each explanation can be checked. All
steps of a batch run as one forward and backward pass, with the two ends of the path
(whose probabilities are returned).

- Tokens: the path runs in the text stem's embedding space (layer `text_embedding`, one
  per member in an ensemble) from the padding embedding E[0] at every position to the
  tokens' embeddings; the padding mask is kept, so the model reads the same positions
  along the path. A padded position has E[id] - E[0] = 0 and gets exactly 0.
- Pixels: the path runs from the black image (the image-missing blank) to the image.
- Grad-CAM (Selvaraju et al., 2017) on the image branch's last feature map
  (`model_parts.image_feature_map`), upsampled to the input resolution.

To interpolate the embeddings inside any text branch, the embedding layers' `call` is
swapped for the length of one forward pass (`_interpolated_embeddings`) and restored after.
"""

import contextlib

import keras
import numpy as np
import tensorflow as tf

from mmkeras.explain.contributions import _batches, _check_features
from mmkeras.explain.model_parts import (call_probabilities, image_feature_map, text_embeddings,
                                         uses_input)
from mmkeras.training import OUTPUT, select_inputs

DEFAULT_STEPS = 32
# |sum of scores - (p_input - p_baseline)| with DEFAULT_STEPS, in probability, as measured
# on the test models (worst cases seen: 6e-4 for tokens through a transformer, 7e-3 for
# pixels through a ReLU CNN; 64 steps roughly halve them).
TOKEN_COMPLETENESS_TOLERANCE = 2e-3
PIXEL_COMPLETENESS_TOLERANCE = 1e-2


def integration_path(steps):
    """(alphas, weights) float32: the two ends 0 and 1 (weight 0), then `steps`
    Gauss-Legendre nodes on [0, 1] whose weights sum to 1."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be a positive int. Received steps={steps!r}.")
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    alphas = np.concatenate([[0.0, 1.0], (nodes + 1.0) / 2.0])
    return alphas.astype(np.float32), np.concatenate([[0.0, 0.0], weights / 2.0]).astype(np.float32)


@contextlib.contextmanager
def _interpolated_embeddings(layers, alpha, deltas, diffs):
    """Within the block each embedding layer returns E[0] + alpha * (E[ids] - E[0]) + delta.

    alpha: (N,) per row; delta: a zero (N, T, D) tensor the caller watches, so that the
    gradient with respect to it is the gradient with respect to the embeddings; `diffs`
    receives each layer's E[ids] - E[0] (0 at padding).
    """
    def interpolate(layer, original, delta):
        def call(inputs, *args, **kwargs):
            embedded = original(inputs, *args, **kwargs)
            padding = original(tf.zeros_like(inputs), *args, **kwargs)
            diff = embedded - padding
            diffs.append(diff)
            return padding + tf.cast(alpha, diff.dtype)[:, None, None] * diff + delta

        return call

    for layer, delta in zip(layers, deltas):
        layer.call = interpolate(layer, layer.call, delta)
    try:
        yield diffs
    finally:
        for layer in layers:
            del layer.call  # the class's own call again


def _rows(tensor, k):
    """`tensor` repeated k times along the batch axis (step-major rows)."""
    return tf.tile(tensor, tf.concat([[k], tf.ones([tf.rank(tensor) - 1], tf.int32)], axis=0))


def _per_step(values, k, weights):
    """(k * B, ...) step-major rows -> (ends (2, B, ...), weighted sum over the steps (B, ...))."""
    values = tf.reshape(values, tf.concat([[k, -1], tf.shape(values)[1:]], axis=0))
    w = tf.reshape(tf.constant(weights), tf.concat([[k], tf.ones([tf.rank(values) - 1], tf.int32)], axis=0))
    return values[:2], tf.reduce_sum(values * w, axis=0)


def token_integrated_gradients(model, image, text, class_id, steps=DEFAULT_STEPS):
    """Graph-safe core of `token_attributions` for one batch of tensors.

    image: float pixels (B, H, W, 3); text: int ids (B, T); class_id: int (B,).
    Returns (scores (B, T), p_input (B,), p_baseline (B,)), float32. A model that does not
    read its text gets zeros (and p_baseline = p_input).
    """
    image = tf.cast(image, tf.float32)
    layers = text_embeddings(model)
    if not layers:
        if uses_input(model, "text"):
            raise ValueError(f"Model '{model.name}' reads its text but has no Embedding layer named "
                             "'text_embedding' (the text stem of every mmkeras text branch).")
        p = tf.gather(call_probabilities(model, {"image": image, "text": text}), class_id, batch_dims=1)
        return tf.zeros(tf.shape(text), tf.float32), p, p
    alphas, weights = integration_path(steps)
    k, b, length = len(alphas), tf.shape(text)[0], tf.shape(text)[1]
    deltas = [tf.zeros(tf.stack([k * b, length, layer.output_dim]), layer.compute_dtype) for layer in layers]
    with tf.GradientTape() as tape:
        for delta in deltas:
            tape.watch(delta)
        with _interpolated_embeddings(layers, tf.repeat(tf.constant(alphas), b), deltas, []) as diffs:
            p = call_probabilities(model, {"image": _rows(image, k), "text": _rows(text, k)})
            target = tf.gather(p, _rows(class_id, k), batch_dims=1)
    grads = tape.gradient(target, deltas)
    per_row = tf.add_n([tf.reduce_sum(tf.cast(g * d, tf.float32), axis=-1) for g, d in zip(grads, diffs)])
    _, scores = _per_step(per_row, k, weights)
    ends, _ = _per_step(target, k, weights)
    return scores, ends[1], ends[0]


def pixel_integrated_gradients(model, image, text, class_id, steps=DEFAULT_STEPS):
    """Graph-safe core of `pixel_attributions`: (scores (B, H, W), p_input, p_baseline)."""
    image = tf.cast(image, tf.float32)
    alphas, weights = integration_path(steps)
    k, b = len(alphas), tf.shape(image)[0]
    with tf.GradientTape() as tape:
        pixels = _rows(image, k) * tf.repeat(tf.constant(alphas), b)[:, None, None, None]
        tape.watch(pixels)
        p = call_probabilities(model, {"image": pixels, "text": _rows(text, k)})
        target = tf.gather(p, _rows(class_id, k), batch_dims=1)
    grad = tape.gradient(target, pixels)
    if grad is None:  # the model does not read its image
        grad = tf.zeros_like(pixels)
    _, mean_grad = _per_step(grad, k, weights)
    ends, _ = _per_step(target, k, weights)
    return tf.reduce_sum(image * mean_grad, axis=-1), ends[1], ends[0]


def _predicted(model, batch):
    p = call_probabilities(model, {"image": tf.constant(batch["image"], tf.float32),
                                   "text": tf.constant(batch["text"])})
    return tf.argmax(p, axis=-1, output_type=tf.int32)


def _class_rows(class_id, n):
    """None (explain the predicted class) or one class id per example."""
    return None if class_id is None else np.broadcast_to(np.asarray(class_id, np.int32), (n,))


def _integrated(core, model, features, class_id, steps, batch_size):
    _check_features(features, batch_size)
    integration_path(steps)  # checks steps
    classes = _class_rows(class_id, len(features["image"]))
    per_pass = max(1, batch_size // (steps + 2))  # examples per forward pass, all steps together
    out = {"scores": [], "p_input": [], "p_baseline": [], "class_id": []}
    for start, batch in zip(range(0, len(features["image"]), per_pass), _batches(features, per_pass)):
        cls = (tf.constant(classes[start : start + per_pass]) if classes is not None
               else _predicted(model, batch))
        scores, p_input, p_baseline = core(model, tf.constant(batch["image"], tf.float32),
                                           tf.constant(batch["text"]), cls, steps)
        for key, value in zip(out, (scores, p_input, p_baseline, cls)):
            out[key].append(np.asarray(value))
    result = {key: np.concatenate(values) for key, values in out.items()}
    result["class_id"] = result["class_id"].astype(np.int64)
    return result


def token_attributions(model, features, *, class_id=None, steps=DEFAULT_STEPS, batch_size=256):
    """Integrated gradients of each token, baseline the padding embedding.

    features: {"image": (N, H, W, 3) pixels, "text": (N, T) ids}, as the model takes them.
    class_id: the class explained (an int, or one per example); default the predicted one.
    Returns numpy arrays: "scores" (N, T) float32, one per token position (0 at padding;
    an all-padding text reads as one [UNK] at position 0, which gets that token's score),
    "p_input" and "p_baseline" (N,), the class probability at the input and with every
    token at the padding embedding: scores.sum(-1) ~= p_input - p_baseline within
    TOKEN_COMPLETENESS_TOLERANCE (at the default steps); "class_id" (N,). A model that does not read text gets zeros.
    """
    return _integrated(token_integrated_gradients, model, features, class_id, steps, batch_size)


def pixel_attributions(model, features, *, class_id=None, steps=DEFAULT_STEPS, batch_size=256):
    """Integrated gradients of each pixel, baseline the black image; like
    `token_attributions`, with "scores" (N, H, W): per pixel, summed over the channels;
    completeness within PIXEL_COMPLETENESS_TOLERANCE (at the default steps)."""
    return _integrated(pixel_integrated_gradients, model, features, class_id, steps, batch_size)


def grad_cam(model, features, *, class_id=None, batch_size=64):
    """Grad-CAM heatmaps on the image branch's last feature map, at input resolution.

    heatmap = ReLU(sum_k w_k A_k) with w_k the spatial mean of d p_class / d A_k, upsampled
    bilinearly from the map's (h, w) to the image's (H, W). Returns "heatmap" (N, H, W)
    float32 (not normalised: divide by its max to draw it), "map_size" (h, w) and
    "class_id" (N,). Raises a ValueError for a model without an image feature map
    (text-only, ensembles). Early fusion has a map, but it follows the fusion: every
    channel there also reads the text, so its heatmap is not the image's alone.
    """
    _check_features(features, batch_size)
    feature_map = image_feature_map(model)
    output = model.output[OUTPUT] if isinstance(model.output, dict) else model.output
    probe = keras.Model(model.input, {"map": feature_map, "label": output}, name=f"{model.name}_grad_cam")
    classes = _class_rows(class_id, len(features["image"]))
    heatmaps, chosen = [], []
    for start, batch in zip(range(0, len(features["image"]), batch_size), _batches(features, batch_size)):
        image = tf.constant(batch["image"], tf.float32)
        with tf.GradientTape() as tape:
            out = probe(select_inputs(probe, {"image": image, "text": tf.constant(batch["text"])}), training=False)
            p = tf.cast(out["label"], tf.float32)
            cls = (tf.constant(classes[start : start + batch_size]) if classes is not None
                   else tf.argmax(p, axis=-1, output_type=tf.int32))
            target = tf.gather(p, cls, batch_dims=1)
        activations = tf.cast(out["map"], tf.float32)
        grads = tf.cast(tape.gradient(target, out["map"]), tf.float32)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1))[..., None]
        heatmaps.append(tf.image.resize(cam, tf.shape(image)[1:3], method="bilinear")[..., 0].numpy())
        chosen.append(cls.numpy())
    return {"heatmap": np.concatenate(heatmaps), "map_size": tuple(feature_map.shape[1:3]),
            "class_id": np.concatenate(chosen).astype(np.int64)}
