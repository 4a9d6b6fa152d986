"""Training helpers: recommended compile settings, input selection, a timed fit (on one
device or under a `tf.distribute` strategy, see `mmkeras.distribute`)."""

import contextlib
import os
import time

import keras
import numpy as np
import tensorflow as tf

from mmkeras.evaluation import classification_report

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


def compile_settings(model, learning_rate=1e-3, aux_loss_weights=None):
    """Recommended `compile` keyword arguments for an mmkeras model (any set of heads)."""
    from mmkeras.models.heads import aux_loss_weights as recorded_aux_loss_weights

    outputs = list(model.output.keys()) if isinstance(model.output, dict) else [OUTPUT]
    # The auxiliary heads carry the weights the model was built with; explicit arguments win.
    aux_loss_weights = {**recorded_aux_loss_weights(model), **(aux_loss_weights or {})}
    return dict(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss={k: "sparse_categorical_crossentropy" for k in outputs},
        loss_weights={k: (1.0 if k == OUTPUT else aux_loss_weights.get(k, 0.5)) for k in outputs},
        metrics={k: ["accuracy"] for k in outputs},
    )


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


def _route(model, dataset):
    """Map a paired dataset to the model's inputs and (for multitask) replicate labels."""
    outputs = list(model.output.keys()) if isinstance(model.output, dict) else [OUTPUT]

    def route(features, labels):
        return select_inputs(model, features), {k: labels for k in outputs}

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
        backup_freq="epoch", **fit_kwargs):
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
    train, val = _route(model, datasets.train), _route(model, datasets.validation)
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
    return history, {"train_seconds": seconds, "train_samples": samples, "train_samples_per_second": samples / seconds,
                     "epochs": len(history.epoch)}


def predict_proba(model, features, batch_size=256):
    """Class probabilities of the main head for a features dict."""
    out = model.predict(select_inputs(model, features), batch_size=batch_size, verbose=0)
    return np.asarray(out[OUTPUT] if isinstance(out, dict) else out)


def evaluate(model, datasets, split="test", batch_size=256):
    """accuracy and macro precision / recall / F1 on `split`, plus the predictions."""
    features, labels = datasets.arrays[split]
    pred = predict_proba(model, features, batch_size).argmax(axis=-1)
    report = classification_report(labels, pred, datasets.num_classes)
    return report, pred
