"""What the benchmark measures beside accuracy: robustness, throughput and latency."""

import time
import weakref

import numpy as np
import tensorflow as tf

from mmkeras.evaluation import accuracy
from mmkeras.explain.contributions import blank_image, blank_text

ROBUSTNESS = ("text_missing", "image_missing", "word_dropout_0.5", "image_noise_0.1", "image_noise_0.3")
# Examples the throughput is timed on, single-example calls the latency is the median of,
# and the prediction passes of the Shapley modality shares (mmkeras.explain: both, image
# only, text only, neither).
TIMING_SAMPLES = 2048
# ...or as many whole batches as this many seconds take (at least two): a model with a
# six-view image branch needs 20 s on 2 cores for 2,048 examples, and its rate is stable
# long before.
TIMING_SECONDS = 5.0
LATENCY_REPEATS = 50
SHARE_PASSES = 2


def drop_words(token_ids, fraction, seed):
    """Drop a `fraction` of each caption's tokens and re-pack the rest to the left.

    Works on right-padded token ids, so it equals dropping words from the raw text
    (before vectorization) for every in-vocabulary word.
    """
    rng = np.random.default_rng(seed)
    out = np.zeros_like(token_ids)
    for i, row in enumerate(token_ids):
        words = row[row != 0]
        keep = words[rng.random(len(words)) >= fraction]
        out[i, : len(keep)] = keep
    return out


def perturbations(features, seed=0):
    """name -> perturbed copy of a features dict {"image": pixels 0-255, "text": ids}."""
    rng = np.random.default_rng(seed)
    image = features["image"].astype(np.float32)
    noisy = {
        # Noise std is given on the [0, 1] scale; pixels here are 0-255.
        sigma: np.clip(image + rng.normal(0.0, sigma * 255.0, image.shape), 0, 255).astype(np.float32)
        for sigma in (0.1, 0.3)
    }
    return {
        # An empty caption vectorizes to all padding (the models read it as one [UNK]).
        "text_missing": dict(features, text=blank_text(features["text"]).numpy()),
        "image_missing": dict(features, image=blank_image(image).numpy()),
        "word_dropout_0.5": dict(features, text=drop_words(features["text"], 0.5, seed)),
        "image_noise_0.1": dict(features, image=noisy[0.1]),
        "image_noise_0.3": dict(features, image=noisy[0.3]),
    }


def robustness(predict, features, labels, seed=0, perturbed=None):
    """Accuracy under each perturbation; `predict(features) -> class ids`. `perturbed`:
    `perturbations(features, seed)` if already made (their arrays are reused as they are)."""
    perturbed = perturbations(features, seed) if perturbed is None else perturbed
    return {name: accuracy(labels, predict(feats)) for name, feats in perturbed.items()}


# model -> {feature layout: its traced inference}: the throughput and the latency of a row
# share one trace (a large model's trace costs seconds, paid by every row).
_INFERENCE = weakref.WeakKeyDictionary()


def inference_fn(model, features):
    """`model(x, training=False)` as one tf.function for every batch size of `features`'
    layout (feature name -> trailing shape and dtype), traced once per model and layout."""
    spec = {k: tf.TensorSpec((None, *np.shape(v)[1:]), tf.as_dtype(np.asarray(v[:1]).dtype))
            for k, v in features.items()}
    layout = tuple(sorted((k, tuple(s.shape[1:]), s.dtype.name) for k, s in spec.items()))
    traced = _INFERENCE.setdefault(model, {})
    if layout not in traced:
        traced[layout] = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    return traced[layout]


def predict_ms_per_sample(model, features, batch_size=256, max_samples=TIMING_SAMPLES,
                          max_seconds=TIMING_SECONDS):
    """Milliseconds per sample of batched inference (after one warm-up batch): over
    `max_samples` examples, or fewer whole batches (at least two) once `max_seconds` passed."""
    n = min(max_samples, len(features["image"]))
    feats = {k: v[:n] for k, v in features.items()}
    fn = inference_fn(model, feats)
    fn({k: v[:batch_size] for k, v in feats.items()})  # traced (once per model), warmed up
    start, timed = time.perf_counter(), 0
    for i in range(0, n, batch_size):
        out = fn({k: v[i : i + batch_size] for k, v in feats.items()})
        _ = {k: np.asarray(v) for k, v in out.items()}
        timed = min(n, i + batch_size)
        if i >= batch_size and time.perf_counter() - start >= max_seconds:
            break
    return (time.perf_counter() - start) * 1000.0 / timed


def latency_p50_ms(model, features, repeats=LATENCY_REPEATS):
    """Median wall time of a single-example call, in milliseconds."""
    fn = inference_fn(model, features)
    one = {k: tf.constant(v[:1]) for k, v in features.items()}
    fn(one)
    times = []
    for i in range(repeats):
        x = {k: tf.constant(v[i % len(v) : i % len(v) + 1]) for k, v in features.items()}
        start = time.perf_counter()
        out = fn(x)
        np.asarray(out["label"])
        times.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(times))
