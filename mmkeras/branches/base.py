"""Branch registries, feature containers and the two entry points.

A *branch* is a function that adds named layers to a Keras functional graph and returns
features. Branches are registered by name with their default sizes (data, not code);
`image_branch(name, image, ...)` and `text_branch(name, token_ids, ...)` are the one
way in: they validate the name and options, merge `defaults[size]` with the caller's
overrides and call the builder.

Every layer a branch adds is named `f"{prefix}_..."` deterministically, so two calls
with the same arguments give the same layer names and weights can be moved between
models (an image-only model and a fused model, say) by matching names.
"""

import inspect
import re
from typing import NamedTuple

import keras

from mmkeras.branches.text_layers import TokenPaddingMask
from mmkeras.branches.text_layers import NonEmptyTokens


class ImageFeatures(NamedTuple):
    """What an image branch returns.

    vector: (batch, D) pooled image features.
    feature_map: (batch, h, w, C) spatial features (for attention or FiLM-style fusion).
    """

    vector: keras.KerasTensor
    feature_map: keras.KerasTensor


class TextFeatures(NamedTuple):
    """What a text branch returns.

    vector: (batch, D) sentence features; padding never changes it.
    sequence: (batch, T, D') per-token features, zero at padded steps.
    mask: (batch, T) bool, True at real tokens (after `NonEmptyTokens`, so every row
        has at least one True).
    """

    vector: keras.KerasTensor
    sequence: keras.KerasTensor
    mask: keras.KerasTensor


IMAGE_BRANCHES = {}
TEXT_BRANCHES = {}
IMAGE_DEFAULTS = {}
TEXT_DEFAULTS = {}

SIZES = ("small", "base")

# Keyword arguments that `image_branch` / `text_branch` pass themselves; they are not
# options a caller may set through `**config`.
_IMAGE_RESERVED = ("prefix",)
_TEXT_RESERVED = ("prefix", "vocab_size", "sequence_length")


def _register(registry, defaults_registry, reserved, modality, name, defaults):
    def wrap(builder):
        if name in registry:
            raise ValueError(f"A {modality} branch named '{name}' is already registered.")
        missing_sizes = [s for s in SIZES if s not in defaults]
        if missing_sizes:
            raise ValueError(
                f"{modality.capitalize()} branch '{name}' needs default sizes for {SIZES}; "
                f"missing {missing_sizes}."
            )
        options = _options_of(builder, reserved)
        for size, values in defaults.items():
            if sorted(values) != sorted(options):
                raise ValueError(
                    f"Defaults of {modality} branch '{name}' (size={size!r}) must set exactly "
                    f"the builder's options {sorted(options)}; received {sorted(values)}."
                )
        registry[name] = builder
        defaults_registry[name] = defaults
        return builder

    return wrap


def register_image_branch(name, *, defaults):
    """Register an image branch builder `fn(image, *, prefix, **options)`.

    `defaults` maps each size in `SIZES` to a dict that sets every option.
    """
    return _register(IMAGE_BRANCHES, IMAGE_DEFAULTS, _IMAGE_RESERVED, "image", name, defaults)


def register_text_branch(name, *, defaults):
    """Register a text branch builder
    `fn(token_ids, *, vocab_size, sequence_length, prefix, **options)`."""
    return _register(TEXT_BRANCHES, TEXT_DEFAULTS, _TEXT_RESERVED, "text", name, defaults)


def _options_of(builder, reserved):
    params = inspect.signature(builder).parameters
    return [
        p
        for p, v in params.items()
        if v.kind is inspect.Parameter.KEYWORD_ONLY and p not in reserved
    ]


def branch_options(modality, name):
    """The option names a branch accepts, e.g. `branch_options("image", "resnet")`."""
    registry, reserved = _registry(modality)
    return _options_of(_get_builder(registry, modality, name), reserved)


def _registry(modality):
    if modality == "image":
        return IMAGE_BRANCHES, _IMAGE_RESERVED
    if modality == "text":
        return TEXT_BRANCHES, _TEXT_RESERVED
    raise ValueError(f"Unknown branch modality. Received modality={modality!r}; expected 'image' or 'text'.")


def _get_builder(registry, modality, name):
    if name not in registry:
        raise ValueError(
            f"Unknown {modality} branch {name!r}. Received name={name!r}; expected one of: "
            f"{', '.join(registry)}"
        )
    return registry[name]


