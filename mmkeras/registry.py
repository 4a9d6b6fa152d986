"""The model registry: every model, ensembles included, under one name space.

`register_model` records a keyword-only builder with what it builds: its family and,
where they apply, its branches, fusion or ensemble method. `create_model(name, **kwargs)`
is the one way in, `list_models(pattern)` the way to look, `model_info(name)` says what
a name is. Each builder checks its own keyword arguments.
"""

import fnmatch
import inspect

FAMILIES = ("image", "text", "fused", "ensemble")

_MODELS = {}  # name -> (builder, info)


def register_model(fn=None, *, name=None, family=None, image_branch=None, text_branch=None,
                   fusion=None, **details):
    """Register a model builder under `name` (default: the function's name).

    family: one of `FAMILIES`. image_branch, text_branch, fusion: the parts the model is
    built from (None where not used). details: more facts for `model_info`, e.g. an
    ensemble's `method`.
    """
    if family not in FAMILIES:
        raise ValueError(f"Unknown model family. Received family={family!r}; expected one of: "
                         f"{', '.join(FAMILIES)}.")

    def wrap(builder):
        key = name or builder.__name__
        if key in _MODELS:
            raise ValueError(f"A model named '{key}' is already registered.")
        info = dict(name=key, family=family, image_branch=image_branch, text_branch=text_branch,
                    fusion=fusion, **details)
        _MODELS[key] = (builder, info)
        return builder

    return wrap(fn) if fn is not None else wrap


def list_models(pattern="*"):
    """Sorted names of registered models matching the shell-style `pattern`."""
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))


def model_info(name):
    """What a registered model is: a new dict with "name", "family", "image_branch",
    "text_branch", "fusion" (None where not used) and any details it was registered with
    (ensembles: "method")."""
    return dict(_entry(name)[1])


def model_family(name):
    """'image', 'text', 'fused' or 'ensemble' for a registered model name."""
    return _entry(name)[1]["family"]


def _entry(name):
    if name not in _MODELS:
        raise ValueError(
            f"Unknown model '{name}'. Received name={name!r}; expected one of: "
            f"{', '.join(list_models())}. Use mmkeras.list_models(pattern) to search."
        )
    return _MODELS[name]


def create_model(name, **kwargs):
    """Build the registered model `name`; keyword arguments override its defaults."""
    builder = _entry(name)[0]
    params = inspect.signature(builder).parameters
    required = [p for p, v in params.items()
                if v.kind is inspect.Parameter.KEYWORD_ONLY and v.default is inspect.Parameter.empty]
    missing = [p for p in required if p not in kwargs]
    if missing:
        raise ValueError(f"Model '{name}' needs the argument(s) {missing}. Received {sorted(kwargs)}.")
    return builder(**kwargs)
