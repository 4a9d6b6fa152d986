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
from mmkeras import fusion_recipes, speedrun, training
from mmkeras.bench import recipe
from mmkeras.bench.curve import EpochCurve
from mmkeras.bench.schedule import BestValidationStop, patience_for
from mmkeras.data.pipeline import with_modality_dropout
from mmkeras.models.tta import unwrap_tta


def as_is(features):
    return features


@dataclasses.dataclass
class Trained:
    """A trained row, ready to be measured."""

    model: keras.Model
    stats: dict  # train_seconds, epochs, batch_size, train_samples(_per_second), ...
    history: dict  # Keras history: metric -> per-epoch values
    curve: EpochCurve  # per-epoch test accuracy (never fitted for ensembles)
    prepare: Callable = as_is  # benchmark features (right-padded text) -> what the model reads

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


def _load_branch_source(path):
    """The saved unimodal model at `path` without its test-time augmentation: a fused row
    borrows the branch and the head, never the TTA wrapper."""
    return unwrap_tta(_load_source(path))


def _stopper(plan):
    """The row's early stopping on the validation split (None: the plan has none)."""
    return BestValidationStop(patience_for(plan.epochs)) if plan.early_stopping else None


def _schedule_stats(stats, plan, curve, stopper):
    """The row's stats with its batch, its planned epochs and the epoch whose weights it kept."""
    best = curve.follow(stopper) if stopper is not None else None
    return dict(stats, batch_size=plan.batch_size, planned_epochs=plan.epochs, best_epoch=best)


def build_registered(plan, ds, *, with_sources=True):
    """The untrained model of a registered row. with_sources=False: its warm-start branches
    stay untrained (what a row costs does not depend on them; budget.py probes it so)."""
    kwargs = ds.model_kwargs()
    if plan.augmentation:
        kwargs["image_augmentation"] = plan.augmentation
    for modality, path in (plan.warm_start or {}).items() if with_sources else ():
        kwargs[f"{modality}_init"] = _load_branch_source(path)
    if "image" in (plan.warm_start or {}):
        # A borrowed image branch stays frozen (a fusion that feeds text into it keeps it
        # trainable: build_fused decides that from the fusion's registration).
        kwargs["freeze_image"] = True
    with training.precision_policy(plan.precision):
        return mmkeras.create_model(plan.model, **kwargs)


def train_registered(plan, ds, config, warm):
    model = build_registered(plan, ds)
    row_ds = ds.with_batch_size(plan.batch_size)  # fresh: its data order owes nothing to earlier rows
    curve, stopper = EpochCurve(*training.split_arrays(ds, "test")), _stopper(plan)
    # The curve first: it records each epoch before the stopper may end the fit.
    watchers = [curve] + ([stopper] if stopper else [])
    if plan.fusion_recipe:
        return _train_by_fusion_recipe(model, plan, row_ds, config, curve, stopper, watchers)
    if plan.training == "speedrun":
        return _train_by_speedrun(model, plan, row_ds, config, curve, stopper, watchers)
    if "image" not in (plan.warm_start or {}):  # a speed-run branch trained another way still whitens
        speedrun.adapt_whitening(model, row_ds, seed=config.seed)
    training.compile_model(model, learning_rate=training.cosine_schedule(
        config.learning_rate, plan.epochs, ds.size("train"), plan.batch_size))
    train = with_modality_dropout(row_ds.train, config.modality_dropout, config.seed)
    fitted, stats = training.fit(model, dataclasses.replace(row_ds, train=train), epochs=plan.epochs,
                                 callbacks=callbacks_for(config, plan.name, watchers), verbose=2,
                                 class_weight=config.class_weight)
    return Trained(model, _schedule_stats(curve.exclude_from(stats), plan, curve, stopper), fitted.history, curve)


def _train_by_fusion_recipe(model, plan, ds, config, curve, stopper, watchers):
    """A warm-started fused row trained by its fusion recipe (mmkeras.fusion_recipes). The
    recipe gets the unimodal rows' models as saved, test-time augmentation included: the
    "experts" recipe keeps the image row's views in its image expert."""
    sources = {f"{m}_model": _load_source(p) for m, p in plan.warm_start.items()}
    model, history, stats = fusion_recipes.fit_fused(
        model, ds, recipe=plan.fusion_recipe, **sources, epochs=plan.epochs, learning_rate=config.learning_rate,
        modality_dropout=config.modality_dropout, seed=config.seed, class_weight=config.class_weight,
        callbacks=callbacks_for(config, plan.name, watchers), verbose=2)
    stats = _schedule_stats(curve.exclude_from(stats), plan, curve, stopper)
    watched = {id(w) for w in curve.model.weights}
    if any(id(w) not in watched for w in model.weights):  # the recipe added to the trained model
        curve.record_final(model, stats["train_seconds"])  # (a training wrapper's model adds nothing)
    return Trained(model, stats, history, curve)


