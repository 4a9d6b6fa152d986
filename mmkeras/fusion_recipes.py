"""How a fused model whose branches start from trained unimodal models is trained.

A fused model built with `image_init=` / `text_init=` (and a frozen image branch) is
trained by a *fusion recipe*: `fit_fused(model, datasets, recipe=..., image_model=...,
text_model=...)`. Recipes are registered (`register_fusion_recipe`) so the benchmark's
`--fusion-recipe NAME` and a user's own script reach the same code.

- "frozen": the borrowed image branch stays frozen; fusion, head (and text branch) train.
- "finetune": "frozen", then both borrowed branches unfrozen (BatchNorm statistics kept)
  for as many epochs again at a tenth of the learning rate.
- "experts" (the default): "frozen" with the text branch frozen as well, then the
  trained unimodal heads join the model
  beside the fused head and a product of experts, weighted per presence state and fitted
  on the validation split, gives the prediction (mmkeras.models.experts). The fused head
  cannot make the model lazier than its two experts, and a blank modality's expert is
  weighted out.
"""

import dataclasses
import time

import keras

from mmkeras import training
from mmkeras.argument_checks import check_positive_int, check_rate
from mmkeras.data.pipeline import with_modality_dropout
from mmkeras.models.transfer import freeze_prefix

FUSION_RECIPES = {}
DEFAULT_FUSION_RECIPE = "experts"


def register_fusion_recipe(name):
    """Register `fn(model, datasets, *, image_model, text_model, fit) -> model` as recipe
    `name`; `fit(model, epochs, learning_rate)` trains with the caller's settings."""

    def wrap(fn):
        if name in FUSION_RECIPES:
            raise ValueError(f"A fusion recipe named {name!r} is already registered.")
        FUSION_RECIPES[name] = fn
        return fn

    return wrap


def list_fusion_recipes():
    return sorted(FUSION_RECIPES)


def fit_fused(model, datasets, *, recipe=DEFAULT_FUSION_RECIPE, image_model=None, text_model=None, epochs=1,
              learning_rate=1e-3, modality_dropout=0.0, seed=0, callbacks=None, verbose="auto", **fit_kwargs):
    """Train fused `model` on `datasets` (a PairedDatasets) with fusion recipe `recipe`.

    image_model / text_model: the trained unimodal models its branches were copied from
    (recipes that use their heads need them). Each fit phase uses a cosine schedule from
    its learning rate and modality dropout at `modality_dropout`; `fit_kwargs` (e.g.
    class_weight) reach `training.fit`. Returns (model, history dict, stats): the model may
    be a new one (the "experts" recipe adds heads); stats sum all phases (train_seconds,
    train_samples, train_samples_per_second, epochs) and add `recipe` and
    `recipe_seconds` (time spent beyond gradient steps, e.g. fitting expert weights).
    """
    if recipe not in FUSION_RECIPES:
        raise ValueError(f"Unknown fusion recipe {recipe!r}; expected one of: {', '.join(list_fusion_recipes())}.")
    epochs = check_positive_int("epochs", epochs)
    check_rate("modality_dropout", modality_dropout)
    phases = []

    def fit(m, phase_epochs, phase_learning_rate):
        training.compile_model(m, learning_rate=training.cosine_schedule(
            phase_learning_rate, phase_epochs, datasets.size("train"), datasets.batch_size))
        train = with_modality_dropout(datasets.train, modality_dropout, seed)
        history, stats = training.fit(m, dataclasses.replace(datasets, train=train), epochs=phase_epochs,
                                      callbacks=callbacks, verbose=verbose, **fit_kwargs)
        phases.append((history.history, stats))

    start = time.perf_counter()
    trained = FUSION_RECIPES[recipe](model, datasets, image_model=image_model, text_model=text_model,
                                     fit=fit, epochs=epochs, learning_rate=learning_rate)
    total = time.perf_counter() - start
    history = {}
    for phase_history, _ in phases:
        for key, values in phase_history.items():
            history.setdefault(key, []).extend(values)
    seconds = sum(s["train_seconds"] for _, s in phases)
    samples = sum(s["train_samples"] for _, s in phases)
    stats = {"train_seconds": total, "train_samples": samples, "train_samples_per_second": samples / total,
             "epochs": sum(len(h.get("loss", [])) for h, _ in phases), "recipe": recipe,
             "recipe_seconds": total - seconds}
    if any(layer.name == "experts_product" for layer in trained.layers):
        from mmkeras.models.experts import expert_weights

        stats["expert_weights"] = expert_weights(trained)
    return trained, history, stats


def _require(recipe, **models):
    missing = [name for name, model in models.items() if model is None]
    if missing:
        raise ValueError(f"Fusion recipe {recipe!r} needs the trained unimodal models its branches came from; "
                         f"missing: {', '.join(missing)}.")


@register_fusion_recipe("frozen")
def frozen(model, datasets, *, image_model, text_model, fit, epochs, learning_rate):
    fit(model, epochs, learning_rate)
    return model


@register_fusion_recipe("finetune")
def finetune(model, datasets, *, image_model, text_model, fit, epochs, learning_rate):
    fit(model, epochs, learning_rate)
    for layer in model.layers:
        if layer.name.startswith(("image_", "text_")):
            # Frozen BatchNorm runs in inference mode: the statistics the branch learned stay.
            layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
    fit(model, epochs, learning_rate / 10)
    return model


@register_fusion_recipe("experts")
def experts(model, datasets, *, image_model, text_model, fit, epochs, learning_rate):
    from mmkeras.models.experts import fit_expert_weights, with_unimodal_experts

    _require("experts", image_model=image_model, text_model=text_model)
    # The experts' heads read the fused model's branch features: those must stay the ones
    # the heads were trained on, so the text branch is frozen too (the image branch already
    # is, except after an input-stage fusion, whose image expert runs beside it).
    freeze_prefix(model, "text")
    fit(model, epochs, learning_rate)
    combined = with_unimodal_experts(model, image_model, text_model)
    features, labels = training.split_arrays(datasets, "validation")
    fit_expert_weights(combined, features, labels)
    training.compile_model(combined)
    return combined
