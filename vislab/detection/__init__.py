"""Object detection: box geometry, NMS, anchors, box coding and matching, annotation formats,
generated scenes and the detectors.  Import the submodules (``vislab.detection.boxes`` ...)
directly; importing the package registers its data sets (:mod:`.datasets`, torch-free)."""

from vislab.detection import datasets  # noqa: F401  (registers scene_patches)
