"""Metrics: classification, detection, segmentation, retrieval."""
