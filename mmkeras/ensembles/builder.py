"""`build_ensemble`: separately trained models combined at the decision level, as one Keras model.

The ensemble is a functional model with the members' named inputs ({"image", "text"})
and one output {"label": probabilities}, like every mmkeras model, so `training.evaluate`,
`export.export_inference` and `.keras` saving work on it unchanged. Its graph, in three
parts: the inputs; each member as a frozen nested model named `member_<i>_<name>`; one
registered combiner layer `combine_<method>`.

Each method is also a registered model, `ensemble_<method>`:
`mmkeras.create_model("ensemble_product", members=[...], validation_data=None, **options)`.
"""

import inspect

import keras

from mmkeras.ensembles.combiners import COMBINERS, ENSEMBLE_METHODS
from mmkeras.ensembles.fitting import (fit_member_weights, fit_stacking, member_probabilities,
                                       validation_arrays)
from mmkeras.ensembles.members import frozen_copies, load_members, probabilities
from mmkeras.registry import list_models, model_family, register_model

# Methods that learn from a validation split.
FITTED_METHODS = ("weighted", "stacking")
# Step size of each fitted method's optimiser, unless `learning_rate` is given.
LEARNING_RATES = {"weighted": 0.1, "stacking": 0.05}
# Combiner arguments filled in by the builder, not by the user.
_DERIVED = ("self", "num_members", "num_classes", "kwargs")
PREFIX = "ensemble_"


def ensemble_names(pattern="*"):
    """The registered ensembles' names matching the shell-style `pattern`, sorted: the
    ensemble-family part of `mmkeras.list_models(pattern)`."""
    return [n for n in list_models(pattern) if model_family(n) == "ensemble"]


def _check_method(method):
    """The method for a method name or an `ensemble_<method>` name."""
    key = method[len(PREFIX):] if isinstance(method, str) and method.startswith(PREFIX) else method
    if key not in COMBINERS:
        raise ValueError(f"Unknown ensemble method {method!r}. Received method={method!r}; expected one of: "
                         f"{', '.join(ENSEMBLE_METHODS)} (or {', '.join(PREFIX + m for m in ENSEMBLE_METHODS)}).")
    return key


def combiner_options(method):
    """The keyword options the `method`'s combiner takes (e.g. vote: tie_break)."""
    params = inspect.signature(COMBINERS[method].__init__).parameters
    return [p for p in params if p not in _DERIVED]


def _check_options(method, options):
    allowed = combiner_options(method)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown} for ensemble method '{method}'. Received "
                         f"{sorted(options)}; allowed: {', '.join(allowed) or 'none'}.")


def _make_combiner(method, num_members, num_classes, options):
    args = dict(options)
    params = inspect.signature(COMBINERS[method].__init__).parameters
    if "num_members" in params:
        args["num_members"] = num_members
    if "num_classes" in params:
        args["num_classes"] = num_classes
    return COMBINERS[method](name=f"combine_{method}", dtype="float32", **args)


def build_ensemble(members, method, validation_data=None, *, name=None, steps=300, learning_rate=None,
                   **options):
    """One Keras model combining the class probabilities of separately trained members.

    members: at least 2 keras models or `.keras` paths (image-only, text-only or fused,
        any number per modality). They must agree on the class count and input specs.
        Each is copied, frozen and nested under a unique name; the objects passed in are
        not modified.
    method: one of ENSEMBLE_METHODS (or its `ensemble_<method>` name):
        "average": mean of probabilities;
        "weighted": weights fitted on the validation split by minimising the NLL;
        "vote": majority vote, ties broken by mean probability, as a distribution;
        "product": normalised product of experts, softmax of summed log-probabilities;
        "stacking": a logistic-regression meta-classifier fitted on the members'
        validation predictions.
    validation_data: a PairedDatasets (only its "validation" split is read) or a
        (features_dict, labels) tuple; required by "weighted" and "stacking", unused by
        the others. The test split is never read.
    name: the ensemble's name (default `ensemble_<method>`).
    steps, learning_rate: the fitted methods' optimisation (full-batch Adam).
    options: the combiner's own arguments (vote: tie_break; product: epsilon;
        stacking: epsilon, l2).
    """
    method = _check_method(method)
    _check_options(method, options)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be a positive int. Received steps={steps!r}.")
    if learning_rate is not None and (isinstance(learning_rate, bool) or not isinstance(
            learning_rate, (int, float)) or learning_rate <= 0):
        raise ValueError(f"`learning_rate` must be a positive number. "
                         f"Received learning_rate={learning_rate!r}.")
    validation = None
    if method in FITTED_METHODS:
        if validation_data is None:
            raise ValueError(f"Ensemble method '{method}' is fitted on a validation split: pass "
                             "validation_data=PairedDatasets or (features_dict, labels). "
                             "Received validation_data=None.")
        validation = validation_arrays(validation_data)
    models, num_classes, specs = load_members(members)
    combiner = _make_combiner(method, len(models), num_classes, options)  # checks option values
    copies = frozen_copies(models)

    inputs = {key: keras.Input(shape=shape, dtype=dtype, name=key) for key, (shape, dtype) in specs.items()}
    member_probs = [probabilities(m({key: inputs[key] for key in m.input})) for m in copies]
    outputs = {"label": combiner(member_probs)}
    ensemble = keras.Model(inputs, outputs, name=name or PREFIX + method)

    if validation is not None:
        features, labels = validation
        probs = member_probabilities(copies, features)
        rate = learning_rate if learning_rate is not None else LEARNING_RATES[method]
        if method == "weighted":
            combiner.set_member_weights(fit_member_weights(probs, labels, steps=steps, learning_rate=rate))
        else:
            fit_stacking(combiner, probs, labels, steps=steps, learning_rate=rate)
    return ensemble


def _ensemble_builder(method):
    def builder(*, members, validation_data=None, **options):
        return build_ensemble(members, method, validation_data, **options)

    builder.__name__ = PREFIX + method
    builder.__doc__ = f"The {method!r} ensemble of `members`: `build_ensemble(members, {method!r}, ...)`."
    return builder


for _method in ENSEMBLE_METHODS:
    register_model(_ensemble_builder(_method), name=PREFIX + _method, family="ensemble", method=_method)
