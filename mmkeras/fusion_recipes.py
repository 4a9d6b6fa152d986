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
- "distill" (uni-modal teacher, Du et al. 2023): one phase with both borrowed branches
  trainable (BatchNorm kept in inference mode) at `branch_learning_rate_scale` (a tenth)
  of the learning rate, the loss adding `distill_weight` times, per modality, the
  normalised squared distance between the fused model's pooled branch vector and that of
  the trained unimodal model it came from (mmkeras.recipe_trainer).
- "ogm_ge" (on-the-fly gradient modulation with generalisation enhancement, Peng et al.
  2022): the same phase without distillation; per batch, the modality that the fused
  model answers better from alone has its branch step slowed by
  1 - tanh(alpha * relu(rho - 1)), and Gaussian noise of each branch gradient's spread
  is added to both branches' gradients (mmkeras.recipe_trainer).

Options of a recipe (its keyword arguments beyond the common ones, e.g. "distill"'s
`distill_weight`, "ogm_ge"'s `alpha`) travel in `fit_fused(..., recipe_options={...})`.
"""

import dataclasses
import inspect
import time

import keras

from mmkeras import training
from mmkeras.argument_checks import check_positive_int, check_rate
from mmkeras.data.pipeline import with_modality_dropout
from mmkeras.frozen_features import fit_frozen_cached
from mmkeras.models.transfer import freeze_prefix
from mmkeras.models.tta import unwrap_tta

FUSION_RECIPES = {}
DEFAULT_FUSION_RECIPE = "experts"
# Recipes whose training is one fit of what follows frozen borrowed branches (so it runs
# on cached features: frozen_features), and the branch prefixes each freezes beyond the
# image branch the fused model was built with frozen. budget.py prices rows by it.
FROZEN_FIT_RECIPES = {"frozen": (), "experts": ("text",)}


def register_fusion_recipe(name):
    """Register `fn(model, datasets, *, image_model, text_model, fit, epochs, learning_rate,
    **options) -> model or (model, extra stats dict)` as recipe `name`;
    `fit(model, epochs, learning_rate)` trains with the caller's settings and returns that
    phase's history dict. Keyword-only `options` with defaults are the recipe's own."""

    def wrap(fn):
        if name in FUSION_RECIPES:
            raise ValueError(f"A fusion recipe named {name!r} is already registered.")
        FUSION_RECIPES[name] = fn
        return fn

    return wrap


def list_fusion_recipes():
    return sorted(FUSION_RECIPES)


def fit_fused(model, datasets, *, recipe=DEFAULT_FUSION_RECIPE, image_model=None, text_model=None, epochs=1,
              learning_rate=1e-3, modality_dropout=0.0, seed=0, recipe_options=None, callbacks=None,
              verbose="auto", frozen_cache=True, **fit_kwargs):
    """Train fused `model` on `datasets` (a PairedDatasets) with fusion recipe `recipe`.

    image_model / text_model: the trained unimodal models its branches were copied from
    (recipes that use their heads need them), as saved: an image model wrapped in
    test-time augmentation is welcome ("experts" keeps the views). Each fit phase uses a cosine schedule from
    its learning rate and modality dropout at `modality_dropout`; `fit_kwargs` (e.g.
    class_weight) reach `training.fit`. Returns (model, history dict, stats): the model may
    be a new one (the "experts" recipe adds heads); stats sum all phases (train_seconds,
    train_samples, train_samples_per_second, epochs) and add `recipe` and
    `recipe_seconds` (time spent beyond gradient steps, e.g. fitting expert weights), and
    what the recipe reports (e.g. "distill_distance", "modulation").
    recipe_options: the recipe's own keyword arguments (`recipe_option_names(recipe)`).
    frozen_cache: a phase that trains only layers behind frozen branches computes those
    branches once over the train and validation splits and fits the rest on the cached
    features (mmkeras.frozen_features: the same result up to the frozen part's dropout and
    augmentation, which then do not act; several times faster). Not with modality dropout.
    """
    if recipe not in FUSION_RECIPES:
        raise ValueError(f"Unknown fusion recipe {recipe!r}; expected one of: {', '.join(list_fusion_recipes())}.")
    recipe_options = dict(recipe_options or {})
    unknown = sorted(set(recipe_options) - set(recipe_option_names(recipe)))
    if unknown:
        allowed = ", ".join(recipe_option_names(recipe)) or "none"
        raise ValueError(f"Unknown option(s) {unknown} for fusion recipe {recipe!r}. Received "
                         f"recipe_options={recipe_options}; allowed: {allowed}.")
    epochs = check_positive_int("epochs", epochs)
    check_rate("modality_dropout", modality_dropout)
    phases = []

    def fit(m, phase_epochs, phase_learning_rate):
        schedule = training.cosine_schedule(phase_learning_rate, phase_epochs, datasets.size("train"),
                                            datasets.batch_size)
        training.compile_model(m, learning_rate=schedule)
        fitted = None
        if frozen_cache and not modality_dropout:  # (modality dropout blanks raw inputs, every epoch anew)
            fitted = fit_frozen_cached(m, datasets, epochs=phase_epochs, learning_rate=schedule,
                                       callbacks=callbacks, verbose=verbose, **fit_kwargs)
        if fitted is None:
            train = with_modality_dropout(datasets.train, modality_dropout, seed)
            fitted = training.fit(m, dataclasses.replace(datasets, train=train), epochs=phase_epochs,
                                  callbacks=callbacks, verbose=verbose, **fit_kwargs)
        history, stats = fitted
        phases.append((history.history, stats))
        return history.history

    start = time.perf_counter()
    trained = FUSION_RECIPES[recipe](model, datasets, image_model=image_model, text_model=text_model,
                                     fit=fit, epochs=epochs, learning_rate=learning_rate, **recipe_options)
    trained, extra = trained if isinstance(trained, tuple) else (trained, {})
    total = time.perf_counter() - start
    history = {}
    for phase_history, _ in phases:
        for key, values in phase_history.items():
            history.setdefault(key, []).extend(values)
    seconds = sum(s["train_seconds"] for _, s in phases)
    samples = sum(s["train_samples"] for _, s in phases)
    stats = {"train_seconds": total, "train_samples": samples, "train_samples_per_second": samples / total,
             "epochs": sum(len(h.get("loss", [])) for h, _ in phases), "recipe": recipe,
             "recipe_seconds": total - seconds, **extra}
    caches = [s["frozen_cache"] for _, s in phases if "frozen_cache" in s]
    if caches:  # phases whose frozen branches were computed once (mmkeras.frozen_features)
        stats["frozen_cache"] = {"phases": len(caches), "seconds": sum(c["seconds"] for c in caches),
                                 "bytes": max(c["bytes"] for c in caches), "tensors": caches[0]["tensors"]}
    return trained, history, stats


def recipe_option_names(recipe):
    """The options of registered recipe `recipe`: its keyword-only arguments with defaults."""
    parameters = inspect.signature(FUSION_RECIPES[recipe]).parameters.values()
    return [p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.default is not p.empty]


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
    _unfreeze_branches(model)
    fit(model, epochs, learning_rate / 10)
    return model


def _unfreeze_branches(model):
    for layer in model.layers:
        if layer.name.startswith(("image_", "text_")):
            # Frozen BatchNorm runs in inference mode: the statistics the branch learned stay.
            layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)


@register_fusion_recipe("experts")
def experts(model, datasets, *, image_model, text_model, fit, epochs, learning_rate):
    from mmkeras.models.experts import expert_weights, fit_expert_weights, with_unimodal_experts

    _require("experts", image_model=image_model, text_model=text_model)
    # The experts' heads read the fused model's branch features: those must stay the ones
    # the heads were trained on, so the text branch is frozen too (the image branch already
    # is, except after an input-stage fusion, whose image expert runs beside it).
    for prefix in FROZEN_FIT_RECIPES["experts"]:
        freeze_prefix(model, prefix)
    fit(model, epochs, learning_rate)
    combined = with_unimodal_experts(model, image_model, text_model)
    features, labels = training.split_arrays(datasets, "validation")
    fit_expert_weights(combined, features, labels)
    training.compile_model(combined)
    return combined, {"expert_weights": expert_weights(combined)}


@register_fusion_recipe("distill")
def distill(model, datasets, *, image_model, text_model, fit, epochs, learning_rate, distill_weight=1.0,
            branch_learning_rate_scale=0.1):
    """Uni-modal teacher. Why feature distillation rather than KL to the teachers'
    probabilities: it is what Du et al. distil, it needs no unimodal head on the fused
    model, and it keeps the whole branch vector that the fusion layer reads (not only
    its projection on the teacher's classes) near the trained unimodal model's, so the
    fused head cannot let the weaker branch's features decay while the stronger one
    carries the loss. The distance is over the teacher's mean square: weight 1 makes a
    10% relative drift cost 0.1 nats. Only the features matter, not the classes, so a
    teacher may be any trained model with the same branch (a pretrained image model); a
    modality without one is trained but not distilled."""
    from mmkeras.recipe_trainer import RecipeTrainer

    # A teacher's branch vector is read inside its graph: a test-time augmentation wrapper has none.
    teachers = {m: unwrap_tta(t) for m, t in (("image", image_model), ("text", text_model)) if t is not None}
    if not teachers:
        raise ValueError("Fusion recipe 'distill' needs a trained unimodal model its branches came from to distil: "
                         "image_model, text_model or both. Received neither.")
    _unfreeze_branches(model)
    trainer = RecipeTrainer(model, branch_learning_rate_scale=branch_learning_rate_scale,
                            distill_weight=distill_weight, teachers=teachers)
    history = fit(trainer, epochs, learning_rate)
    return model, {**trainer.options(), "distill_distance": _last_epoch(history, "{}_distill", teachers)}


@register_fusion_recipe("ogm_ge")
def ogm_ge(model, datasets, *, image_model, text_model, fit, epochs, learning_rate, alpha=0.5,
           gradient_noise=True, branch_learning_rate_scale=0.1):
    """OGM-GE. A modality's score is the fused model's summed probability of the true
    class with the other modality blanked: its contribution inside this model, whatever
    the fusion layer, the laziness the benchmark's blanked columns show. alpha: >= 0,
    the modulation strength (0: coefficients 1, no slowing); gradient_noise: the GE noise."""
    from mmkeras.recipe_trainer import RecipeTrainer

    _unfreeze_branches(model)
    trainer = RecipeTrainer(model, branch_learning_rate_scale=branch_learning_rate_scale, alpha=alpha,
                            gradient_noise=gradient_noise)
    history = fit(trainer, epochs, learning_rate)
    return model, {**trainer.options(),
                   "modulation": _last_epoch(history, "{}", ("image_coefficient", "text_coefficient", "score_ratio"))}


def _last_epoch(history, log_name, keys):
    """{key: the last epoch's mean of log `log_name.format(key)` over the training batches}:
    what the recipe applied."""
    return {key: float(history[log_name.format(key)][-1]) for key in keys}
