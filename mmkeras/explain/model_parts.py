"""Finding the parts of an mmkeras model that explanations read, by the registered names.

Every branch names its layers `{prefix}_...` with prefix "image" or "text" (see
mmkeras/branches/base.py), so the parts are found by name, in nested models too
(ensemble members):

- the token embedding: the `Embedding` layer `text_embedding` of the text stem;
- the image branch's last feature map (its `ImageFeatures.feature_map`): the input of
  `image_pool` where that is a global pooling (vgg, resnet, resnet9, applications), the
  output of `image_pool` where it is simple_cnn's 2x2 max-pooling; in a model that never
  pools the map (an attention or FiLM fusion reads it directly, so the pooling is not in
  the graph), the 4-D input of the fusion layer;
- the fusion layer: the layer named `fusion_<name>`.
"""

import keras
import tensorflow as tf

from mmkeras.fusion import FusionLayer
from mmkeras.training import OUTPUT, select_inputs

TEXT_EMBEDDING = "text_embedding"
IMAGE_POOL = "image_pool"
GLOBAL_POOLING = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)


def walk_layers(model):
    """Every layer of `model`, the layers of nested models (ensemble members) included."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from walk_layers(layer)


def uses_input(model, name):
    """Whether any layer of `model` reads its input `name`.

    Unimodal models declare both inputs and ignore one (see `build_unimodal`): the one they
    ignore feeds no layer. A model without that input does not use it either.
    """
    inputs = model.input if isinstance(model.input, dict) else {model.input.name: model.input}
    if name not in inputs:
        return False
    tensor = inputs[name]
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        for node in layer._inbound_nodes:
            if any(t is tensor for t in node.input_tensors):
                return True
    return False


def text_embeddings(model):
    """The text stems' `Embedding` layers (one per member in an ensemble)."""
    return [layer for layer in walk_layers(model)
            if layer.name == TEXT_EMBEDDING and isinstance(layer, keras.layers.Embedding)]


def image_feature_map(model):
    """The symbolic (B, h, w, C) last feature map of the image branch of `model`.

    Raises a ValueError naming the reason where there is none: a text-only model, an
    ensemble (each member has its own map: explain the members one by one).
    """
    nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
    names = {layer.name for layer in model.layers}
    if IMAGE_POOL in names:
        pool = model.get_layer(IMAGE_POOL)
        return pool.input if isinstance(pool, GLOBAL_POOLING) else pool.output
    fusion = fusion_layer(model)
    if fusion is not None:
        maps = [t for t in keras.tree.flatten(fusion._inbound_nodes[0].arguments.args) if len(t.shape) == 4]
        if maps:
            return maps[0]
    if nested:
        raise ValueError(f"Model '{model.name}' nests the models {nested} (an ensemble): Grad-CAM needs one "
                         "image feature map. Explain each member, or use pixel_attributions.")
    raise ValueError(f"Model '{model.name}' has no image feature map (no layer '{IMAGE_POOL}', no fusion "
                     "reading a 4-D map): a text-only model, or a model not built by mmkeras. Use "
                     "pixel_attributions, which needs only the image input.")


def fusion_layer(model):
    """The fusion layer (`fusion_<name>`, a `FusionLayer`) of a fused model, or None."""
    found = [layer for layer in model.layers
             if layer.name.startswith("fusion_") and isinstance(layer, FusionLayer)]
    return found[0] if found else None


def call_probabilities(model, features):
    """Probabilities (float32) of the main head for a dict of tensors, inference mode.

    The model gets only the inputs it declares (`training.select_inputs`).
    """
    out = model(select_inputs(model, features), training=False)
    return tf.cast(out[OUTPUT] if isinstance(out, dict) else out, tf.float32)
