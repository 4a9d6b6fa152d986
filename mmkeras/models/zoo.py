"""The registered models: thin presets over `build_fused` / `build_unimodal`, sizes as data.

Every preset takes the same keywords (`num_classes`, `image_shape`, `vocab_size`,
`sequence_length`, `size`) plus per-model overrides (any argument of the composer).
"""

import inspect

from mmkeras import branches
from mmkeras.models.builders import build_fused, build_unimodal
from mmkeras.registry import register_model

SIZES = ("small", "base")

# Fusion settings per size; user overrides win (fusion_config=...).
FUSION_SIZES = {
    "concat": {"small": {}, "base": {"projection_dim": 256}},
    "weighted_sum": {"small": {"units": 128}, "base": {"units": 256}},
    "gmu": {"small": {"units": 128}, "base": {"units": 256}},
    "tensor": {"small": {"projection_dim": 16}, "base": {"projection_dim": 32}},
    "low_rank_tensor": {"small": {"units": 128, "rank": 4}, "base": {"units": 256, "rank": 8}},
    "bilinear": {"small": {"units": 128, "factor": 4}, "base": {"units": 256, "factor": 5}},
    "film": {"small": {}, "base": {}},
    "cross_attention": {"small": {"units": 64, "num_heads": 2}, "base": {"units": 128, "num_heads": 4}},
    "co_attention": {"small": {"units": 64, "num_heads": 2}, "base": {"units": 128, "num_heads": 4}},
    "early": {"small": {"channels": 4}, "base": {"channels": 8}},
}

# The seed recipe's branches and the stronger pair every fusion family also gets.
SEED = dict(image_branch="simple_cnn", text_branch="lstm")
STRONG = dict(image_branch="resnet9", text_branch="bilstm")

FUSED_PRESETS = {
    "seed_concat": dict(SEED, fusion="concat"),
    **{f"{f}_cnn_lstm": dict(SEED, fusion=f) for f in FUSION_SIZES if f != "concat"},
    **{f"{f}_resnet9_bilstm": dict(STRONG, fusion=f) for f in FUSION_SIZES},
    "gmu_resnet_transformer": dict(image_branch="resnet", text_branch="transformer", fusion="gmu"),
}

UNIMODAL_PRESETS = {
    "seed_image": dict(modality="image", branch="simple_cnn"),
    "seed_text": dict(modality="text", branch="lstm"),
    **{f"image_{b}": dict(modality="image", branch=b) for b in branches.IMAGE_BRANCHES},
    **{f"text_{b}": dict(modality="text", branch=b) for b in branches.TEXT_BRANCHES},
}

_FUSED_ARGS = set(inspect.signature(build_fused).parameters)
_UNIMODAL_ARGS = set(inspect.signature(build_unimodal).parameters)


def _check_size(name, size):
    if size not in SIZES:
        raise ValueError(f"Unknown size {size!r} for model '{name}'. Received size={size!r}; "
                         f"expected one of: {', '.join(SIZES)}.")


def _check_overrides(name, overrides, allowed):
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(f"Unknown argument(s) {unknown} for model '{name}'. Received "
                         f"{sorted(overrides)}; allowed: {', '.join(sorted(allowed))}.")


def _fused_builder(name, preset):
    def builder(*, num_classes, image_shape=(32, 32, 3), vocab_size, sequence_length,
                size="small", **overrides):
        _check_size(name, size)
        cfg = {**preset, **overrides}
        _check_overrides(name, overrides, _FUSED_ARGS - {"num_classes", "image_shape", "vocab_size",
                                                         "sequence_length"})
        fusion = cfg["fusion"]
        cfg["image_config"] = {**branches.IMAGE_DEFAULTS[cfg["image_branch"]][size], **cfg.get("image_config", {})}
        cfg["text_config"] = {**branches.TEXT_DEFAULTS[cfg["text_branch"]][size], **cfg.get("text_config", {})}
        cfg["fusion_config"] = {**FUSION_SIZES[fusion][size], **cfg.get("fusion_config", {})}
        return build_fused(num_classes=num_classes, image_shape=image_shape, vocab_size=vocab_size,
                           sequence_length=sequence_length, name=cfg.pop("name", name), **cfg)

    builder.__name__ = name
    builder.__doc__ = f"{preset['fusion']} fusion of a {preset['image_branch']} image branch and a {preset['text_branch']} text branch."
    return builder


def _unimodal_builder(name, preset):
    def builder(*, num_classes, image_shape=(32, 32, 3), vocab_size=None, sequence_length=None,
                size="small", **overrides):
        _check_size(name, size)
        _check_overrides(name, overrides, _UNIMODAL_ARGS - {"num_classes", "image_shape", "vocab_size",
                                                            "sequence_length", "modality"})
        cfg = {**preset, **overrides}
        defaults = branches.IMAGE_DEFAULTS if cfg["modality"] == "image" else branches.TEXT_DEFAULTS
        cfg["branch_config"] = {**defaults[cfg["branch"]][size], **cfg.get("branch_config", {})}
        return build_unimodal(num_classes=num_classes, image_shape=image_shape, vocab_size=vocab_size,
                              sequence_length=sequence_length, name=cfg.pop("name", name), **cfg)

    builder.__name__ = name
    builder.__doc__ = f"{preset['modality']}-only classifier on the {preset['branch']} branch."
    return builder


for _name, _preset in FUSED_PRESETS.items():
    register_model(_fused_builder(_name, _preset), name=_name, family="fused")
for _name, _preset in UNIMODAL_PRESETS.items():
    register_model(_unimodal_builder(_name, _preset), name=_name, family=_preset["modality"])
