"""Datasets: embedded sets, readers for standard on-disk layouts, augmentations, batching."""

from robustsnn.data.augment import build_augmentation, cutout, random_crop, random_hflip
from robustsnn.data.dataset import DatasetInfo, ImageDataset, batches, epoch_generator
from robustsnn.data.registry import dataset_info, list_datasets, load_dataset

__all__ = [
    "DatasetInfo",
    "ImageDataset",
    "batches",
    "build_augmentation",
    "cutout",
    "dataset_info",
    "epoch_generator",
    "list_datasets",
    "load_dataset",
    "random_crop",
    "random_hflip",
]
