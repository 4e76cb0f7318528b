"""One LightningDataModule per dataset, all built on :class:`VolumeSegmentationDataModule`."""

from core.io import DataError
from core.labels import IGNORE_INDEX, LabelSpace
from datamodules.base import VolumeSegmentationDataModule
from datamodules.bids import BIDSDataModule
from datamodules.brats import BraTSDataModule
from datamodules.decathlon import DecathlonDataModule
from datamodules.freesurfer import FreeSurferDataModule
from datamodules.iseg import ISeg2017DataModule, ISeg2019DataModule
from datamodules.mrbrains18 import MRBrainS18DataModule
from datamodules.nifti import NiftiDataModule
from datamodules.nnunet import NnUNetDataModule

__all__ = [
    "BIDSDataModule",
    "IGNORE_INDEX",
    "BraTSDataModule",
    "DataError",
    "DecathlonDataModule",
    "FreeSurferDataModule",
    "ISeg2017DataModule",
    "ISeg2019DataModule",
    "LabelSpace",
    "MRBrainS18DataModule",
    "NiftiDataModule",
    "NnUNetDataModule",
    "VolumeSegmentationDataModule",
]
