"""Planning a run: which rows, in what order, and how each one trains (a `RowPlan` each).

The plan is made before anything trains: unimodal rows first (fused rows warm-start from
them, ensembles combine them), text rows before image rows (the cheaper, and early
stopping usually ends them well before their planned epochs: under --time-budget the image
row, the long one, then gets the seconds they did not use), then fused rows, then
ensembles; a `recipe_<name>`
reference row for each selected seed model. Each row's epochs and batch size follow from
the data (schedule.plan_schedule) unless --epochs / --batch-size / --fused-epochs say.
"""

import dataclasses
import math
import os

import mmkeras
from mmkeras import speedrun
from mmkeras.bench import recipe
from mmkeras.bench.schedule import plan_schedule, preferred_batch
from mmkeras.bench.warm_starts import MODALITIES

FAMILY_ORDER = ("text", "image", "fused", "ensemble")
RECIPE_PREFIX = "recipe_"
# Fusion recipes that take the heads of both unimodal rows the branches came from.
NEEDS_BOTH_SOURCES = ("experts",)
# Ensembles combine this run's most accurate row of each modality.
ENSEMBLE_MEMBERS = MODALITIES


@dataclasses.dataclass(frozen=True)
class RowPlan:
    """How one row trains. `strategy` names its entry in strategies.STRATEGIES."""

    name: str  # the row's name in the results
    model: str  # the registered model it trains, reproduces (recipe) or combines into (ensemble)
    strategy: str  # "registered", "recipe" or "ensemble"
    family: str  # "image", "text", "fused" or "ensemble"
    batch_size: int = None  # None: nothing is trained in batches (ensembles)
    epochs: int = 0
    precision: str = "float32"  # dtype policy the model is built under
    augmentation: str = None  # image augmentation in the graph (None: none)
    warm_start: dict = None  # modality -> .keras path its branch starts from; None: takes none
    members: tuple = ()  # ensembles: the modalities whose best rows they combine
    saved_model: str = None  # where it saves its model for later rows and resumed runs (None: nowhere)
    branches: dict = dataclasses.field(default_factory=dict)  # modality -> branch it uses
    fusion_recipe: str = None  # a warm-started fused row: its mmkeras.fusion_recipes recipe
    early_stopping: bool = False  # stop on the validation split, restoring the best epoch's weights
    training: str = None  # the model's own training recipe (model_info "training", e.g. "speedrun")
    # The most epochs a time budget with room to spare may give it (None: `epochs`): a
    # speed-run schedule, which is a step target, not a run to convergence.
    max_epochs: int = None
    optimizer: str = None  # a speed-run row's ("sgd" or "muon", mmkeras.speedrun.recipe_for)


def select_rows(pattern):
    """Rows to run: registered models matching `pattern` (comma-separated wildcards), plus a
    seed-recipe reference row `recipe_<name>` for each selected seed model."""
    parts = [p.strip() for p in pattern.split(",")]
    names = sorted({n for p in parts for n in mmkeras.list_models(p)})
    if not names:
        raise ValueError(f"No registered model matches {pattern!r}; available: "
                         f"{', '.join(mmkeras.list_models())}.")
    names = sorted(names, key=lambda n: (FAMILY_ORDER.index(mmkeras.model_info(n)["family"]), n))
    return [RECIPE_PREFIX + n for n in names if n in recipe.SEED_MODELS] + names


def branches_of(name):
    """modality -> branch, for the branches registered model `name` uses."""
    info = mmkeras.model_info(name)
    return {m: info[f"{m}_branch"] for m in MODALITIES if info.get(f"{m}_branch")}


def saved_model_path(out, name):
    return os.path.join(out, "rows", f"{name}.keras")


def plan_rows(names, config, warm, *, n_train=None, image_shape=None, validation=True):
    """A RowPlan for each of `names` (in select_rows's order); `warm` (a WarmStarts) learns
    which unimodal rows will save a model, and gives each fused row its sources.

    n_train, image_shape: the training split's size and image shape, from which each row's
    schedule follows (not needed when --epochs and --batch-size fix every row);
    validation: whether the data has a validation split (early stopping watches it).
    """
    plans = []
    data = dict(n_train=n_train, image_size=None if image_shape is None else tuple(image_shape)[:2])
    for name in names:
        if name.startswith(RECIPE_PREFIX):
            plan = _recipe_plan(name, config)
        elif mmkeras.model_info(name)["family"] == "ensemble":
            plan = _ensemble_plan(name, plans)
        else:
            plan = _registered_plan(name, config, warm, data, validation)
        if plan.saved_model:
            for modality, branch in plan.branches.items():
                warm.add_row(modality, branch, plan.saved_model)
        plans.append(plan)
    return plans


