"""Model registry and the model families (importing a family registers its models)."""

from vislab.models import (
           alexnet,  # noqa: F401  (alexnet, zfnet)
           densenet,  # noqa: F401  (densenet121..201, densenet_bc_*)
           efficientnet,  # noqa: F401  (efficientnet_b0..b7)
           googlenet,  # noqa: F401  (googlenet)
           inception_v3,  # noqa: F401  (inception_v3)
           lenet,  # noqa: F401  (lenet5)
           mobilenet,  # noqa: F401  (mobilenet_v1, mobilenet_v2)
           nin,  # noqa: F401  (nin)
           resnet,  # noqa: F401  (resnet*, resnext*, wide_resnet*, se_resnet*)
           simple,  # noqa: F401  (registers linear, mlp, small_cnn)
           vgg,  # noqa: F401  (vgg11..vgg19_bn)
           vit,  # noqa: F401  (vit_ti_16..vit_l_32)
           window_cnn,  # noqa: F401  (window_cnn: the sliding-window classifier)
           wrn,  # noqa: F401  (wrn_16_4..wrn_40_4)
)
from vislab.models.base import Classifier
from vislab.models.registry import (
           create,
           create_model,
           list_models,
           model_family,
           register_model,
)
from vislab.models.torchvision_compat import from_torchvision

__all__ = ["Classifier", "create", "create_model", "from_torchvision", "list_models", "model_family",
           "register_model"]
