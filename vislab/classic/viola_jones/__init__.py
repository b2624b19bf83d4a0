"""Viola-Jones face detection: integral images, Haar features, AdaBoost, the attentional cascade.

Train a cascade in minutes (:func:`train_cascade`), read OpenCV's XML cascades
(:func:`load_opencv_cascade`) and detect with the same boxes as ``cv2.CascadeClassifier``
(``detect.detect``, ``mode="opencv"``) or the paper's way, scaling the features (``mode="paper"``);
measure cascades against OpenCV's (:func:`evaluate_run`) and detect in named images and
cascades, as ``vislab vj`` does (:func:`detect_images`, :func:`load_any_cascade`).
"""

from vislab.classic.viola_jones.adaboost import (
    AdaBoost,
    SortedFeatures,
    Stump,
    fit_adaboost,
)
from vislab.classic.viola_jones.cascade import Cascade, evaluate_windows
from vislab.classic.viola_jones.detect import (
    Detections,
    group_rectangles,
    resize_linear_exact,
    rgb_to_gray,
)
from vislab.classic.viola_jones.evaluate import evaluate_run
from vislab.classic.viola_jones.haar import (
    SHAPES,
    HaarFeatures,
    feature_values,
    haar_features,
)
from vislab.classic.viola_jones.integral import (
    integral_image,
    rect_sum,
    squared_integral_image,
    tilted_integral_image,
    tilted_rect_sum,
)
from vislab.classic.viola_jones.opencv_xml import (
    load_opencv_cascade,
    save_opencv_cascade,
)
from vislab.classic.viola_jones.sources import detect_images, load_any_cascade
from vislab.classic.viola_jones.train import TrainConfig, TrainResult, train_cascade

__all__ = [
    "SHAPES", "AdaBoost", "Cascade", "Detections", "HaarFeatures", "SortedFeatures", "Stump", "TrainConfig",
    "TrainResult", "detect_images", "evaluate_run", "evaluate_windows", "feature_values", "fit_adaboost",
    "group_rectangles", "haar_features", "integral_image", "load_any_cascade", "load_opencv_cascade", "rect_sum",
    "resize_linear_exact", "rgb_to_gray", "save_opencv_cascade", "squared_integral_image", "tilted_integral_image",
    "tilted_rect_sum", "train_cascade",
]
