"""Attention between text tokens and image regions: one-way and two-way (co-attention).

Both take `[text (B, T, D), image_map (B, H, W, C)]`; the map is read as `H * W`
regions. Keras passes the text mask (e.g. from `Embedding(mask_zero=True)`) through
`mask=`; padded tokens are never attended to and never pooled, so they cannot change
the output. An image mask `(B, H, W)`, if one is attached, is honoured the same way.
Regions carry no position encoding: attention sees them as an unordered set.
"""

import keras
from keras import ops

from mmkeras.fusion.base import FusionLayer, check_bool, check_positive_int, split_masks
from mmkeras.fusion.registry import register_fusion

# Sizes shared by both attention fusions.
ATTENTION_SIZES = {"small": {"units": 64, "num_heads": 2}, "base": {"units": 128, "num_heads": 4}}
ATTENTION_EXAMPLE = {"units": 8, "num_heads": 2}


def _check_heads(units, num_heads):
    units = check_positive_int("units", units)
    num_heads = check_positive_int("num_heads", num_heads)
    if units % num_heads:
        raise ValueError(
            "`units` must be divisible by `num_heads`. "
            f"Received units={units}, num_heads={num_heads}"
        )
    return units, num_heads


def _flatten_regions(image_map):
    """`(B, H, W, C)` -> `(B, H * W, C)`; H and W may be dynamic."""
    return ops.reshape(image_map, (ops.shape(image_map)[0], -1, image_map.shape[-1]))


def _flatten_region_mask(image_mask):
    if image_mask is None:
        return None
    return ops.reshape(image_mask, (ops.shape(image_mask)[0], -1))


def _attention_mask(query, key, query_mask, key_mask):
    """Boolean `(B, Tq, Tk)` mask from per-position masks, or None if neither is set."""
    if query_mask is None and key_mask is None:
        return None
    if query_mask is None:
        query_mask = ops.ones_like(query[..., 0], dtype="bool")
    if key_mask is None:
        key_mask = ops.ones_like(key[..., 0], dtype="bool")
    query_mask = ops.cast(query_mask, "bool")
    key_mask = ops.cast(key_mask, "bool")
    return ops.logical_and(query_mask[:, :, None], key_mask[:, None, :])


def masked_mean(x, mask):
    """Mean of `(B, T, D)` over the positions where `mask (B, T)` is True (all if None).

    Rows with no valid position give zeros. `where`, not a product, so that even
    non-finite values at padded positions cannot leak in.
    """
    if mask is None:
        return ops.mean(x, axis=1)
    mask = ops.cast(mask, "bool")[:, :, None]
    total = ops.sum(ops.where(mask, x, ops.zeros_like(x)), axis=1)
    count = ops.sum(ops.cast(mask, x.dtype), axis=1)
    return total / ops.maximum(count, ops.ones_like(count))


def _attention_layer(units, num_heads, name, dtype):
    return keras.layers.MultiHeadAttention(
        num_heads=num_heads, key_dim=units // num_heads, name=name, dtype=dtype
    )


class _TextImageAttention(FusionLayer):
    """Shared parts: text and regions projected to `units`, then attention blocks."""

    input_layout = (
        ("text", ("batch", "tokens", "features")),
        ("image_map", ("batch", "height", "width", "channels")),
    )

    def __init__(self, units, num_heads=4, **kwargs):
        units, num_heads = _check_heads(units, num_heads)
        super().__init__(**kwargs)
        self.units = units
        self.num_heads = num_heads
        # Projecting first gives both modalities the width the residuals need, and
        # gives attention fresh tensors, so the caller's tensors keep their Keras masks
        # (MultiHeadAttention clears the mask attached to its inputs).
        self.text_projection, self.image_projection = self.projections(
            units, names=("text_projection", "image_projection")
        )

    def _build_projections(self, input_shape):
        text_shape, map_shape = self.split_input_shapes(input_shape)
        self.text_projection.build(text_shape)
        self.image_projection.build((map_shape[0], None, map_shape[-1]))
        text_units = (text_shape[0], text_shape[1], self.units)
        region_units = (map_shape[0], _num_regions(map_shape), self.units)
        return text_units, region_units

    def _project(self, inputs, mask):
        text, image_map = inputs
        text_mask, image_mask = split_masks(mask)
        text = self.text_projection(text)
        regions = self.image_projection(_flatten_regions(image_map))
        return text, regions, text_mask, _flatten_region_mask(image_mask)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "num_heads": self.num_heads}


def _num_regions(map_shape):
    height, width = map_shape[1], map_shape[2]
    return None if height is None or width is None else height * width


@register_fusion("cross_attention", inputs="sequence_map", sizes=ATTENTION_SIZES,
                 example=ATTENTION_EXAMPLE)
