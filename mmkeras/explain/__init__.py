"""Explain predictions: what each modality contributed, which words, which pixels.

- `modality_contributions(model, features)`: exact two-player Shapley values of the image
  and the text (four forward passes; contributions.py); `mean_modality_shares` sums them
  up over a test split.
- `token_attributions`, `pixel_attributions`: integrated gradients on the token
  embeddings and on the pixels; `grad_cam`: Grad-CAM on the image branch's last feature
  map (attributions.py).
- `fusion_internals`: cross-attention weights, GMU gates, weighted-sum weights
  (fusion_internals.py).

The export's `explain` signature serves the contributions and the token scores
(mmkeras/export/serving.py). docs/explain.md describes the methods and their costs.
"""

from mmkeras.explain.attributions import (DEFAULT_STEPS, PIXEL_COMPLETENESS_TOLERANCE,
                                          TOKEN_COMPLETENESS_TOLERANCE, grad_cam, pixel_attributions,
                                          token_attributions)
from mmkeras.explain.contributions import mean_modality_shares, modality_contributions
from mmkeras.explain.fusion_internals import fusion_internals

__all__ = ["DEFAULT_STEPS", "PIXEL_COMPLETENESS_TOLERANCE", "TOKEN_COMPLETENESS_TOLERANCE",
           "fusion_internals", "grad_cam", "mean_modality_shares", "modality_contributions",
           "pixel_attributions", "token_attributions"]
