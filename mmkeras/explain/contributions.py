"""What each modality contributed to a prediction: exact two-player Shapley values.

With two players (image, text) the Shapley value needs four forward passes per example:
both inputs, image only (text blanked), text only (image blanked) and neither. The blanks
are those of the robustness measures (`mmkeras.bench.measure.perturbations`): an image of
zeros in 0-255 pixel space, a text of padding ids 0 (which the models read as one [UNK]).
For the class c:

    phi_image = ((p_both - p_text_only) + (p_image_only - p_neither)) / 2
    phi_text  = ((p_both - p_image_only) + (p_text_only - p_neither)) / 2

so phi_image + phi_text == p_both - p_neither (efficiency). A model that does not read an
input (a unimodal model declares both and ignores one) is never called with that input
blanked: its passes are the same by construction, and that modality's contribution is
exactly 0.
"""

import numpy as np
import tensorflow as tf

from mmkeras.explain.model_parts import call_probabilities, uses_input

PASSES = ("p_both", "p_image_only", "p_text_only", "p_neither")


def blank_image(image):
    """The image-missing blank: zeros in 0-255 pixel space, float32."""
    return tf.zeros_like(tf.cast(image, tf.float32))


def blank_text(text):
    """The text-missing blank: all padding (id 0)."""
    return tf.zeros_like(text)


def modality_probabilities(model, image, text):
    """The four passes {"p_both", "p_image_only", "p_text_only", "p_neither"}: (B, C) float32
    tensors, for float pixels `image` (B, H, W, 3) and int token ids `text` (B, T).

    Graph-safe (the export's `explain` signature traces it). A pass that differs from
    another only in an input the model does not read is not run: it is that one.
    """
    image = tf.cast(image, tf.float32)

    def run(img, txt):
        return call_probabilities(model, {"image": img, "text": txt})

    no_image, no_text = blank_image(image), blank_text(text)
    reads_image, reads_text = uses_input(model, "image"), uses_input(model, "text")
    both = run(image, text)
    image_only = run(image, no_text) if reads_text else both
    text_only = run(no_image, text) if reads_image else both
    if reads_image and reads_text:
        neither = run(no_image, no_text)
    else:  # blanking an input the model ignores changes nothing
        neither = image_only if not reads_image else text_only
    return dict(zip(PASSES, (both, image_only, text_only, neither)))


def shapley(p_both, p_image_only, p_text_only, p_neither):
    """(phi_image, phi_text) from the four passes (any matching shapes)."""
    phi_image = 0.5 * ((p_both - p_text_only) + (p_image_only - p_neither))
    phi_text = 0.5 * ((p_both - p_image_only) + (p_text_only - p_neither))
    return phi_image, phi_text


def _batches(features, batch_size):
    n = len(features["image"])
    for start in range(0, n, batch_size):
        yield {k: v[start : start + batch_size] for k, v in features.items()}


def _check_features(features, batch_size):
    if not isinstance(features, dict) or not {"image", "text"} <= set(features):
        received = sorted(features) if isinstance(features, dict) else type(features).__name__
        raise ValueError("`features` must be a dict with 'image' (pixels in [0, 255]) and 'text' (token ids). "
                         f"Received {received}.")
    if len(features["image"]) != len(features["text"]):
        raise ValueError(f"`features` rows differ: {len(features['image'])} images, {len(features['text'])} texts.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int. Received batch_size={batch_size!r}.")


def modality_contributions(model, features, *, all_classes=False, batch_size=256):
    """Exact Shapley values of the image and the text, per example.

    Args:
        model: any model with the mmkeras contract (fused, unimodal, ensemble): inputs
            {"image": pixels in [0, 255], "text": token ids}, output "label".
        features: {"image": (N, H, W, 3) uint8/float pixels, "text": (N, T) int ids}.
        all_classes: False: values for the predicted class (argmax of p_both), arrays (N,);
            True: for every class, arrays (N, C).
        batch_size: examples per forward pass.

    Returns a dict of float64 numpy arrays: "image", "text" (the contributions), "p_both",
    "p_image_only", "p_text_only", "p_neither" (probabilities), and "class_id" (N,) int64,
    the predicted class. `image + text == p_both - p_neither` up to float64 rounding.
    """
    _check_features(features, batch_size)
    parts = {name: [] for name in PASSES}
    for batch in _batches(features, batch_size):
        out = modality_probabilities(model, tf.constant(batch["image"], tf.float32), tf.constant(batch["text"]))
        for name in PASSES:
            parts[name].append(np.asarray(out[name], np.float64))
    passes = {name: np.concatenate(arrays) for name, arrays in parts.items()}
    class_id = passes["p_both"].argmax(axis=-1)
    if not all_classes:
        passes = {name: np.take_along_axis(p, class_id[:, None], axis=-1)[:, 0] for name, p in passes.items()}
    phi_image, phi_text = shapley(*(passes[name] for name in PASSES))
    return {"image": phi_image, "text": phi_text, **passes, "class_id": class_id.astype(np.int64)}


def mean_modality_shares(model, features, *, batch_size=256):
    """{"image_share", "text_share"}: how much of the predictions rests on each modality.

    share_m = sum_i |phi_m,i| / sum_i (|phi_image,i| + |phi_text,i|), over the examples i,
    with phi the Shapley contributions to the predicted class (`modality_contributions`).
    The two shares sum to 1; a model whose predictions neither input moves (all phi = 0)
    gets NaN for both. Ratio of sums, not mean of ratios: an example on which neither
    modality matters carries no weight, instead of an undefined one.
    """
    out = modality_contributions(model, features, batch_size=batch_size)
    return _ratio_of_sums(out["image"], out["text"])


def shares_from_passes(p_both, p_image_only, p_text_only, p_neither):
    """`mean_modality_shares` from the four passes' class probabilities (N, C) already
    computed (e.g. with the robustness measures' blanked copies of the same examples)."""
    passes = [np.asarray(p, np.float64) for p in (p_both, p_image_only, p_text_only, p_neither)]
    class_id = passes[0].argmax(axis=-1)[:, None]
    return _ratio_of_sums(*shapley(*(np.take_along_axis(p, class_id, axis=-1)[:, 0] for p in passes)))


def _ratio_of_sums(phi_image, phi_text):
    image, text = np.abs(phi_image).sum(), np.abs(phi_text).sum()
    total = image + text
    if total == 0:
        return {"image_share": float("nan"), "text_share": float("nan")}
    return {"image_share": float(image / total), "text_share": float(text / total)}
