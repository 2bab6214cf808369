"""Leave-one-task-out experiments, per-instance routing, the paper-style summary and plots."""

from benchroute.experiments.protocol import leave_one_task_out, per_instance_routing
from benchroute.experiments.summary import summarize, to_markdown

__all__ = ["leave_one_task_out", "per_instance_routing", "summarize", "to_markdown"]
