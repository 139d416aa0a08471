"""Stop a training run cleanly on SIGTERM or Ctrl-C (SIGINT): finish the step, checkpoint, exit.

Schedulers (Slurm, Kubernetes, spot instances) send SIGTERM some seconds before they kill a
job; a user presses Ctrl-C. Either way the work since the last checkpoint should not be lost.

`stop_on_signals()` installs handlers for the duration of `Trainer.train`. The first signal
only records itself in a `StopRequest`; `StopOnSignalCallback` sees it at the end of the
current optimizer step and sets `control.should_save` and `control.should_training_stop`, so
the stock Trainer writes a full checkpoint (weights, optimizer, scheduler, RNG, state) and
leaves its loop. The run then raises `TrainingInterrupted`, which the CLI prints as one line
and turns into the shell's convention for a signal: exit code 128 + signal number (130 for
SIGINT, 143 for SIGTERM). Running the same command again resumes from that checkpoint.

A second signal while the step finishes stops at once: the previous handler is restored and
the signal re-raised (SIGINT -> KeyboardInterrupt, SIGTERM -> the default, immediate exit).

A signal that is ignored when training starts stays ignored (the platform convention: `nohup`
and a non-interactive shell's background jobs start with SIGINT ignored, which is how the user
asked for it); the run says so once, and the other signal still stops it with a checkpoint.
Files already written stay consistent because every write is atomic and a checkpoint that
was not finished is never resumed from.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from transformers import TrainerCallback

from prospect.errors import TrainingError

log = logging.getLogger("prospect")

STOP_SIGNALS: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(TrainingError, KeyboardInterrupt):
    """Training stopped on a signal after saving a checkpoint; exit code 128 + signal number.

    Both a `ProspectError` (the CLI prints its message on one line and exits with `exit_code`)
    and a `KeyboardInterrupt` (code that stops on Ctrl-C, such as `prospect sweep`, stops on
    it too instead of counting one failed run and going on to the next).
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)


@dataclass
class StopRequest:
    """Set by the signal handler: which signal arrived first (None: none), and at which step it was acted on."""

    signum: int | None = None
    stopped_at_step: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""


@contextmanager
def stop_on_signals(signals: Sequence[int] = STOP_SIGNALS) -> Iterator[StopRequest]:
    """Within the block, the first of `signals` sets the yielded `StopRequest`; a second one stops at once.

    Previous handlers are restored on exit, also when the block raises. Outside the main thread
    (where Python cannot install handlers) nothing is installed and the request never fires.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.getsignal(s) for s in signals}
    ignored = [s for s, h in previous.items() if h is signal.SIG_IGN]
    for s in ignored:
        del previous[s]  # left ignored: the process was started that way on purpose
    if ignored:
        log.warning(
            "%s ignored by the environment this run was started from (nohup or a background job): left ignored%s",
            " and ".join(signal.Signals(s).name for s in ignored),
            f"; {signal.Signals(next(iter(previous))).name} still saves a checkpoint and stops" if previous else "",
        )

    def restore() -> None:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)

    def handler(signum: int, frame: Any) -> None:
        if request.signum is None:
            request.signum = signum
            log.warning(
                "received %s: saving a checkpoint at the end of this step, then stopping "
                "(send it again to stop at once, without saving)",
                signal.Signals(signum).name,
            )
            return
        restore()
        signal.raise_signal(signum)

    for s in previous:
        signal.signal(s, handler)
    try:
        yield request
    finally:
        restore()


def _any_process(signum: int | None, device: Any) -> int | None:
    """The stop signal seen by any data-parallel process (`signum` itself in a single process).

    A signal may reach the processes of a run on different sides of a step boundary, or reach
    only one of them; each step's stop decision is shared (with the signal's number, so every
    process reports and exits the same way), so all of them save and stop after the same step
    instead of some waiting in the next step's all-reduce forever.
    """
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return signum
    t = torch.tensor([float(signum or 0)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item()) or None


class StopOnSignalCallback(TrainerCallback):
    """At the end of the optimizer step during which a stop was requested on any process: save a
    checkpoint, stop training."""

    def __init__(self, request: StopRequest) -> None:
        self.request = request

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.request.stopped_at_step is not None:
            return control
        signum = _any_process(self.request.signum, getattr(args, "device", "cpu"))
        if signum is not None:
            self.request.signum = self.request.signum or signum  # a process the signal did not reach
            self.request.stopped_at_step = state.global_step
            control.should_save = True
            control.should_training_stop = True
        return control
