"""The exception types a user sees as a message, not a traceback, and a kill turned into one.

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


class ToolFailed(RuntimeError):
    """A program a command runs (nequip-train, nequip-package) failed: the message names it, the
    folder it worked in and its log, headed by the log's last error line. The command line prints
    it without the package's own traceback, which says nothing about the cause."""

    def __init__(self, tool: str, where, log_path, log_text: str, tail_lines: int = 15):
        lines = log_text.splitlines()
        cause = last_error_line(lines)
        tail = "\n".join(f"  {line}" for line in lines[-tail_lines:])
        super().__init__(f"{tool} failed for {where}: {cause or 'no error line in its log'}\n"
                         f"last lines of {log_path}:\n{tail}")


def last_error_line(lines: list[str]) -> str | None:
    """The last line of a log that reads as a Python exception ("ValueError: ...",
    "torch.OutOfMemoryError: ..."), stripped; None when there is none."""
    import re

    pattern = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b(:|$)")
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i].strip()
        if pattern.match(line):
            # "InstantiationException: Error in call to ...:" puts its cause on the next line
            if line.endswith(":") and i + 1 < len(lines) and lines[i + 1].strip():
                line = f"{line} {lines[i + 1].strip()}"
            return line
    return None


class Terminated(KeyboardInterrupt):
    """SIGTERM received (handled like Ctrl-C: what was started is stopped; rerun to resume)."""


#: set by the SIGTERM handler, cleared when :func:`sigterm_as_interrupt` is entered and left
_terminated = threading.Event()


def _raise_terminated(signum, frame):
    # a second SIGTERM (an impatient `kill`, a batch system's repeat) must not cut short the
    # cleanup the first one started; the handler in place before is restored after it
    _terminated.set()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated("terminated (SIGTERM)")


def raise_if_terminated() -> None:
    """Raise :class:`Terminated` if a SIGTERM came: long loops call this once per step.

    The handler's exception reaches the loop in all but one case: Python runs signal handlers
    between any two bytecodes, also inside a finaliser (``__del__``, a weakref callback, a
    generator closed by the garbage collector), where an exception is printed as "Exception
    ignored" and dropped. The run would then go on to its end, deaf to further SIGTERMs (ignored
    so as not to cut a cleanup short); the flag this checks outlives the lost exception."""
    if _terminated.is_set():
        raise Terminated("terminated (SIGTERM)")


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While the block runs, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main
    thread; outside the main thread (where no handler can be set) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _terminated.clear()
    old = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if old is None else old)
        _terminated.clear()
