"""LightningDataModules for partially observed orbits (installed as `orbitbench.datamodules`)."""

from .base import IndexBatch, OrbitBatch, OrbitDataModule, datamodule_class, datamodule_name
from .rotated_mnist import RotatedMNIST
from .translated_mnist import TranslatedMNIST

__all__ = ["IndexBatch", "OrbitBatch", "OrbitDataModule", "RotatedMNIST", "TranslatedMNIST", "datamodule_class",
           "datamodule_name"]
