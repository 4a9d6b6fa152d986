"""How a row is trained: one function per strategy, each `fn(plan, ds, config, warm) -> Trained`.

registered: a registered model through the package pipeline (tf.data, cosine schedule,
    optional warm start of a fused model's branches).
recipe: the seed graph trained the textbook way (see recipe.py), the reference row.
ensemble: this run's best unimodal rows combined by `mmkeras.create_model("ensemble_*")`.
"""

import dataclasses
import functools
import os
import time
from typing import Callable

import keras
import numpy as np

import mmkeras
from mmkeras import training
from mmkeras.bench import recipe
from mmkeras.bench.curve import EpochCurve
from mmkeras.data.pipeline import with_modality_dropout


def _as_is(features):
    return features


@dataclasses.dataclass
class Trained:
    """A trained row, ready to be measured."""

    model: keras.Model
    stats: dict  # train_seconds, epochs, batch_size, train_samples(_per_second), ...
    history: dict  # Keras history: metric -> per-epoch values
    curve: EpochCurve  # per-epoch test accuracy (never fitted for ensembles)
    prepare: Callable = _as_is  # benchmark features (right-padded text) -> what the model reads

    def predict(self, features):
        """Class ids for benchmark features."""
        return training.predict_proba(self.model, self.prepare(features)).argmax(-1)


def callbacks_for(config, name, extra):
    """The user's callbacks, `extra`, and a TensorBoard log per row if asked for."""
    cbs = list(config.callbacks) + list(extra)
    if config.tensorboard:
        cbs.append(keras.callbacks.TensorBoard(os.path.join(config.tensorboard, name)))
    return cbs


def _load_source(path):
    """The saved model at `path`, loaded once: every fused row borrows the same two
    unimodal models, and a .keras load costs a second or two."""
    return _load_saved(path, os.path.getmtime(path))


@functools.lru_cache(maxsize=8)
def _load_saved(path, mtime):  # mtime in the key: a file rewritten by a new run is read again
    return keras.saving.load_model(path)


def train_registered(plan, ds, config, warm):
    kwargs = ds.model_kwargs()
    if plan.augmentation:
        kwargs["image_augmentation"] = plan.augmentation
    for modality, path in (plan.warm_start or {}).items():
        kwargs[f"{modality}_init"] = _load_source(path)
    if "image" in (plan.warm_start or {}):
        # A borrowed image branch stays frozen (a fusion that feeds text into it keeps it
        # trainable: build_fused decides that from the fusion's registration).
        kwargs["freeze_image"] = True
    with training.precision_policy(plan.precision):
        model = mmkeras.create_model(plan.model, **kwargs)
    row_ds = ds.with_batch_size(plan.batch_size)  # fresh: its data order owes nothing to earlier rows
    training.compile_model(model, learning_rate=training.cosine_schedule(
        config.learning_rate, plan.epochs, ds.size("train"), plan.batch_size))
    curve = EpochCurve(*ds.arrays["test"])
    train = with_modality_dropout(row_ds.train, config.modality_dropout, config.seed)
    fitted, stats = training.fit(model, dataclasses.replace(row_ds, train=train), epochs=plan.epochs,
                                 callbacks=callbacks_for(config, plan.name, [curve]), verbose=2)
    return Trained(model, dict(curve.exclude_from(stats), batch_size=plan.batch_size), fitted.history, curve)


def _recipe_text(features):
    """Perturbations act on right-padded ids; the recipe reads pre-padded ones."""
    return dict(features, text=recipe.pre_pad(features["text"]))


def train_recipe(plan, ds, config, warm):
    with training.precision_policy(plan.precision):
        model = recipe.build_recipe_model(plan.model, num_classes=ds.num_classes, image_shape=ds.image_shape,
                                          vocab_size=ds.vocab_size)
    # The recipe's own arrays: train + validation re-joined (it splits 80/20 itself), in
    # a seeded random order as keras.datasets delivers CIFAR. Keras takes the *last* 20%
    # as validation without shuffling: on class-sorted arrays (a folder of class folders)
    # it would never train on the last classes.
    order = np.random.default_rng(config.seed).permutation(ds.size("train") + ds.size("validation"))
    train_x = {k: np.concatenate([ds.arrays["train"][0][k], ds.arrays["validation"][0][k]])[order]
               for k in ("image", "text")}
    train_y = np.concatenate([ds.arrays["train"][1], ds.arrays["validation"][1]])[order]
    train_x["text"] = recipe.pre_pad(train_x["text"])
    test_x, test_y = ds.arrays["test"]
    curve = EpochCurve(_recipe_text(test_x), test_y)
    fitted, stats = recipe.fit_recipe(model, train_x, train_y, epochs=plan.epochs, batch_size=plan.batch_size,
                                      callbacks=callbacks_for(config, plan.name, [curve]))
    return Trained(model, dict(curve.exclude_from(stats), batch_size=plan.batch_size), fitted.history, curve,
                   prepare=_recipe_text)


def combine_ensemble(plan, ds, config, warm):
    members = [warm.best(m) for m in plan.members]
    start = time.perf_counter()
    with training.precision_policy(plan.precision):
        model = mmkeras.create_model(plan.model, members=members, validation_data=ds)
    seconds = time.perf_counter() - start
    # "Training" is fitting the combiner on the validation split (nothing, for most methods).
    stats = {"train_seconds": seconds, "epochs": 0, "batch_size": None,
             "train_samples_per_second": ds.size("validation") / seconds}
    return Trained(model, stats, {}, EpochCurve(*ds.arrays["test"]))


STRATEGIES = {"registered": train_registered, "recipe": train_recipe, "ensemble": combine_ensemble}
