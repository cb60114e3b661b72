"""The one error class for bad job input, and the exit code that says so.

A job that raises `InputError` (or a subclass) exits with `BAD_INPUT_EXIT_CODE`; the
children's failure policies fail at once on that code, because retrying cannot fix a spec.
"""

from __future__ import annotations

BAD_INPUT_EXIT_CODE = 2


class InputError(ValueError):
    """Bad input the user must fix (a field, a file, a URI); the message names it and the fix."""
