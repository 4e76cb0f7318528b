"""One LightningDataModule per dataset, all built on :class:`VolumeSegmentationDataModule`."""

from datamodules.base import VolumeSegmentationDataModule
from datamodules.io import DataError
from datamodules.iseg import ISeg2017DataModule

__all__ = ["DataError", "ISeg2017DataModule", "VolumeSegmentationDataModule"]
