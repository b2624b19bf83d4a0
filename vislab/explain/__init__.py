"""Looking inside networks: first-layer and dead filters, maximally activating patches,
activation maximisation, CAM / Grad-CAM / Grad-CAM++ / Augmented Grad-CAM, gradient saliency and
SmoothGrad, weakly supervised localisation, and the latent space (embeddings, retrieval, t-SNE
and PCA maps).  Every function takes any ``nn.Module`` (a layer by name) and leaves no hooks,
gradients or mode changes behind.  :func:`explain` runs a method on a trained run.
"""

from vislab.explain.activation_max import maximize_activation
from vislab.explain.cam import augmented_grad_cam, class_activation_map, grad_cam, normalize, upsample
from vislab.explain.filters import dead_filters, filter_images, first_conv
from vislab.explain.latent import embed, nearest_neighbours, pca_2d, precision_at_k, tsne_2d
from vislab.explain.localization import box_from_map, localize, place_on_canvas
from vislab.explain.patches import receptive_field, top_patches
from vislab.explain.run import METHODS, Options, explain
from vislab.explain.saliency import input_gradient, saliency_map, smooth_grad

__all__ = ["METHODS", "Options", "augmented_grad_cam", "box_from_map", "class_activation_map",
           "dead_filters", "embed", "explain", "filter_images", "first_conv", "grad_cam",
           "input_gradient", "localize", "maximize_activation", "nearest_neighbours", "normalize",
           "pca_2d", "place_on_canvas", "precision_at_k", "receptive_field", "saliency_map",
           "smooth_grad", "top_patches", "tsne_2d", "upsample"]
