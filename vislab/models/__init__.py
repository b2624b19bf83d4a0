"""Model registry and the model families (importing a family registers its models)."""

from vislab.models import simple  # noqa: F401  (registers linear, mlp, small_cnn)
from vislab.models.base import Classifier
from vislab.models.registry import create, create_model, list_models, model_family, register_model

__all__ = ["Classifier", "create", "create_model", "list_models", "model_family", "register_model"]
