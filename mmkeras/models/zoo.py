"""The registered models: thin presets over `build_fused` / `build_unimodal`, sizes as data.

Every preset takes the same keywords (`num_classes`, `image_shape`, `vocab_size`,
`sequence_length`, `size`) plus per-model overrides (any argument of the composer), and
checks them. Every registered fusion gets two presets, one per branch pair below, as
soon as it is registered (a user's fusion too); its sizes come from its registration.
"""

import inspect

from mmkeras import branches
from mmkeras import fusion as fusion_layers
from mmkeras.models.builders import build_fused, build_unimodal
from mmkeras.registry import register_model

# The seed recipe's branches, and the stronger pair every fusion family also gets.
SEED_BRANCHES = dict(image_branch="simple_cnn", text_branch="lstm")
STRONG_BRANCHES = dict(image_branch="resnet9", text_branch="bilstm")
# The speed-run image branch (mmkeras.speedrun) with the strong text branch.
SPEEDRUN_BRANCHES = dict(image_branch="airbench", text_branch="bilstm")

UNIMODAL_PRESETS = {
    "seed_image": dict(modality="image", branch="simple_cnn"),
    "seed_text": dict(modality="text", branch="lstm"),
    **{f"image_{b}": dict(modality="image", branch=b) for b in branches.IMAGE_BRANCHES},
    **{f"text_{b}": dict(modality="text", branch=b) for b in branches.TEXT_BRANCHES},
}
# airbench's head is one linear layer over its scaled, pooled features.
UNIMODAL_PRESETS["image_airbench"]["head_units"] = ()
# Models whose own training recipe the benchmark uses (model_info(name)["training"]).
TRAINING_RECIPES = {"image_airbench": "speedrun"}

# The keywords every preset takes itself; the overrides may set any other composer argument.
_COMMON = {"num_classes", "image_shape", "vocab_size", "sequence_length"}
_FUSED_OVERRIDES = set(inspect.signature(build_fused).parameters) - _COMMON
_UNIMODAL_OVERRIDES = set(inspect.signature(build_unimodal).parameters) - _COMMON - {"modality"}


def _check_arguments(name, size, overrides, allowed):
    if size not in branches.SIZES:
        raise ValueError(f"Unknown size {size!r} for model '{name}'. Received size={size!r}; "
                         f"expected one of: {', '.join(branches.SIZES)}.")
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(f"Unknown argument(s) {unknown} for model '{name}'. Received "
                         f"{sorted(overrides)}; allowed: {', '.join(sorted(allowed))}.")


def _fused_builder(name, preset):
    def builder(*, num_classes, image_shape=(32, 32, 3), vocab_size, sequence_length,
                size="small", **overrides):
        _check_arguments(name, size, overrides, _FUSED_OVERRIDES)
        cfg = {**preset, **overrides}
        cfg["image_config"] = {**branches.IMAGE_DEFAULTS[cfg["image_branch"]][size], **cfg.get("image_config", {})}
        cfg["text_config"] = {**branches.TEXT_DEFAULTS[cfg["text_branch"]][size], **cfg.get("text_config", {})}
        sizes = fusion_layers.fusion_info(cfg["fusion"]).sizes
        cfg["fusion_config"] = {**sizes[size], **cfg.get("fusion_config", {})}
        return build_fused(num_classes=num_classes, image_shape=image_shape, vocab_size=vocab_size,
                           sequence_length=sequence_length, name=cfg.pop("name", name), **cfg)

    builder.__name__ = name
    builder.__doc__ = f"{preset['fusion']} fusion of a {preset['image_branch']} image branch and a {preset['text_branch']} text branch."
    return builder


def _unimodal_builder(name, preset):
    def builder(*, num_classes, image_shape=(32, 32, 3), vocab_size=None, sequence_length=None,
                size="small", **overrides):
        _check_arguments(name, size, overrides, _UNIMODAL_OVERRIDES)
        cfg = {**preset, **overrides}
        defaults = branches.IMAGE_DEFAULTS if cfg["modality"] == "image" else branches.TEXT_DEFAULTS
        cfg["branch_config"] = {**defaults[cfg["branch"]][size], **cfg.get("branch_config", {})}
        return build_unimodal(num_classes=num_classes, image_shape=image_shape, vocab_size=vocab_size,
                              sequence_length=sequence_length, name=cfg.pop("name", name), **cfg)

    builder.__name__ = name
    builder.__doc__ = f"{preset['modality']}-only classifier on the {preset['branch']} branch."
    return builder


def _register_fused(name, preset):
    register_model(_fused_builder(name, preset), name=name, family="fused", **preset)


def _register_fusion_presets(spec):
    """A fusion's three presets: with the seed, the strong and the speed-run branches."""
    seed_name = spec.seed_preset or f"{spec.name}_cnn_lstm"
    _register_fused(seed_name, dict(SEED_BRANCHES, fusion=spec.name))
    _register_fused(f"{spec.name}_resnet9_bilstm", dict(STRONG_BRANCHES, fusion=spec.name))
    _register_fused(f"{spec.name}_airbench_bilstm", dict(SPEEDRUN_BRANCHES, fusion=spec.name))


_register_fused("gmu_resnet_transformer", dict(image_branch="resnet", text_branch="transformer", fusion="gmu"))
fusion_layers.subscribe(_register_fusion_presets)
for _name, _preset in UNIMODAL_PRESETS.items():
    register_model(_unimodal_builder(_name, _preset), name=_name, family=_preset["modality"],
                   training=TRAINING_RECIPES.get(_name),
                   **{f"{_preset['modality']}_branch": _preset["branch"]})