def _resolve_config(modality, name, size, config):
    """`defaults[size]` overridden by `config`, after checking both."""
    registry, reserved = _registry(modality)
    builder = _get_builder(registry, modality, name)
    options = _options_of(builder, reserved)
    unknown = sorted(set(config) - set(options))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for {modality} branch '{name}'. Received "
            f"{sorted(config)}; allowed: {', '.join(options)}"
        )
    defaults = (IMAGE_DEFAULTS if modality == "image" else TEXT_DEFAULTS)[name]
    if size not in defaults:
        raise ValueError(
            f"Unknown size for {modality} branch '{name}'. Received size={size!r}; "
            f"expected one of: {', '.join(defaults)}"
        )
    return builder, {**defaults[size], **config}


def _check_prefix(prefix):
    if not isinstance(prefix, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", prefix):
        raise ValueError(
            "`prefix` must be a non-empty identifier-like string (letters, digits, "
            f"underscores, starting with a letter). Received prefix={prefix!r}"
        )


def image_branch(name, image, *, prefix="image", rescale=True, size="small", **config):
    """Add image branch `name` to the graph of `image` and return `ImageFeatures`.

    Args:
        name: one of `IMAGE_BRANCHES`.
        image: symbolic (batch, H, W, C) pixels, uint8 or float in [0, 255]; H and W may
            be None where the branch allows it.
        prefix: every layer added is named `f"{prefix}_..."`.
        rescale: cast and rescale the pixels to [0, 1] first (a `Rescaling` layer named
            `f"{prefix}_rescale"`). Pass False when `image` already holds floats in
            [0, 1] (early fusion passes rescaled pixels with extra channels).
        size: which row of `IMAGE_DEFAULTS[name]` to start from ("small" or "base").
        **config: options of the branch, overriding the defaults.
    """
    builder, options = _resolve_config("image", name, size, config)
    _check_prefix(prefix)
    if len(image.shape) != 4 or image.shape[-1] is None:
        raise ValueError(
            "`image` must be a (batch, height, width, channels) tensor with a known "
            f"number of channels. Received image.shape={image.shape}"
        )
    if rescale:
        image = keras.layers.Rescaling(1.0 / 255.0, name=f"{prefix}_rescale")(image)
    elif not keras.backend.is_float_dtype(image.dtype):
        raise ValueError(
            "With rescale=False the image must already hold floats in [0, 1]. "
            f"Received image.dtype={image.dtype!r}; pass rescale=True for raw pixels."
        )
    return builder(image, prefix=prefix, **options)


def text_branch(
    name, token_ids, *, vocab_size, sequence_length, prefix="text", size="small", **config
):
    """Add text branch `name` to the graph of `token_ids` and return `TextFeatures`.

    Args:
        name: one of `TEXT_BRANCHES`.
        token_ids: symbolic int (batch, T) token ids, right-padded with 0 (id 1 is the
            out-of-vocabulary token). T is `sequence_length` or None (any length up to
            `sequence_length`).
        vocab_size: number of token ids, padding and OOV included.
        sequence_length: the longest sequence the branch must handle (sizes the
            transformer's position embedding).
        prefix: every layer added is named `f"{prefix}_..."`.
        size: which row of `TEXT_DEFAULTS[name]` to start from ("small" or "base").
        **config: options of the branch, overriding the defaults.
    """
    builder, options = _resolve_config("text", name, size, config)
    _check_prefix(prefix)
    for arg, value in (("vocab_size", vocab_size), ("sequence_length", sequence_length)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{arg}` must be a positive int. Received {arg}={value!r}")
    if len(token_ids.shape) != 2:
        raise ValueError(
            f"`token_ids` must be a (batch, sequence_length) tensor. Received "
            f"token_ids.shape={token_ids.shape}"
        )
    length = token_ids.shape[1]
    if length is not None and length > sequence_length:
        raise ValueError(
            f"`token_ids` are longer than sequence_length={sequence_length}. Received "
            f"token_ids.shape={token_ids.shape}"
        )
    if keras.backend.is_float_dtype(token_ids.dtype):
        raise ValueError(
            f"`token_ids` must be integer ids. Received token_ids.dtype={token_ids.dtype!r}"
        )
    return builder(
        token_ids,
        vocab_size=vocab_size,
        sequence_length=sequence_length,
        prefix=prefix,
        **options,
    )


def embed_tokens(token_ids, *, vocab_size, embed_dim, prefix):
    """The stem every text branch starts with.

    `NonEmptyTokens` (an empty caption reads as one [UNK] token) -> explicit bool mask
    (`token_ids != 0`) -> `Embedding(mask_zero=True)`. Returns `(embedded, mask)`; the
    embeddings also carry the same mask as their Keras mask.
    """
    token_ids = NonEmptyTokens(name=f"{prefix}_nonempty")(token_ids)
    mask = TokenPaddingMask(name=f"{prefix}_mask")(token_ids)
    embedded = keras.layers.Embedding(
        vocab_size, embed_dim, mask_zero=True, name=f"{prefix}_embedding"
    )(token_ids)
    return embedded, mask
