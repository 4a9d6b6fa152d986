"""Training helpers: recommended compile settings, input selection, a timed fit."""

import time

import keras
import numpy as np

from mmkeras.evaluation import classification_report

# The fused head is the model's main output; auxiliary heads (multitask) add more keys.
OUTPUT = "label"


def compile_settings(model, learning_rate=1e-3, aux_loss_weights=None):
    """Recommended `compile` keyword arguments for an mmkeras model (any set of heads)."""
    outputs = list(model.output.keys()) if isinstance(model.output, dict) else [OUTPUT]
    # build_fused records the weights it was given; explicit arguments win.
    aux_loss_weights = {**getattr(model, "aux_loss_weights", {}), **(aux_loss_weights or {})}
    return dict(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss={k: "sparse_categorical_crossentropy" for k in outputs},
        loss_weights={k: (1.0 if k == OUTPUT else aux_loss_weights.get(k, 0.5)) for k in outputs},
        metrics={k: ["accuracy"] for k in outputs},
    )


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


def fit(model, datasets, epochs=5, callbacks=None, verbose="auto", **fit_kwargs):
    """Fit on `datasets.train` with `datasets.validation`; returns (history, stats).

    stats: train_seconds and train_samples_per_second (wall clock, all epochs).
    Any Keras callbacks may be passed.
    """
    if getattr(model, "optimizer", None) is None:
        compile_model(model)
    train, val = _route(model, datasets.train), _route(model, datasets.validation)
    start = time.perf_counter()
    history = model.fit(train, validation_data=val if datasets.size("validation") else None,
                        epochs=epochs, callbacks=callbacks, verbose=verbose, shuffle=False,
                        **fit_kwargs)
    seconds = time.perf_counter() - start
    samples = datasets.size("train") * len(history.epoch)
    return history, {"train_seconds": seconds, "train_samples_per_second": samples / seconds,
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
