"""mmkeras: a Keras 3 / TensorFlow model zoo for multimodal (image + text) classification."""

__version__ = "0.1.0"

from mmkeras.registry import create_model, list_models, model_family, register_model  # noqa: E402
from mmkeras import layers  # noqa: E402,F401  (registers the custom layers)

__all__ = ["create_model", "list_models", "model_family", "register_model", "__version__"]
