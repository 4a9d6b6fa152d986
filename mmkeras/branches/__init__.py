"""Image and text branches: functions that add named layers to a functional graph.

    from mmkeras.branches import image_branch, text_branch

    image = keras.Input((32, 32, 3), dtype="uint8", name="image")
    tokens = keras.Input((20,), dtype="int32", name="token_ids")
    img = image_branch("resnet", image, width=32)          # ImageFeatures(vector, feature_map)
    txt = text_branch("lstm", tokens, vocab_size=5000, sequence_length=20)
    # TextFeatures(vector, sequence, mask)

Image branches: simple_cnn, vgg, resnet, resnet9, airbench, applications. Text branches: lstm, bilstm, gru,
cnn, transformer. Default sizes are data: `IMAGE_DEFAULTS[name]["small" | "base"]`.
"""

from mmkeras.branches.base import (
    IMAGE_BRANCHES,
    IMAGE_DEFAULTS,
    SIZES,
    TEXT_BRANCHES,
    TEXT_DEFAULTS,
    ImageFeatures,
    TextFeatures,
    branch_options,
    embed_tokens,
    image_branch,
    register_image_branch,
    register_text_branch,
    text_branch,
)
from mmkeras.branches import text_layers  # noqa: F401  (registers the custom layers)

# Importing the builder modules registers the branches, in this order.
from mmkeras.branches import image as _image  # noqa: F401,E402
from mmkeras.branches import airbench as _airbench  # noqa: F401,E402
from mmkeras.branches import applications as _applications  # noqa: F401,E402
from mmkeras.branches import text as _text  # noqa: F401,E402

__all__ = [
    "IMAGE_BRANCHES",
    "IMAGE_DEFAULTS",
    "SIZES",
    "TEXT_BRANCHES",
    "TEXT_DEFAULTS",
    "ImageFeatures",
    "TextFeatures",
    "branch_options",
    "embed_tokens",
    "image_branch",
    "register_image_branch",
    "register_text_branch",
    "text_branch",
]
