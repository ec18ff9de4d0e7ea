"""Task data: read a task's splits (hub or offline files) into one normalised form."""

from repro.data.glue import TaskData, load_task_data

__all__ = ["TaskData", "load_task_data"]
