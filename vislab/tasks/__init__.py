"""Tasks: the unit a family adds.  Importing this package registers every task.

:class:`Task` is the contract (data, model, loss, validation, evaluation, prediction, report
sections); :func:`load_run` gives any run as a typed :class:`TrainedRun`; :mod:`.runner` trains,
evaluates, predicts, cross-validates and reports for any task; :mod:`.rundir` owns run folders.
"""

from vislab.tasks import (  # noqa: F401  (each registers its task)
    captioning,
    classification,
    detection,
    generative,
    localization,
    metric,
    panoptic,
    segmentation,
    seq2seq,
)
from vislab.tasks.base import (
    DataBundle,
    Section,
    Task,
    get_task,
    list_tasks,
    register_task,
)
from vislab.tasks.trained import TrainedRun, load_run

__all__ = ["DataBundle", "Section", "Task", "TrainedRun", "get_task", "list_tasks", "load_run", "register_task"]
