"""Signal handling shared by every long-running command: one way to catch SIGINT/SIGTERM on the main thread."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import TypeVar

T = TypeVar("T")

Handler = Callable[[int], None]


@contextlib.contextmanager
def handling(signals: Iterable[int], handler: Handler) -> Iterator[None]:
    """Call `handler(signum)` for `signals` meanwhile, then restore the previous handlers. Only the main thread
    can install handlers: elsewhere this does nothing (the caller's thread is not the one signals reach)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        handler(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def interrupt(signum: int) -> None:
    """A handler that raises KeyboardInterrupt, as Ctrl-C does."""
    raise KeyboardInterrupt


def sigterm_as_interrupt() -> contextlib.AbstractContextManager[None]:
    """SIGTERM ends the command as Ctrl-C does (KeyboardInterrupt on the main thread): outputs are finalised on
    the way out and the exit status is the same (130)."""
    return handling([signal.SIGTERM], interrupt)


def block_in_this_thread() -> None:
    """Block SIGINT/SIGTERM in the calling (worker) thread, so that they reach the main thread only: delivered
    to a worker they interrupt a blocking write (EINTR) there."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


def interruptible(work: Callable[[], T]) -> T:
    """`work()` on a helper thread while the main thread waits, so that a signal handler (SIGTERM, Ctrl-C) runs
    at once even while `work` is inside a long C call (a model being loaded): the exception the handler raises
    ends the wait, and the helper thread, a daemon, is left to the process's exit."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # handed to the waiting thread
            error.append(exc)

    thread = threading.Thread(target=run, name="cfnet-load", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.05)
    if error:
        raise error[0]
    return result[0]
