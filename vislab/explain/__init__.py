"""Looking inside networks: first-layer and dead filters, maximally activating patches,
activation maximisation, CAM / Grad-CAM / Grad-CAM++ / Augmented Grad-CAM, gradient saliency and
SmoothGrad, weakly supervised localisation, and the latent space (embeddings, retrieval, t-SNE
and PCA maps).  Every function takes any ``nn.Module`` (a layer by name) and leaves no hooks,
gradients or mode changes behind.  :func:`explain` runs a method on a trained run.

The names below are imported on first use, so that ``vislab --help`` (which imports
``vislab.cli.explain``) does not load torch for them.
"""

import importlib

_EXPORTS = {
    "activation_max": ["maximize_activation"],
    "cam": ["augmented_grad_cam", "class_activation_map", "class_maps", "grad_cam", "normalize", "upsample"],
    "filters": ["dead_filters", "filter_images", "first_conv"],
    "latent": ["embed", "nearest_neighbours", "pca_2d", "precision_at_k", "tsne_2d"],
    "localization": ["box_from_map", "localize", "place_on_canvas"],
    "patches": ["receptive_field", "top_patches"],
    "run": ["METHODS", "Options", "explain"],
    "saliency": ["input_gradient", "saliency_map", "smooth_grad"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"vislab.explain.{_MODULE_OF[name]}"), name)
    raise AttributeError(f"module 'vislab.explain' has no attribute {name!r}")
