"""The model registry: one way in (`create_model`), one way to look (`list_models`).

Builders are small keyword-only functions decorated with `@register_model`; every one
accepts the common arguments in `COMMON_ARGUMENTS` so that any script can build any model.
"""

import fnmatch
import inspect

_MODELS = {}

# Every registered builder takes these keywords (some may ignore the ones they do not use).
COMMON_ARGUMENTS = ("num_classes", "image_shape", "vocab_size", "sequence_length", "size")


def register_model(fn=None, *, name=None, family=None):
    """Register a model builder under `name` (default: the function's name).

    `family` is one of "image", "text", "fused", "ensemble"; it defaults to the prefix
    of the name ("image_*", "text_*") or "fused".
    """

    def wrap(builder):
        key = name or builder.__name__
        if key in _MODELS:
            raise ValueError(f"A model named '{key}' is already registered.")
        params = inspect.signature(builder).parameters
        missing = [a for a in COMMON_ARGUMENTS if a not in params and not _takes_var_kwargs(params)]
        if missing:
            raise ValueError(
                f"Model builder '{key}' must accept the common arguments {COMMON_ARGUMENTS}; "
                f"missing {missing}."
            )
        builder.model_family = family or _family_from_name(key)
        builder.model_name = key
        _MODELS[key] = builder
        return builder

    return wrap(fn) if fn is not None else wrap


def _takes_var_kwargs(params):
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _family_from_name(name):
    for family in ("image", "text", "ensemble"):
        if name.startswith(family + "_"):
            return family
    return "fused"


def list_models(pattern="*"):
    """Sorted names of registered models matching the shell-style `pattern`."""
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))


def model_family(name):
    """'image', 'text', 'fused' or 'ensemble' for a registered model name."""
    return _get_builder(name).model_family


def _get_builder(name):
    if name not in _MODELS:
        raise ValueError(
            f"Unknown model '{name}'. Received name={name!r}; expected one of: "
            f"{', '.join(list_models())}. Use mmkeras.list_models(pattern) to search."
        )
    return _MODELS[name]


def create_model(name, **kwargs):
    """Build the registered model `name`; keyword arguments override its defaults."""
    builder = _get_builder(name)
    params = inspect.signature(builder).parameters
    if not _takes_var_kwargs(params):
        allowed = [p for p, v in params.items() if v.kind is not inspect.Parameter.VAR_POSITIONAL]
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown:
            raise ValueError(
                f"Unknown argument(s) {unknown} for model '{name}'. Received "
                f"{sorted(kwargs)}; expected a subset of: {', '.join(allowed)}."
            )
    required = [
        p
        for p, v in params.items()
        if v.kind is inspect.Parameter.KEYWORD_ONLY and v.default is inspect.Parameter.empty
    ]
    missing = [p for p in required if p not in kwargs]
    if missing:
        raise ValueError(
            f"Model '{name}' needs the argument(s) {missing}. Received {sorted(kwargs)}."
        )
    return builder(**kwargs)
