"""Data: file formats, the data-set registry, splits, normalisation and batched augmentation."""
