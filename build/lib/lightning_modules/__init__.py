"""The LightningModule that trains any network of the registry."""

from lightning_modules.segmentation import SegmentationModule

__all__ = ["SegmentationModule"]
