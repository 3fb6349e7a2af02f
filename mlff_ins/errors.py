"""The one exception type a user sees as a one-line message.

Every check of user input raises :class:`InputError` with a message that names the file, frame,
element or option at fault; the command line prints it on one line and exits non-zero instead of
showing a traceback.
"""


class InputError(ValueError):
    """Bad input from the user: the message names what is wrong and where."""
