"""Ensemble members: loading, checking, renaming and freezing, and training them separately.

A member is any Keras model with dict inputs among {"image", "text"} and a probability
output (an mmkeras `{"label": ...}` dict, or one (batch, C) tensor). Inside an ensemble
each member is a frozen copy nested under a unique name, `member_<i>_<its name>`, so two
members from one builder (both called "seed_image") never clash, and the caller's own
model objects are left as they were (same name, still trainable).
"""

import os
import tempfile

import keras

from mmkeras import registry, training

INPUT_KEYS = ("image", "text")


def load_member(member):
    """A keras.Model as given, or loaded from a `.keras` path."""
    if isinstance(member, keras.Model):
        return member
    if isinstance(member, (str, os.PathLike)):
        path = os.fspath(member)
        if not path.endswith(".keras") or not os.path.isfile(path):
            raise ValueError(f"A member must be a keras.Model or the path of an existing .keras file. "
                             f"Received {path!r}.")
        return keras.models.load_model(path)
    raise ValueError(f"A member must be a keras.Model or a .keras path. Received {type(member).__name__}.")


def member_names(models):
    """The unique names members take inside an ensemble: `member_<i>_<model name>`."""
    return [f"member_{i}_{model.name}" for i, model in enumerate(models)]


def probabilities(outputs):
    """The main-head probabilities among a member's outputs."""
    return outputs[training.OUTPUT] if isinstance(outputs, dict) else outputs


def _describe(index, model):
    return f"member {index} '{model.name}'"


def _member_inputs(index, model):
    inputs = model.input
    if not isinstance(inputs, dict) or not inputs or set(inputs) - set(INPUT_KEYS):
        got = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
        raise ValueError(f"{_describe(index, model)} must take a dict of inputs with keys among "
                         f"{', '.join(INPUT_KEYS)}. Received {got}.")
    return inputs


def _num_classes(index, model):
    outputs = model.output
    if isinstance(outputs, dict) and training.OUTPUT not in outputs:
        raise ValueError(f"{_describe(index, model)} has no '{training.OUTPUT}' output. "
                         f"Received outputs {sorted(outputs)}.")
    probs = probabilities(outputs)
    if not hasattr(probs, "shape") or len(probs.shape) != 2 or probs.shape[-1] is None:
        raise ValueError(f"{_describe(index, model)} must output class probabilities of shape "
                         f"(batch, classes). Received {probs!r}.")
    return probs.shape[-1]


def _merge_shapes(a, b):
    """One shape from two compatible ones (None matches any size), else None."""
    if len(a) != len(b):
        return None
    merged = []
    for x, y in zip(a, b):
        if x is not None and y is not None and x != y:
            return None
        merged.append(x if x is not None else y)
    return tuple(merged)


def check_members(models):
    """Validate members against each other; returns (num_classes, {key: (shape, dtype)}).

    Class counts must agree, and every input key that several members declare must have
    one dtype and compatible shapes (None matches any size). An error names both members.
    """
    if len(models) < 2:
        raise ValueError(f"An ensemble needs at least 2 members. Received {len(models)}.")
    classes = [_num_classes(i, m) for i, m in enumerate(models)]
    for i, count in enumerate(classes):
        if count != classes[0]:
            raise ValueError(f"Members disagree on the number of classes: {_describe(0, models[0])} outputs "
                             f"{classes[0]} classes but {_describe(i, models[i])} outputs {count}.")
    specs = {}  # key -> (index, model, shape) of the first member declaring it, shape merged so far
    dtypes = {}
    for i, model in enumerate(models):
        for key, tensor in _member_inputs(i, model).items():
            shape = tuple(tensor.shape[1:])
            if key not in specs:
                specs[key], dtypes[key] = (i, model, shape), tensor.dtype
                continue
            j, other, seen = specs[key]
            merged = _merge_shapes(seen, shape)
            if merged is None or tensor.dtype != dtypes[key]:
                raise ValueError(
                    f"Members disagree on the '{key}' input: {_describe(j, other)} takes shape {seen} "
                    f"{dtypes[key]} but {_describe(i, model)} takes shape {shape} {tensor.dtype}. "
                    "Build every member for the same data (e.g. with datasets.model_kwargs()).")
            specs[key] = (j, other, merged)
    ordered = {key: (specs[key][2], dtypes[key]) for key in INPUT_KEYS if key in specs}
    return classes[0], ordered


def frozen_copy(model, name):
    """A non-trainable copy of `model` named `name`, with the same weights and state.

    The copy goes through a `.keras` file, Keras's own full-fidelity path: `set_weights`
    alone would miss state kept outside variables (an adapted `Normalization`'s mean and
    variance are refreshed only when loaded; lookup vocabularies are assets).
    """
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "member.keras")
        model.save(path)
        copy = keras.models.load_model(path, compile=False)
    copy.name = name
    copy.trainable = False
    return copy


def load_members(members):
    """Load (from `.keras` paths) and check a list of members; returns (models, num_classes, specs)."""
    if isinstance(members, (str, os.PathLike, keras.Model)) or not hasattr(members, "__iter__"):
        raise ValueError(f"`members` must be a list of models or .keras paths. Received "
                         f"{type(members).__name__}.")
    models = [load_member(m) for m in members]
    num_classes, specs = check_members(models)
    return models, num_classes, specs


def frozen_copies(models):
    """Frozen copies named `member_names(models)`, for nesting in one ensemble."""
    return [frozen_copy(m, name) for m, name in zip(models, member_names(models))]


def fit_members(members_or_names, datasets, epochs=5, **fit_kwargs):
    """Train each member separately on the same paired pipelines with `training.fit`.

    members_or_names: keras models, registered model names (built with
    `datasets.model_kwargs()`) or `.keras` paths, in any mix; one builder may appear
    twice. fit_kwargs go to `training.fit` (callbacks, verbose, class_weight="balanced", ...).
    Returns (models, records): the trained models in order, and a dict keyed by
    `member_names(models)` (the names they take inside an ensemble) with each member's
    own {"history": the Keras History's dict, "stats": training.fit's stats}.
    """
    if isinstance(members_or_names, (str, os.PathLike, keras.Model)) or not members_or_names:
        raise ValueError(f"`members_or_names` must be a non-empty list of models or names. "
                         f"Received {members_or_names!r}.")
    models = []
    for item in members_or_names:
        if isinstance(item, str) and not item.endswith(".keras"):
            # A registered name; an unknown one gets the registry's error, which lists them.
            models.append(registry.create_model(item, **datasets.model_kwargs()))
        else:
            models.append(load_member(item))
    repeated = [m.name for i, m in enumerate(models) if any(m is other for other in models[:i])]
    if repeated:
        raise ValueError(f"The same model object appears twice in `members_or_names`: {repeated}. "
                         "Pass separate models (or a registered name twice) to train them separately.")
    records = {}
    for name, model in zip(member_names(models), models):
        history, stats = training.fit(model, datasets, epochs=epochs, **fit_kwargs)
        records[name] = {"history": dict(history.history), "stats": stats}
    return models, records