def _train_by_speedrun(model, plan, ds, config, curve, stopper, watchers):
    """An image row trained by its own recipe (mmkeras.speedrun); its test-time augmentation
    is part of the row's model, measured and saved."""
    from mmkeras.bench.budget import TrainingDeadline

    # Under a time budget its schedule is laid over the epochs the deadline leaves, and the
    # fit ends after them (speedrun.FitScheduleToTime). The deadline does not stop it too:
    # after one slow epoch it could end the fit an epoch before that schedule anneals.
    deadline = next((c for c in config.callbacks if isinstance(c, TrainingDeadline)), None)
    config = dataclasses.replace(config, callbacks=[c for c in config.callbacks if c is not deadline])
    model, history, stats = speedrun.fit_speedrun(
        model, ds, epochs=plan.epochs, seed=config.seed, class_weight=config.class_weight,
        callbacks=callbacks_for(config, plan.name, watchers), verbose=2,
        # (a spent budget leaves a deadline of 0 s: the fewest epochs, as the deadline would)
        time_limit=max(deadline.seconds, 1e-3) if deadline is not None else None, optimizer=plan.optimizer or "sgd")
    if deadline is not None:  # what the budget records of the row's stop
        deadline.stopped_after = stats["schedule_shortened_to"]
    stats = _schedule_stats(curve.exclude_from(stats), plan, curve, stopper)
    if stats.get("tta"):  # wrapped in test-time augmentation after its last epoch
        curve.record_final(model, stats["train_seconds"])
    return Trained(model, stats, history, curve)


def recipe_text(features):
    """Perturbations act on right-padded ids; the recipe reads pre-padded ones."""
    return dict(features, text=recipe.pre_pad(features["text"]))


def build_recipe(plan, ds):
    """The untrained model of a recipe row."""
    with training.precision_policy(plan.precision):
        return recipe.build_recipe_model(plan.model, num_classes=ds.num_classes, image_shape=ds.image_shape,
                                         vocab_size=ds.vocab_size)


def train_recipe(plan, ds, config, warm):
    model = build_recipe(plan, ds)
    # The recipe's own arrays: train + validation re-joined (it splits 80/20 itself), in
    # a seeded random order as keras.datasets delivers CIFAR. Keras takes the *last* 20%
    # as validation without shuffling: on class-sorted arrays (a folder of class folders)
    # it would never train on the last classes.
    order = np.random.default_rng(config.seed).permutation(ds.size("train") + ds.size("validation"))
    (train_x, train_y), (val_x, val_y) = (training.split_arrays(ds, split) for split in ("train", "validation"))
    train_x = {k: np.concatenate([train_x[k], val_x[k]])[order] for k in ("image", "text")}
    train_y = np.concatenate([train_y, val_y])[order]
    train_x["text"] = recipe.pre_pad(train_x["text"])
    test_x, test_y = training.split_arrays(ds, "test")
    curve = EpochCurve(recipe_text(test_x), test_y)
    # The same per-class weights as the package rows (from the train split's labels).
    weights = training.resolve_class_weight(config.class_weight, training.split_labels(ds, "train"),
                                           ds.class_names)
    fitted, stats = recipe.fit_recipe(model, train_x, train_y, epochs=plan.epochs, batch_size=plan.batch_size,
                                      callbacks=callbacks_for(config, plan.name, [curve]),
                                      sample_weight=None if weights is None else weights[train_y])
    if weights is not None:
        stats["class_weights"] = [float(w) for w in weights]
    return Trained(model, dict(curve.exclude_from(stats), batch_size=plan.batch_size, planned_epochs=plan.epochs),
                   fitted.history, curve, prepare=recipe_text)


def combine_ensemble(plan, ds, config, warm):
    members = [_load_source(warm.best(m)) for m in plan.members]  # loaded once per run, not per row
    start = time.perf_counter()
    with training.precision_policy(plan.precision):
        model = mmkeras.create_model(plan.model, members=members, validation_data=ds)
    seconds = time.perf_counter() - start
    # "Training" is fitting the combiner on the validation split (nothing, for most methods).
    stats = {"train_seconds": seconds, "epochs": 0, "batch_size": None, "planned_epochs": plan.epochs,
             "train_samples_per_second": ds.size("validation") / seconds}
    return Trained(model, stats, {}, EpochCurve(None, None))  # never fitted: it holds no test set


STRATEGIES = {"registered": train_registered, "recipe": train_recipe, "ensemble": combine_ensemble}
