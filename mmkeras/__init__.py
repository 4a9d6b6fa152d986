"""mmkeras: a Keras 3 / TensorFlow model zoo for multimodal (image + text) classification."""

__version__ = "0.1.0"

from mmkeras.registry import create_model, list_models, model_family, model_info, register_model  # noqa: E402
# Importing these registers the custom layers, the fusions and the model builders.
from mmkeras import branches  # noqa: E402,F401
from mmkeras import fusion  # noqa: E402,F401
from mmkeras.fusion import list_fusions  # noqa: E402
from mmkeras import models  # noqa: E402,F401
from mmkeras.models import build_fused, build_unimodal  # noqa: E402
from mmkeras import ensembles  # noqa: E402,F401
from mmkeras import explain  # noqa: E402,F401
# The speed-run recipe's schedule, loss and optimizer (FilterMuon) are in a saved speed-run
# model's compile config: loading one needs them registered.
from mmkeras import speedrun  # noqa: E402,F401

__all__ = ["build_fused", "build_unimodal", "create_model", "list_fusions", "list_models", "model_family",
           "model_info", "register_model", "__version__"]
