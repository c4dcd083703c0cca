"""Datasets: embedded sets, readers for standard on-disk layouts, augmentations, batching."""

from robustsnn.data.augment import (
    build_augmentation,
    cutout,
    default_augmentation,
    random_crop,
    random_hflip,
)
from robustsnn.data.dataset import (
    Augmentation,
    DatasetInfo,
    ImageDataset,
    augment_generator,
    batches,
    derive_generator,
    epoch_generator,
)
from robustsnn.data.embedded import cache_dir, stratified_split
from robustsnn.data.readers import RestrictedUnpickler, UnsafePickleError
from robustsnn.data.registry import data_root, dataset_info, list_datasets, load_dataset

__all__ = [
    "Augmentation",
    "DatasetInfo",
    "ImageDataset",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "augment_generator",
    "batches",
    "build_augmentation",
    "cache_dir",
    "cutout",
    "data_root",
    "dataset_info",
    "default_augmentation",
    "derive_generator",
    "epoch_generator",
    "list_datasets",
    "load_dataset",
    "random_crop",
    "random_hflip",
    "stratified_split",
]
