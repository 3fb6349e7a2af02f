"""The one exception type a user sees as a one-line message, and a kill turned into one.

Every check of user input raises :class:`InputError` with a message that names the file, frame,
element or option at fault; the command line prints it on one line and exits non-zero instead of
showing a traceback. :func:`sigterm_as_interrupt` makes ``kill PID`` (or a batch system's
SIGTERM) stop a command the way Ctrl-C does, so that its ``finally`` blocks close what it
started (CP2K's MPI processes, nequip-train children) instead of leaving them running.
"""

import contextlib
import signal
import threading


class InputError(ValueError):
    """Bad input from the user: the message names what is wrong and where."""


class Terminated(KeyboardInterrupt):
    """SIGTERM received (handled like Ctrl-C: what was started is stopped; rerun to resume)."""


def _raise_terminated(signum, frame):
    # a second SIGTERM (an impatient `kill`, a batch system's repeat) must not cut short the
    # cleanup the first one started; the handler in place before is restored after it
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated("terminated (SIGTERM)")


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While the block runs, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main
    thread; outside the main thread (where no handler can be set) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if old is None else old)
