"""Execute LLM-written scripts in a per-node workspace (bubblewrap sandbox or plain).

Self-contained: imports nothing from the rest of the project.
"""

from sandbox.errors import SandboxError
from sandbox.limits import Limits
from sandbox.runner import ExecutionResult, bwrap_available, run_script, truncate_middle
from sandbox.workspace import Workspace, create_workspace

__all__ = [
    "ExecutionResult",
    "Limits",
    "SandboxError",
    "Workspace",
    "bwrap_available",
    "create_workspace",
    "run_script",
    "truncate_middle",
]
