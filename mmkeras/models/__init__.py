"""Model composers and the registered presets."""

from mmkeras.models.builders import build_fused, build_unimodal
from mmkeras.models.experts import (ModalityPresence, ProductOfExperts, expert_weights, fit_expert_weights,
                                    with_unimodal_experts)
from mmkeras.models.heads import AuxiliaryHead, aux_loss_weights
from mmkeras.models.transfer import freeze_prefix, transfer_weights
from mmkeras.models.tta import unwrap_tta, with_flip_tta, with_tta
from mmkeras.models import zoo  # noqa: F401  (registers the presets)

__all__ = ["AuxiliaryHead", "aux_loss_weights", "build_fused", "build_unimodal", "freeze_prefix",
           "transfer_weights", "unwrap_tta", "with_flip_tta", "with_tta"]
