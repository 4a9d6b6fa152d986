"""Early (data-level) fusion: text features painted onto every pixel of the image.

Registered with stage="input": `build_fused` calls it on the pixels, before the image
branch, which then reads both modalities from its first layer.
"""

from keras import ops

from mmkeras.fusion.base import FusionLayer, check_positive_int
from mmkeras.fusion.registry import register_fusion


@register_fusion("early", inputs="map_vector", stage="input",
                 sizes={"small": {"channels": 4}, "base": {"channels": 8}})
class EarlyFusion(FusionLayer):
    """Projects the text vector to `channels` and appends it to every pixel.

    The result can feed any image backbone, which then sees both modalities from its
    first layer. Height and width may be unknown until run time (`None`).

    Args:
        channels: number of text channels appended to the image.

    Call: `[image (B, H, W, C), text (B, Dt)]` -> `(B, H, W, C + channels)`.
    """

    input_layout = (
        ("image", ("batch", "height", "width", "channels")),
        ("text", ("batch", "features")),
    )

    def __init__(self, channels, **kwargs):
        channels = check_positive_int("channels", channels)
        super().__init__(**kwargs)
        self.channels = channels
        (self.text_projection,) = self.projections(channels, names=("text_projection",))

    def build(self, input_shape):
        _, text_shape = self.split_input_shapes(input_shape)
        self.text_projection.build(text_shape)

    def call(self, inputs, mask=None):
        image, text = inputs
        # Raw images may arrive as integers; the output is a float feature map.
        image = ops.cast(image, self.compute_dtype)
        text = self.text_projection(text)[:, None, None, :]
        # Broadcasting against a zero map sized like the image spreads the text over
        # every pixel without reading H and W, which may only be known at run time.
        text_planes = ops.zeros_like(image[..., :1]) + text
        return ops.concatenate([image, text_planes], axis=-1)

    def compute_output_shape(self, input_shape):
        image_shape, _ = self.split_input_shapes(input_shape)
        return (*image_shape[:-1], image_shape[-1] + self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}
