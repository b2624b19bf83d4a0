"""Model registry and the model families (importing a family registers its models)."""

from vislab.models import (
           alexnet,  # noqa: F401  (alexnet, zfnet)
           darknet,  # noqa: F401  (darknet53, darknet_tiny)
           deeplab,  # noqa: F401  (deeplabv3, deeplabv3plus: segmentation)
           densenet,  # noqa: F401  (densenet121..201, densenet_bc_*)
           efficientnet,  # noqa: F401  (efficientnet_b0..b7)
           fcn,  # noqa: F401  (fcn32s, fcn16s, fcn8s: segmentation)
           generative,  # noqa: F401  (dense_ae, conv_ae, vae, dcgan, bigan: generative; *_ae_encoder)
           googlenet,  # noqa: F401  (googlenet)
           inception_v3,  # noqa: F401  (inception_v3)
           lenet,  # noqa: F401  (lenet5)
           mobilenet,  # noqa: F401  (mobilenet_v1, mobilenet_v2)
           nin,  # noqa: F401  (nin)
           pixel,  # noqa: F401  (seg_pixel: the per-pixel segmentation baseline)
           resnet,  # noqa: F401  (resnet*, resnext*, wide_resnet*, se_resnet*)
           simple,  # noqa: F401  (registers linear, mlp, small_cnn)
           tv_segmentation,  # noqa: F401  (tv_fcn, tv_deeplabv3: torchvision's heads, the reference)
           unet,  # noqa: F401  (unet: segmentation)
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
           model_kind,
           register_model,
)
from vislab.models.torchvision_compat import from_torchvision

__all__ = ["Classifier", "create", "create_model", "from_torchvision", "list_models", "model_family",
           "model_kind", "register_model"]
