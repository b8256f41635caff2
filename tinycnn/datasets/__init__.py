"""Datasets: the IDX format, MNIST and its relatives (found, verified, downloaded), the
bundled scikit-learn digits, and preprocessing helpers."""
from .download import DownloadError, download_file
from .idx import IDXFormatError, read_idx, write_idx
from .preprocessing import add_channel_axis, one_hot, standardize, to_float, train_val_split
from .registry import (DATASETS, ChecksumError, DataDirError, DatasetInfo, FileInfo, cache_dir, fetch,
                       load_dataset, load_digits, load_fashion_mnist, load_kmnist, load_mnist)

__all__ = ["read_idx", "write_idx", "IDXFormatError", "DownloadError", "ChecksumError", "DataDirError",
           "download_file", "load_mnist", "load_fashion_mnist", "load_kmnist", "load_digits",
           "load_dataset", "fetch", "DATASETS", "DatasetInfo", "FileInfo", "cache_dir",
           "to_float", "standardize", "add_channel_axis", "one_hot", "train_val_split"]