def _registered_plan(name, config, warm, data, validation):
    info, branches = mmkeras.model_info(name), branches_of(name)
    family, training = info["family"], info.get("training")
    epochs = config.epochs
    warm_start = saved = fusion_recipe = None
    if family == "fused":  # its branches may start from trained ones
        warm_start = {m: p for m, b in branches.items() if (p := warm.source_for(m, b))}
        if warm_start:
            epochs = config.fused_epochs or config.epochs
            fusion_recipe = config.fusion_recipe
            if fusion_recipe in NEEDS_BOTH_SOURCES and not (
                    set(warm_start) == set(MODALITIES) and all(map(warm.is_row, warm_start.values()))):
                # The heads must come from this run's unimodal rows: a pretrained or user's
                # model may answer other classes.
                fusion_recipe = "frozen"
    else:  # unimodal: saved for the fused rows and ensembles that start from it
        saved = saved_model_path(config.out, name)
    preferred, optimizer, batch_size = preferred_batch(name), None, config.batch_size
    if training == "speedrun":  # its own optimizer and batch (mmkeras.speedrun.recipe_for)
        optimizer, preferred = speedrun.recipe_for(data["n_train"], data["image_size"])
        if optimizer == "muon":  # recipe_for fitted its batch to the set: not halved again
            batch_size = batch_size or preferred
    epochs, batch_size = plan_schedule(family, data["n_train"], data["image_size"], preferred=preferred,
                                       warm_start=bool(warm_start), epochs=epochs, batch_size=batch_size)
    max_epochs = None
    if training == "speedrun" and config.epochs is None:  # its own step target (mmkeras.speedrun)
        epochs = speedrun.planned_epochs(data["n_train"], batch_size, optimizer)
        max_epochs = speedrun.extended_epochs(epochs)
    augmentation = None
    if config.augment and "image" in branches:
        augmentation = "speedrun" if training == "speedrun" else "flip_translate"
    return RowPlan(name=name, model=name, strategy="registered", family=family,
                   batch_size=batch_size, epochs=epochs, early_stopping=validation,
                   precision=config.image_precision if family == "image" else "float32",
                   augmentation=augmentation, warm_start=warm_start, saved_model=saved, branches=branches,
                   fusion_recipe=fusion_recipe, training=training, max_epochs=max_epochs, optimizer=optimizer)


def _recipe_plan(name, config):
    model = name[len(RECIPE_PREFIX):]
    return RowPlan(name=name, model=model, strategy="recipe", family=mmkeras.model_info(model)["family"],
                   batch_size=recipe.RECIPE["batch_size"],
                   epochs=recipe.RECIPE["epochs"] if config.epochs is None else config.epochs)


def _ensemble_plan(name, earlier):
    saving = {m for p in earlier if p.saved_model for m in p.branches}
    if not set(ENSEMBLE_MEMBERS) <= saving:
        raise ValueError(f"Row {name!r} combines this run's best image-only and text-only rows: "
                         "select at least one of each (e.g. --models 'image_*,text_*,ensemble_*').")
    return RowPlan(name=name, model=name, strategy="ensemble", family="ensemble", members=ENSEMBLE_MEMBERS)


def describe(plan, n_train):
    """One line on what row `plan` trains and for how long, for the console."""
    if plan.strategy == "ensemble":
        return f"{plan.name}: combines this run's best {' and '.join(plan.members)} rows (nothing to train)"
    if plan.strategy == "recipe":
        what = f"the seed recipe's {plan.model} (the reference)"
    elif plan.warm_start:
        sources = ", ".join(f"{m} from {os.path.basename(p)}" for m, p in plan.warm_start.items())
        what = f"{plan.family} model, branches warm-started ({sources}), fusion recipe {plan.fusion_recipe}"
    else:
        what = f"{plan.family} model from scratch" + (f", {plan.training} recipe" if plan.training else "")
        what += f" ({plan.optimizer})" if plan.optimizer else ""
    steps = plan.epochs * math.ceil(n_train / plan.batch_size)
    stop = ", early stopping on the validation split" if plan.early_stopping else ""
    return f"{plan.name}: {what}, {plan.epochs} epochs at batch {plan.batch_size} (about {steps:,} steps{stop})"
