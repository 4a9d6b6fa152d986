"""What fusion layers already expose: cross-attention weights, GMU gates, the weighted
sum's modality weights.

The trained layer stays as it is: a probe copy of it, built from its config with the
layer's "also return" flag set and given the trained weights, is called on the same
tensors (and masks) as the trained layer, inside a probe model with the same inputs. Its
values are therefore exactly the trained model's.
"""

import keras
import numpy as np

from mmkeras.explain.contributions import _batches, _check_features
from mmkeras.explain.model_parts import fusion_layer
from mmkeras.fusion import CrossModalAttention, GatedMultimodalUnit, WeightedSumFusion
from mmkeras.training import select_inputs

# Layer class -> (the config flag that makes it also return its internals, the key).
PROBED = {CrossModalAttention: ("return_attention_scores", "attention"),
          GatedMultimodalUnit: ("return_gate", "gate")}


def _probe_model(model, layer, flag):
    """A model with `model`'s inputs returning the second output of a copy of `layer`
    built with `flag=True` and called as `layer` was."""
    probe = type(layer).from_config({**layer.get_config(), flag: True, "name": f"probe_{layer.name}"})
    node = layer._inbound_nodes[0]
    _, internals = probe(*node.arguments.args, **node.arguments.kwargs)
    probe.set_weights(layer.get_weights())
    return keras.Model(model.input, internals, name=f"{model.name}_{flag}")


def fusion_internals(model, features=None, *, batch_size=256):
    """The internals the model's fusion layer exposes, as numpy arrays.

    Returns {"fusion": the layer's name or None, ...} plus, by fusion:
    - cross_attention: "attention" (N, heads, T, h * w), the text tokens' attention over
      the image regions (rows of padded tokens are 0), "grid" (h, w) and "attention_map"
      (N, h, w), its mean over heads and real tokens (each token's weights sum to 1);
    - gmu: "gate" (N, units), z in h = z * h_image + (1 - z) * h_text, and
      "image_gate" (N,), its mean over units (the image's share of the mixture);
    - weighted_sum: "modality_weights" (2,), the [image, text] weights (fixed after
      training, so `features` is not needed).
    Other fusions (concat, tensor, bilinear, film, co_attention, early) and models without
    one (unimodal, ensembles) expose nothing: only "fusion" is returned; use
    `modality_contributions` for them.
    """
    layer = fusion_layer(model)
    result = {"fusion": layer.name if layer is not None else None}
    if isinstance(layer, WeightedSumFusion):
        result["modality_weights"] = np.asarray(layer.modality_weights, np.float32)
        return result
    kind = next((v for cls, v in PROBED.items() if isinstance(layer, cls)), None)
    if kind is None:
        return result
    if features is None:
        raise ValueError(f"The fusion '{layer.name}' exposes per-example values: pass `features`.")
    _check_features(features, batch_size)
    flag, key = kind
    probe = _probe_model(model, layer, flag)
    values = np.concatenate([np.asarray(probe.predict_on_batch(select_inputs(probe, batch)))
                             for batch in _batches(features, batch_size)])
    result[key] = values
    if key == "gate":
        result["image_gate"] = values.mean(axis=-1)
    else:
        grid = tuple(int(s) for s in layer._inbound_nodes[0].arguments.args[0][1].shape[1:3])
        tokens = np.maximum((np.asarray(features["text"]) != 0).sum(axis=1), 1)
        result["grid"] = grid
        result["attention_map"] = (values.sum(axis=(1, 2)) / (values.shape[1] * tokens)[:, None]).reshape(
            (len(values), *grid))
    return result
