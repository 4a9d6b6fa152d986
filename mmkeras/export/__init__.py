"""Export: SavedModel files for serving."""

from mmkeras.export.archive import export_inference

__all__ = ["export_inference"]
