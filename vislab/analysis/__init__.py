"""Exact model analysis: parameters, MACs/FLOPs, activation memory and receptive fields per layer
(:func:`summarize`), BN folding (:func:`fuse_bn`), convolutions as matrices and classifiers as
fully convolutional networks, and the model zoo side by side (:func:`zoo_table`, :func:`zoo_plot`).
"""

from vislab.analysis.conv import conv2d_im2col, conv_as_matrix, convolutionalise
from vislab.analysis.fuse import find_conv_bn, fuse_bn
from vislab.analysis.summary import GLOBAL, LayerRow, ReceptiveField, Summary, summarize
from vislab.analysis.zoo import ZooRow, build_model, zoo_plot, zoo_table

__all__ = ["GLOBAL", "LayerRow", "ReceptiveField", "Summary", "ZooRow", "build_model",
           "conv2d_im2col", "conv_as_matrix", "convolutionalise", "find_conv_bn", "fuse_bn",
           "summarize", "zoo_plot", "zoo_table"]
