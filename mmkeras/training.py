"""Training helpers: recommended compile settings, input selection, class weights, a timed
fit (on one device or under a `tf.distribute` strategy, see `mmkeras.distribute`), evaluation.

Class imbalance: `fit(..., class_weight="balanced")` weighs each training example of class
c by n / (k * count_c) (n training rows, k classes that have training rows, count_c rows of
class c: the weights average 1 over the training rows), or by a dict {class: weight}. Keras
3 refuses `class_weight` for dict outputs, so the weights travel as per-example sample
weights in the training pipeline: ONE weight per example, applied alike to the fused
"label" loss and to every auxiliary head's loss. Each loss is then
mean_i(w_i * crossentropy_i) over a batch (Keras divides by the batch size, not by the sum
of the weights). Accuracy and the validation loss stay unweighted.
"""

import contextlib
import os
import time

import keras
import numpy as np
import tensorflow as tf

from mmkeras import prediction_memo
from mmkeras.evaluation import classification_report, per_class_recall

# The fused head is the model's main output; auxiliary heads (multitask) add more keys.
OUTPUT = "label"

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


def _cpu_has_native_bf16():
    """True on CPUs with bf16 dot-product instructions (AVX512_BF16, AMX), read on Linux."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision="auto"):
    """A Keras dtype policy name: "auto" picks mixed_float16 on a GPU, mixed_bfloat16 on a
    CPU with native bf16 (oneDNN runs convolutions 1.26x faster there, measured on Zen 4),
    else float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; expected one of: {', '.join(PRECISIONS)}.")
    if precision != "auto":
        return precision
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "mixed_bfloat16" if _cpu_has_native_bf16() else "float32"


