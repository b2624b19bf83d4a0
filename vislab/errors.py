"""The one exception type for user mistakes.

Library code raises :class:`UserError` (a ``ValueError``) for anything a user can get wrong:
a bad path, a corrupt file, an unknown name, a bad value.  The CLI turns it into one line on
stderr and exit code 2; everything else is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """A mistake the user can fix; the message names the problem and the fix."""
