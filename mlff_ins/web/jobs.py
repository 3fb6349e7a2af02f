"""A bounded background job queue for the web page: one worker thread, jobs run one at a time.

A job is a function ``work(report)`` that calls ``report(fraction, message)`` now and then and
returns its result. :meth:`JobQueue.submit` refuses a new job with :class:`QueueFull` while
``max_jobs`` jobs are unfinished (waiting or running), so one user cannot fill the machine's
evening with requests while another waits; finished jobs (done or failed) stay readable with
:meth:`JobQueue.get` until the server stops. A job that raises :class:`InputError` fails with
that one-line message; any other exception fails with its type and first line (the traceback
goes to the server's log, never to the page).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlff_ins.errors import InputError

_LOG = logging.getLogger("mlff_ins.web")

#: a job's states, in the order it passes through them
STATES = ("queued", "running", "done", "failed")


class QueueFull(Exception):
    """Raised by :meth:`JobQueue.submit` when ``max_jobs`` jobs are unfinished."""


@dataclass
class Job:
    """One piece of background work and what is known of it so far.

    ``progress`` is a fraction 0..1, ``message`` says what it is doing (or why it failed),
    ``result`` is what ``work`` returned (None until ``state == "done"``), ``info`` is free
    JSON-able data given at submission (shown with the job), times are ``time.time()`` seconds.
    """

    id: str
    work: Callable[[Callable[[float, str], None]], Any]
    info: dict = field(default_factory=dict)
    state: str = "queued"
    progress: float = 0.0
    message: str = "waiting for the worker"
    result: Any = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None

    def report(self, fraction: float, message: str) -> None:
        """Progress from inside ``work``: fraction done (clipped to 0..1) and a short message."""
        self.progress = min(max(float(fraction), 0.0), 1.0)
        self.message = str(message)


class JobQueue:
    """One worker thread running submitted jobs first come, first served.

    Parameters
    ----------
    max_jobs : int
        Most unfinished jobs (waiting plus running) at once; the next is refused.
    """

    def __init__(self, max_jobs: int = 4):
        if max_jobs < 1:
            raise InputError(f"--max-queued {max_jobs}: must be at least 1")
        self.max_jobs = int(max_jobs)
        self._jobs: dict[str, Job] = {}
        self._waiting: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the worker thread (a daemon: a running job does not keep the process alive)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="mlff-ins-jobs", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Ask the worker to stop after its current job and wait up to ``timeout_s`` s for it."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def unfinished(self) -> int:
        """Jobs waiting or running."""
        with self._cond:
            return sum(j.state in ("queued", "running") for j in self._jobs.values())

    def submit(self, work: Callable, info: dict | None = None) -> Job:
        """Queue ``work``; raises :class:`QueueFull` when ``max_jobs`` are unfinished."""
        with self._cond:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            busy = sum(j.state in ("queued", "running") for j in self._jobs.values())
            if busy >= self.max_jobs:
                what = "calculation is" if busy == 1 else "calculations are"
                raise QueueFull(f"{busy} {what} already waiting or running (the limit is "
                                f"{self.max_jobs}); try again when one has finished")
            job = Job(id=uuid.uuid4().hex[:16], work=work, info=dict(info or {}))
            self._jobs[job.id] = job
            self._waiting.append(job)
            self._cond.notify_all()
            return job

    def get(self, job_id: str) -> Job | None:
        with self._cond:
            return self._jobs.get(job_id)

    def position(self, job: Job) -> int:
        """How many jobs run or wait ahead of ``job`` (0 when it is running or finished)."""
        with self._cond:
            if job.state != "queued":
                return 0
            ahead = sum(j.state == "running" for j in self._jobs.values())
            for j in self._waiting:
                if j is job:
                    break
                ahead += 1
            return ahead

    def _next(self) -> Job | None:
        with self._cond:
            while not self._waiting and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            job = self._waiting.popleft()
            job.state, job.started, job.message = "running", time.time(), "starting"
            return job

    def _loop(self) -> None:
        while (job := self._next()) is not None:
            self._run(job)

    @staticmethod
    def _run(job: Job) -> None:
        try:
            result = job.work(job.report)
        except InputError as err:
            job.state, job.message = "failed", str(err).splitlines()[0]
        except Exception as err:  # noqa: BLE001 - a failed job is reported, the worker goes on
            _LOG.exception("job %s failed", job.id)
            first = str(err).splitlines()[0] if str(err) else ""
            job.state = "failed"
            job.message = f"the calculation failed ({type(err).__name__}{': ' if first else ''}" \
                          f"{first})"
        else:
            job.result, job.state, job.progress, job.message = result, "done", 1.0, "done"
        finally:
            job.finished = time.time()