@contextlib.contextmanager
def precision_policy(precision="auto"):
    """Models built inside use this dtype policy (variables stay float32; heads compute
    in float32); the previous global policy is restored on exit."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(resolve_precision(precision))
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def compile_settings(model, learning_rate=1e-3, aux_loss_weights=None, steps_per_execution=1):
    """Recommended `compile` keyword arguments for an mmkeras model (any set of heads).

    steps_per_execution: train steps per call into the graph (Keras `compile`); more is
    faster for small models, but batch-level callbacks (`on_train_batch_end`, a
    BackupAndRestore every N batches) then see one call per that many steps.
    """
    from mmkeras.models.heads import aux_loss_weights as recorded_aux_loss_weights

    outputs = list(model.output.keys()) if isinstance(model.output, dict) else [OUTPUT]
    # The auxiliary heads carry the weights the model was built with; explicit arguments win.
    aux_loss_weights = {**recorded_aux_loss_weights(model), **(aux_loss_weights or {})}
    return dict(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss={k: "sparse_categorical_crossentropy" for k in outputs},
        loss_weights={k: (1.0 if k == OUTPUT else aux_loss_weights.get(k, 0.5)) for k in outputs},
        metrics={k: ["accuracy"] for k in outputs},
        steps_per_execution=steps_per_execution,
    )


def image_pixels(image_size):
    """Pixels of one image of `image_size`: a side (square images) or (H, W, ...)."""
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)[:2]
    return height * width


def cosine_schedule(peak, epochs, n_train, batch_size):
    """Cosine decay from `peak` to 1% of it over all the steps of an `epochs`-long fit."""
    steps = epochs * int(np.ceil(n_train / batch_size))
    return keras.optimizers.schedules.CosineDecay(peak, decay_steps=max(steps, 1), alpha=0.01)


def compile_model(model, **kwargs):
    model.compile(**compile_settings(model, **kwargs))
    return model


def select_inputs(model, features):
    """The subset of a features dict that `model` takes, matched by input name.

    mmkeras models take both keys; a user's own model with fewer inputs gets only its
    own, never another key by position (keras issue #23258).
    """
    names = list(model.input.keys()) if isinstance(model.input, dict) else [model.input.name]
    missing = [n for n in names if n not in features]
    if missing:
        raise ValueError(f"Features lack {missing} needed by model '{model.name}'; received keys {sorted(features)}.")
    return {n: features[n] for n in names}


def split_labels(datasets, split):
    """The int labels of `split` of a PairedDatasets (in memory even for a streamed set)."""
    return np.asarray(datasets.arrays[split][1])


def split_arrays(datasets, split, rows=None):
    """(features dict, int labels) of `split` of a PairedDatasets (all rows, or the positions
    `rows`), images as uint8 pixels: decoded when the set is streamed (a manifest), so mind
    the memory of a whole large split."""
    labels = split_labels(datasets, split)
    if rows is not None:
        labels = labels[np.asarray(rows, dtype=np.int64).reshape(-1)]
    return datasets.features(split, rows), labels


def resolve_class_weight(class_weight, labels, class_names):
    """float32 [C] weight per class for `class_weight`, or None (unweighted).

    class_weight: None; "balanced": n / (k * count_c) from `labels` (the TRAIN split's
        int labels; k counts the classes present there, a class absent from them gets 1.0,
        unused); or a dict {class index or class name: weight >= 0}, classes left out get 1.0.
    """
    if class_weight is None:
        return None
    num_classes = len(class_names)
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(f"Unknown class_weight={class_weight!r}; expected one of: None, 'balanced', "
                             "or a dict {class index or name: weight}.")
        counts = np.bincount(np.asarray(labels, np.int64).reshape(-1), minlength=num_classes)
        present = counts > 0
        if not present.any():
            raise ValueError("class_weight='balanced' needs training labels; the train split is empty.")
        weights = np.ones(num_classes, np.float64)
        weights[present] = counts.sum() / (present.sum() * counts[present])
        return weights.astype(np.float32)
    if not isinstance(class_weight, dict):
        raise ValueError("`class_weight` must be None, 'balanced' or a dict {class index or name: weight}. "
                         f"Received {type(class_weight).__name__} {class_weight!r}.")
    index = {str(name): i for i, name in enumerate(class_names)}
    weights = np.ones(num_classes, np.float32)
    for key, weight in class_weight.items():
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool) and 0 <= key < num_classes:
            i = int(key)
        elif isinstance(key, str) and key in index:
            i = index[key]
        else:
            raise ValueError(f"class_weight key {key!r} is no class: expected an index in [0, {num_classes - 1}] "
                             f"or one of the class names {list(class_names)[:20]}.")
        if isinstance(weight, bool) or not isinstance(weight, (int, float, np.number)) \
                or not np.isfinite(weight) or weight < 0:
            raise ValueError(f"class_weight[{key!r}] must be a finite number >= 0. Received {weight!r}.")
        weights[i] = weight
    return weights


def _route(model, dataset, class_weights=None):
    """Map a paired dataset to the model's inputs, replicate labels for every head and,
    with `class_weights` ([C]), add each example's weight as its sample weight."""
    outputs = list(model.output.keys()) if isinstance(model.output, dict) else [OUTPUT]
    table = None if class_weights is None else tf.constant(class_weights, tf.float32)

    def route(features, labels):
        routed = select_inputs(model, features), {k: labels for k in outputs}
        # One weight per example: Keras applies a non-nested sample weight to every loss.
        return routed if table is None else (*routed, tf.gather(table, labels))

    return dataset.map(route)


def build_in_scope(strategy, build, *args, compile=True, compile_kwargs=None, **kwargs):
    """`build(*args, **kwargs)` inside `strategy.scope()`, compiled there unless `compile=False`.

    `build` is a callable returning a model (e.g. `mmkeras.create_model`) or a registered
    model name. Model, optimizer and metric variables then all belong to the strategy.
    """
    if isinstance(build, str):
        import mmkeras

        args, build = (build, *args), mmkeras.create_model
    with strategy.scope():
        model = build(*args, **kwargs)
        if compile:
            compile_model(model, **(compile_kwargs or {}))
    return model


def fit(model, datasets, epochs=5, callbacks=None, verbose="auto", strategy=None, backup_dir=None,
        backup_freq="epoch", class_weight=None, **fit_kwargs):
    """Fit on `datasets.train` with `datasets.validation`; returns (history, stats).

    stats: train_seconds, train_samples (examples seen, all epochs) and
    train_samples_per_second (wall clock, all epochs).
    Any Keras callbacks may be passed.

    strategy: a `tf.distribute.Strategy` (see `mmkeras.distribute.get_strategy`); default:
    the one the model was created under. The model must have been created in its scope (see
    `build_in_scope`); an uncompiled model is compiled there. The pipelines' batch size is
    the global batch: each replica gets batch_size / num_replicas_in_sync per step.
    backup_dir: wire `keras.callbacks.BackupAndRestore` there: a rerun of the same `fit`
    after a crash resumes from the last backup (`backup_freq`: "epoch" or every N batches)
    and never repeats a completed epoch; the backup is deleted when `fit` completes.
    class_weight: None, "balanced" or {class index or name: weight} (see the module
    docstring and `resolve_class_weight`), from the train split's labels; stats then hold
    the per-class weights used ("class_weights").
    """
    from mmkeras import distribute

    if strategy is None:  # the strategy whose scope the model was created in (Keras records it)
        strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
    if not distribute.created_in_scope(model, strategy):
        raise ValueError(f"Model '{model.name}' was not created in the scope of {type(strategy).__name__}: "
                         "build it with training.build_in_scope(strategy, ...) or inside "
                         "`with strategy.scope():`.")
    if getattr(model, "optimizer", None) is None:
        with strategy.scope():
            compile_model(model)
    weights = resolve_class_weight(class_weight, split_labels(datasets, "train"), datasets.class_names)
    train, val = _route(model, datasets.train, weights), _route(model, datasets.validation)
    if strategy.num_replicas_in_sync > 1 or distribute.is_multi_worker(strategy):
        train, val = distribute.shard_by_data(train), distribute.shard_by_data(val)
    callbacks = list(callbacks or [])
    if backup_dir is not None:
        if distribute.is_multi_worker(strategy):  # every worker keeps its own identical copy
            backup_dir = os.path.join(backup_dir, f"worker_{distribute.task_id(strategy)}")
        callbacks.append(distribute.BackupAndRestore(backup_dir, save_freq=backup_freq))
    fixes = distribute.keras_multi_worker_fixes(model, train, strategy) \
        if distribute.is_multi_worker(strategy) else contextlib.nullcontext()
    start = time.perf_counter()
    with fixes:
        history = model.fit(train, validation_data=val if datasets.size("validation") else None,
                            epochs=epochs, callbacks=callbacks or None, verbose=verbose, shuffle=False,
                            **fit_kwargs)
    seconds = time.perf_counter() - start
    samples = datasets.size("train") * len(history.epoch)
    stats = {"train_seconds": seconds, "train_samples": samples, "train_samples_per_second": samples / seconds,
             "epochs": len(history.epoch)}
    if weights is not None:
        stats["class_weights"] = [float(w) for w in weights]
    return history, stats


def predict_outputs(model, features, batch_size=256):
    """`model.predict` of a features dict (the model's inputs picked by name), answered by
    the active `prediction_memo` where there is one (a benchmark run)."""
    memo = prediction_memo.current()
    features = select_inputs(model, features)
    if memo is not None:
        return memo.predict(model, features, batch_size=batch_size)
    return model.predict(features, batch_size=batch_size, verbose=0)


def predict_proba(model, features, batch_size=256):
    """Class probabilities of the main head for a features dict."""
    out = predict_outputs(model, features, batch_size)
    return np.asarray(out[OUTPUT] if isinstance(out, dict) else out)


def evaluate(model, datasets, split="test", batch_size=256):
    """accuracy, macro precision / recall / F1 and per-class recall (class name -> recall)
    on `split`, plus the predictions. Reads the split through its pipeline, so a streamed
    set's images are decoded batch by batch, never all at once."""
    labels = split_labels(datasets, split)
    # In order, so that the predictions line up with the labels (the train pipeline shuffles).
    pipeline = datasets.pipeline(split, batch_size, cache=False, shuffle=False).map(
        lambda f, y: select_inputs(model, f))
    out = model.predict(pipeline, verbose=0)
    pred = np.asarray(out[OUTPUT] if isinstance(out, dict) else out).argmax(axis=-1)
    report = classification_report(labels, pred, datasets.num_classes)
    report["per_class_recall"] = per_class_recall(labels, pred, datasets.class_names)
    return report, pred
