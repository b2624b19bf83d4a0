"""vislab: the deep-learning-for-vision course made into software.

``vislab.load_run(dir)`` loads any trained run (imported on first use: ``import vislab`` stays
light for the command line).
"""

from vislab.errors import UserError

__version__ = "0.1.0"
__all__ = ["UserError", "__version__", "load_run"]


def __getattr__(name: str):
    if name == "load_run":
        from vislab.tasks import load_run
        return load_run
    raise AttributeError(f"module 'vislab' has no attribute {name!r}")
