"""Object detection: box geometry, NMS, anchors, box coding and matching, annotation formats
and generated scenes.  Import the submodules (``vislab.detection.boxes`` ...) directly."""
