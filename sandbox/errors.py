"""Exceptions raised by the sandbox package."""

from __future__ import annotations


class SandboxError(Exception):
    """A problem the caller can fix (missing public data, bwrap forced but unusable, ...).

    The message is a single line meant to be shown to the user as-is.
    """
