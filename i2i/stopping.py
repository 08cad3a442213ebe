"""A stop asked for from outside: SIGUSR1 makes training write a checkpoint and stop.

SLURM sends it before a job's time limit (``sbatch --signal=B:USR1@300``), and ``i2i sweep``'s
jobs pass it on to training (:mod:`i2i.sweep_job`); ``kill -USR1`` does the same by hand. The
handler only sets a flag, which the training loop reads after each iteration, so the checkpoint
holds a whole iteration and resuming from it continues exactly. With several ranks the flag is
read where the ranks already meet (logging and checkpoint iterations), and all of them stop
when any one was asked to.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from i2i import distributed
from i2i.errors import I2IError

SIGNAL = signal.SIGUSR1


class Stopped(I2IError, RuntimeError):
    """Training stopped on request after writing a checkpoint; the same command resumes."""


class StopRequest:
    """While open, SIGUSR1 sets :attr:`asked`; :meth:`close` restores the previous handler."""

    def __init__(self, group: distributed.Dist):
        self.group, self.asked, self.previous = group, False, None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(SIGNAL, self._ask)

    def _ask(self, signum: int, frame: Any) -> None:
        self.asked = True

    def due(self, ranks_meet: bool) -> bool:
        """Whether to stop after this iteration (``ranks_meet``: the ranks synchronise here)."""
        if self.group.world == 1:
            return self.asked
        return ranks_meet and not distributed.all_finite(not self.asked, self.group)

    def stopped(self, done: int, iterations: int) -> Stopped:
        return Stopped(
            f"stopped on SIGUSR1 after iteration {done} of {iterations}, checkpoint written: "
            f"the same command resumes from it"
        )

    def close(self) -> None:
        if self.previous is not None:
            signal.signal(SIGNAL, self.previous)
            self.previous = None