class CrossModalAttention(_TextImageAttention):
    """Text tokens attend over image regions; the result is pooled over valid tokens.

    Per token: `LayerNorm(t + MultiHeadAttention(query=t, key=value=regions))`, with `t`
    the projected token; the masked mean over valid tokens gives one vector. The
    residual keeps the text itself in the fused vector, not only what it points at.

    Args:
        units: width of the projections, the attention output and the result; must be
            divisible by `num_heads`.
        num_heads: number of attention heads.
        return_attention_scores: if True, also return the attention weights, shape
            `(B, num_heads, T, H * W)`; reshape the last axis to `(H, W)` to draw them
            over the image. Rows of padded tokens are all zeros.

    Call: `[text (B, T, D), image_map (B, H, W, C)]`, `mask=[text_mask (B, T), None]`
    -> `(B, units)`, or `(pooled, scores)`.
    """

    def __init__(self, units, num_heads=4, return_attention_scores=False, **kwargs):
        return_attention_scores = check_bool("return_attention_scores", return_attention_scores)
        super().__init__(units, num_heads, **kwargs)
        self.return_attention_scores = return_attention_scores
        self.attention = _attention_layer(units, num_heads, "attention", self.dtype_policy)
        self.norm = keras.layers.LayerNormalization(name="norm", dtype=self.dtype_policy)

    def build(self, input_shape):
        text_units, region_units = self._build_projections(input_shape)
        self.attention.build(text_units, region_units)
        self.norm.build(text_units)

    def call(self, inputs, mask=None, training=None):
        text, regions, text_mask, region_mask = self._project(inputs, mask)
        attention_mask = _attention_mask(text, regions, text_mask, region_mask)
        attended, scores = self.attention(
            text,
            regions,
            attention_mask=attention_mask,
            return_attention_scores=True,
            training=training,
        )
        pooled = masked_mean(self.norm(text + attended), text_mask)
        if self.return_attention_scores:
            return pooled, scores
        return pooled

    def compute_output_shape(self, input_shape):
        text_shape, map_shape = self.split_input_shapes(input_shape)
        pooled = (text_shape[0], self.units)
        if not self.return_attention_scores:
            return pooled
        scores = (text_shape[0], self.num_heads, text_shape[1], _num_regions(map_shape))
        return pooled, scores

    def get_config(self):
        return {**super().get_config(), "return_attention_scores": self.return_attention_scores}


@register_fusion("co_attention", inputs="sequence_map", sizes=ATTENTION_SIZES,
                 example=ATTENTION_EXAMPLE)
class CoAttention(_TextImageAttention):
    """Two-way attention: tokens attend over regions and regions attend over tokens.

    Each side is `LayerNorm(x + MultiHeadAttention(query=x, key=value=other))`; padded
    tokens are masked out as keys. The text side is averaged over valid tokens, the
    image side over all regions, and the two are concatenated.

    Args:
        units: width of each side; must be divisible by `num_heads`.
        num_heads: number of attention heads in each direction.

    Call: `[text (B, T, D), image_map (B, H, W, C)]`, `mask=[text_mask (B, T), None]`
    -> `(B, 2 * units)`: `[pooled text side, pooled image side]`.
    """

    def __init__(self, units, num_heads=4, **kwargs):
        super().__init__(units, num_heads, **kwargs)
        self.text_to_image = _attention_layer(units, num_heads, "text_to_image", self.dtype_policy)
        self.image_to_text = _attention_layer(units, num_heads, "image_to_text", self.dtype_policy)
        self.text_norm = keras.layers.LayerNormalization(name="text_norm", dtype=self.dtype_policy)
        self.image_norm = keras.layers.LayerNormalization(
            name="image_norm", dtype=self.dtype_policy
        )

    def build(self, input_shape):
        text_units, region_units = self._build_projections(input_shape)
        self.text_to_image.build(text_units, region_units)
        self.image_to_text.build(region_units, text_units)
        self.text_norm.build(text_units)
        self.image_norm.build(region_units)

    def call(self, inputs, mask=None, training=None):
        text, regions, text_mask, region_mask = self._project(inputs, mask)
        text_side = self.text_to_image(
            text,
            regions,
            attention_mask=_attention_mask(text, regions, text_mask, region_mask),
            training=training,
        )
        image_side = self.image_to_text(
            regions,
            text,
            attention_mask=_attention_mask(regions, text, region_mask, text_mask),
            training=training,
        )
        text_side = masked_mean(self.text_norm(text + text_side), text_mask)
        image_side = masked_mean(self.image_norm(regions + image_side), region_mask)
        return ops.concatenate([text_side, image_side], axis=-1)

    def compute_output_shape(self, input_shape):
        text_shape, _ = self.split_input_shapes(input_shape)
        return (text_shape[0], 2 * self.units)
