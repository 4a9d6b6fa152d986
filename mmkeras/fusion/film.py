"""Feature-wise linear modulation of an image feature map by a text vector."""

from mmkeras.fusion.base import FusionLayer
from mmkeras.fusion.registry import register_fusion


@register_fusion("film", inputs="map_vector", sizes={"small": {}, "base": {}})
class FiLM(FusionLayer):
    """FiLM (Perez et al., 2018, arXiv:1709.07871).

    `gamma = Dense(C)(text)`, `beta = Dense(C)(text)`, output `(1 + gamma) * map + beta`,
    the same scale and shift at every spatial position. Height and width may be
    unknown until run time; the channel count `C` must be known.

    Call: `[image_map (B, H, W, C), text (B, Dt)]` -> `(B, H, W, C)`.
    """

    input_layout = (
        ("image_map", ("batch", "height", "width", "channels")),
        ("text", ("batch", "features")),
    )

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def build(self, input_shape):
        map_shape, text_shape = self.split_input_shapes(input_shape)
        channels = map_shape[-1]
        # Scale and shift of every channel, both read from the text.
        self.gamma, self.beta = self.projections(channels, names=("gamma", "beta"))
        self.gamma.build(text_shape)
        self.beta.build(text_shape)

    def call(self, inputs, mask=None):
        feature_map, text = inputs
        gamma = self.gamma(text)[:, None, None, :]
        beta = self.beta(text)[:, None, None, :]
        # `1 +` centres the scale on identity: gamma = beta = 0 leaves the map unchanged,
        # and small initial gamma only perturbs it, instead of starting by scaling the
        # image features towards 0 as a bare `gamma * map` would.
        return (1.0 + gamma) * feature_map + beta

    def compute_output_shape(self, input_shape):
        map_shape, _ = self.split_input_shapes(input_shape)
        return map_shape
