"""vislab: the deep-learning-for-vision course made into software."""

from vislab.errors import UserError

__version__ = "0.1.0"
__all__ = ["UserError", "__version__"]
