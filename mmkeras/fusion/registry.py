"""The fusion registry: `@register_fusion` on a layer class is all a new fusion needs.

    @register_fusion("gated_sum", inputs="vectors",
                     sizes={"small": {"units": 128}, "base": {"units": 256}})
    class GatedSum(FusionLayer):
        ...

Registering a fusion (1) registers the class with Keras serialization (package
"mmkeras"), so a `.keras` file holding it loads without `custom_objects` once the class
is imported; (2) records a `FusionSpec`, read back with `fusion_info(name)`; (3) tells
the subscribers, the model zoo among them, which gives every fusion its presets.
"""

import dataclasses
import fnmatch
import types

import keras

from mmkeras.branches import SIZES
from mmkeras.fusion.base import FusionLayer

PACKAGE = "mmkeras"

# What a fusion is called on, and the rank of each of its two inputs:
# "vectors": [image_vector (B, Di), text_vector (B, Dt)]
# "map_vector": [image_map (B, H, W, C), text_vector (B, Dt)]
# "sequence_map": [text_sequence (B, T, D), image_map (B, H, W, C)], text mask honoured
INPUT_RANKS = {"vectors": (2, 2), "map_vector": (4, 2), "sequence_map": (3, 4)}

# Where the fusion sits: "features" merges the two branches' outputs; "input" merges the
# text into the pixels, before the image branch (its call is [pixels, text_vector]).
STAGES = ("features", "input")


@dataclasses.dataclass(frozen=True)
class FusionSpec:
    """A registered fusion.

    name: the short name (`get_fusion(name)`, preset names).
    cls: the layer class, called on a list of two inputs.
    inputs: which features it takes, a key of `INPUT_RANKS`.
    sizes: constructor arguments per preset size ("small", "base").
    stage: "features" or "input" (see `STAGES`).
    example: small constructor arguments, for tests and examples.
    seed_preset: the name of its preset with the seed branches (None: `<name>_cnn_lstm`).
    """

    name: str
    cls: type
    inputs: str
    sizes: types.MappingProxyType
    stage: str
    example: types.MappingProxyType
    seed_preset: str = None


_SPECS = {}
_SUBSCRIBERS = []


def register_fusion(name, *, inputs, sizes, stage="features", example=None, seed_preset=None):
    """Class decorator: registers a fusion layer under `name`.

    inputs: "vectors", "map_vector" or "sequence_map" (see `INPUT_RANKS`).
    sizes: {"small": {...}, "base": {...}}, constructor arguments of each preset size.
    stage: "features" (default), or "input" for a fusion of the text into the pixels,
        before the image branch; such a fusion takes "map_vector" inputs.
    example: small constructor arguments for tests (default: `sizes["small"]`).
    seed_preset: name of the preset with the seed branches (default `<name>_cnn_lstm`).
    """
    _check_registration(name, inputs, sizes, stage)

    def wrap(cls):
        _check_class(name, cls, inputs)
        keras.saving.register_keras_serializable(package=PACKAGE)(cls)
        spec = FusionSpec(
            name=name,
            cls=cls,
            inputs=inputs,
            sizes=types.MappingProxyType({s: dict(sizes[s]) for s in SIZES}),
            stage=stage,
            example=types.MappingProxyType(dict(sizes["small"] if example is None else example)),
            seed_preset=seed_preset,
        )
        _SPECS[name] = spec
        for callback in _SUBSCRIBERS:
            callback(spec)
        return cls

    return wrap


def _check_registration(name, inputs, sizes, stage):
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"A fusion name must be an identifier-like string. Received name={name!r}.")
    if name in _SPECS:
        raise ValueError(f"A fusion named '{name}' is already registered "
                         f"({_SPECS[name].cls.__name__}). Received name={name!r}.")
    if inputs not in INPUT_RANKS:
        raise ValueError(f"Unknown fusion inputs for '{name}'. Received inputs={inputs!r}; "
                         f"expected one of: {', '.join(INPUT_RANKS)}.")
    if stage not in STAGES:
        raise ValueError(f"Unknown fusion stage for '{name}'. Received stage={stage!r}; "
                         f"expected one of: {', '.join(STAGES)}.")
    if stage == "input" and inputs != "map_vector":
        raise ValueError(f"An input-stage fusion is called on [pixels, text_vector]: it takes "
                         f"inputs='map_vector'. Received inputs={inputs!r} for '{name}'.")
    if not isinstance(sizes, dict) or sorted(sizes) != sorted(SIZES) or not all(
            isinstance(v, dict) for v in sizes.values()):
        raise ValueError(f"Fusion '{name}' needs `sizes` with a dict of constructor arguments for "
                         f"each of {SIZES}. Received sizes={sizes!r}.")


def _check_class(name, cls, inputs):
    if not (isinstance(cls, type) and issubclass(cls, keras.layers.Layer)):
        raise ValueError(f"@register_fusion('{name}') decorates a keras.layers.Layer subclass. "
                         f"Received {cls!r}.")
    registered = keras.saving.get_registered_object(f"{PACKAGE}>{cls.__name__}")
    if registered is not None and registered is not cls:
        raise ValueError(f"Another class is registered with Keras as '{PACKAGE}>{cls.__name__}' "
                         f"({registered.__module__}): rename fusion class {cls.__qualname__}.")
    if issubclass(cls, FusionLayer):
        ranks = tuple(len(axes) for _, axes in cls.input_layout)
        if ranks != INPUT_RANKS[inputs]:
            raise ValueError(f"Fusion '{name}' declares inputs={inputs!r}, inputs of ranks "
                             f"{INPUT_RANKS[inputs]}, but {cls.__name__}.input_layout has ranks "
                             f"{ranks}: {cls.input_layout}.")


def subscribe(callback):
    """Calls `callback(spec)` for every fusion registered so far, then for each new one.

    The model zoo subscribes at import time to register each fusion's presets.
    """
    _SUBSCRIBERS.append(callback)
    for spec in list(_SPECS.values()):
        callback(spec)


def list_fusions(pattern="*"):
    """Sorted names of the registered fusions matching the shell-style `pattern`."""
    return sorted(n for n in _SPECS if fnmatch.fnmatchcase(n, pattern))


def fusion_info(name):
    """The `FusionSpec` of a registered fusion; an unknown name is an error listing them."""
    if not isinstance(name, str) or name not in _SPECS:
        raise ValueError(f"Unknown fusion {name!r}. Received fusion={name!r}; expected one of: "
                         f"{', '.join(list_fusions())}.")
    return _SPECS[name]


def get_fusion(fusion, /, **kwargs):
    """A new fusion layer: the class registered as `fusion`, called with `kwargs`.

    `fusion` is positional-only so that `name=` reaches the layer, e.g.
    `get_fusion("gmu", units=64, name="fusion")`.
    """
    return fusion_info(fusion).cls(**kwargs)
