"""Trials at once, for ``isseg tune --jobs N``.

The search's study lives in SQLite, which several processes can share. So each phase of the search (the search
trials, then the confirmation runs) runs in the calling process and in ``N - 1`` spawned worker processes at once,
each taking the next queued trial or asking its own sampler (seeded apart, with Optuna's "constant liar" so that
running trials repel new ones) for a new one. Each process stops when the phase is done: the ``max_trials`` search
trials are finished or running, or no confirmation run is left in the queue (:class:`PhaseEnd`). A worker dies with
the main process (Linux: ``PR_SET_PDEATHSIG``), so a killed search leaves no orphan training; the trials it was
running are failed and queued again by ``--resume``. Ctrl-C interrupts every process's trial the same way.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

INTERRUPTED = 130  # a worker's exit code after Ctrl-C


def is_confirmation(trial: Any) -> bool:
    return "confirm_of" in trial.user_attrs


def search_trials_taken(trials: list[Any], exclude: int | None = None) -> int:
    """Search trials (not confirmation runs, not surplus) finished (complete or pruned) or running."""
    states = ("COMPLETE", "PRUNED", "RUNNING")
    return sum(t.state.name in states and not is_confirmation(t) and not t.user_attrs.get("surplus")
               and t.number != exclude for t in trials)


def phase_done(trials: list[Any], phase: str, max_trials: int | None, exclude: int | None = None) -> bool:
    """Whether a phase has nothing left to start: ``confirm``: no queued run; ``search``: ``max_trials`` taken."""
    if phase == "confirm":
        return not any(t.state.name == "WAITING" for t in trials)
    return max_trials is not None and search_trials_taken(trials, exclude) >= max_trials


class PhaseEnd:
    """Optuna callback after each trial: ``after`` (the reports, written under a lock shared by the processes),
    then stop this process's loop when the phase is done (:func:`phase_done`)."""

    def __init__(self, phase: str, max_trials: int | None, output: str, after: Callable[[Any, Any], None]) -> None:
        self.phase, self.max_trials, self.output, self.after = phase, max_trials, output, after

    def __call__(self, study: Any, trial: Any) -> None:
        with reports_lock(self.output):
            self.after(study, trial)
        if phase_done(study.get_trials(deepcopy=False), self.phase, self.max_trials):
            study.stop()


@contextlib.contextmanager
def reports_lock(output: str | Path) -> Iterator[None]:
    """An exclusive lock on ``<output>/.reports.lock`` (POSIX ``flock``; no lock where there is none)."""
    try:
        import fcntl
    except ImportError:  # Windows: one process at a time is all --jobs 1 needs
        yield
        return
    with open(Path(output) / ".reports.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def optimize(study: Any, objective: Any, until: float, callback: PhaseEnd) -> None:
    """Run trials in this process until ``callback`` stops it or ``until`` (epoch seconds) has passed."""
    study.optimize(objective, timeout=max(1.0, until - time.time()), callbacks=[callback], gc_after_trial=True)


def run_phase(open_study: Callable[[int], Any], objective: Any, callback: PhaseEnd, until: float, jobs: int) -> None:
    """One phase: :func:`optimize` here (``open_study(0)``) and in ``jobs - 1`` spawned processes
    (``open_study(k)``: the same study, sampler seed apart). Raises KeyboardInterrupt when a worker was
    interrupted, RuntimeError when one failed."""
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_work, args=(open_study, objective, callback, until, k, os.getpid()),
                           name=f"isseg-tune-{k}") for k in range(1, jobs)]
    for w in workers:
        w.start()
    try:
        optimize(open_study(0), objective, until, callback)
    except BaseException:
        _interrupt(workers)
        raise
    for w in workers:
        w.join()
    codes = [w.exitcode for w in workers]
    if any(c not in (0, INTERRUPTED) for c in codes):
        raise RuntimeError(f"isseg tune: a worker process failed (exit codes {codes}); its traceback is above, "
                           "its trial is marked failed; fix the cause and run again with --resume")
    if INTERRUPTED in codes:
        raise KeyboardInterrupt


def _interrupt(workers: list[Any]) -> None:
    """Ctrl-C for the workers too (a terminal sends it to all; a caller's interrupt only reaches this process):
    their trials are marked interrupted, to run again on ``--resume``."""
    for w in workers:
        w.join(timeout=5)
        if w.is_alive() and w.pid is not None:
            os.kill(w.pid, signal.SIGINT)
    for w in workers:
        w.join(timeout=60)
        if w.is_alive():
            w.kill()
            w.join()


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this process when its parent dies, so a killed search leaves no orphan."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _work(open_study: Callable[[int], Any], objective: Any, callback: PhaseEnd, until: float, index: int,
          parent: int) -> None:
    _die_with_parent(parent)
    try:
        optimize(open_study(index), objective, until, callback)
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
