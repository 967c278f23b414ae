"""How a batch shows its progress: wherever it runs, something says it is alive.

- stderr is a terminal: a tqdm bar on stderr, and log lines written
  through it (not glued to its end) while it is shown;
- a Jupyter notebook (an IPython kernel, where stderr is not a
  terminal): the notebook's own bar, through :mod:`tqdm.auto`;
- anything else (a log file under nohup, SLURM, CI): a plain line every
  :data:`DEFAULT_INTERVAL` seconds with what the bar would show (done,
  failed, rate, ETA), so a log shows the batch is alive.

:class:`ProgressDisplay` picks one of those; the batch engine feeds it
counts and closes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import IO, Any, Iterator, Optional

from .._text import plural

__all__ = [
    'DEFAULT_INTERVAL',
    'INTERVAL_ENV',
    'ProgressDisplay',
    'ProgressLines',
    'in_notebook',
    'progress_interval',
    'logging_through_bar',
]

#: Seconds between two progress lines when stderr is not a terminal.
DEFAULT_INTERVAL = 30.0
#: Environment variable that sets that interval (seconds; ``0`` for no lines).
INTERVAL_ENV = 'STASHWORKS_PROGRESS_INTERVAL'


def progress_interval(value: Optional[float] = None) -> float:
    """The interval between progress lines: ``value``, else :data:`INTERVAL_ENV`, else 30 s.

    Raises:
        ValueError: the value (or the variable) is not a number >= 0.
    """
    if value is None:
        text = os.environ.get(INTERVAL_ENV, '').strip()
        if not text:
            return DEFAULT_INTERVAL
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f'{INTERVAL_ENV} must be a number of seconds, not {text!r}') from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f'progress_interval must be a number of seconds >= 0, not {value!r}')
    return float(value)


def in_notebook() -> bool:
    """Whether this process is an IPython kernel (Jupyter, VS Code notebooks...).

    The same test :mod:`tqdm.autonotebook` makes; never imports IPython.
    """
    ipython = sys.modules.get('IPython')
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
        return shell is not None and 'IPKernelApp' in shell.config
    except Exception:
        return False


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f'{seconds:.0f}s'
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f'{minutes}m {secs:02d}s'
    hours, minutes = divmod(minutes, 60)
    return f'{hours}h {minutes:02d}m'


class ProgressLines:
    """Progress as one plain line every ``interval`` seconds, for a stderr that is no terminal.

    A line looks like ``stashworks: items 1200/5000 (24.0%), 3 failed,
    41.5 items/s, ETA 1m 32s``.  The rate counts the items of this run
    only, as the bar does.

    Args:
        total: items in the whole batch.
        initial: items settled before this run.
        failed: failures recorded before this run.
        interval: seconds between two lines.
        desc: what is counted.
        stream: where to write (default: ``sys.stderr`` when a line is written).
    """

    def __init__(
        self,
        total: int,
        initial: int,
        failed: int,
        interval: float,
        desc: str = 'items',
        stream: Optional[IO[str]] = None,
    ) -> None:
        self.total = total
        self.initial = initial
        self.settled = initial
        self.failed = failed
        self.interval = interval
        self.desc = desc
        self.stream = stream
        self.started = self._last = time.monotonic()

    def line(self) -> str:
        """The progress line as of now."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        new = self.settled - self.initial
        rate = new / elapsed
        share = f' ({100.0 * self.settled / self.total:.1f}%)' if self.total else ''
        text = f'stashworks: {self.desc} {self.settled}/{self.total}{share}, {plural(self.failed, "failure")}'
        if new > 0:
            left = max(0, self.total - self.settled)
            text += f', {rate:.1f} {self.desc}/s, ETA {_duration(left / rate)}'
        else:
            text += f', none settled yet after {_duration(elapsed)}'
        return text

    def advance_many(self, done: int, failed: int) -> None:
        """``done`` more items written and ``failed`` more failed."""
        self.settled += done + failed
        self.failed += failed
        self.tick()

    def tick(self) -> None:
        """Write a line if ``interval`` seconds have passed since the last one."""
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        stream = self.stream or sys.stderr
        try:
            stream.write(self.line() + '\n')
            stream.flush()
        except (OSError, ValueError):
            # A closed or broken stderr must not stop the batch.
            pass

    def close(self) -> None:
        """Nothing to tidy: each line is complete when written."""


class _ThroughBar(logging.Handler):
    """Writes what a console handler would, through the bar (``tqdm.write``)."""

    def __init__(self, original: logging.Handler, tqdm_class: Any) -> None:
        super().__init__(original.level)
        self.original = original
        self.tqdm_class = tqdm_class
        for log_filter in original.filters:
            self.addFilter(log_filter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = getattr(self.original, 'stream', None)
            self.tqdm_class.write(self.original.format(record), file=stream)
        except Exception:
            self.handleError(record)


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and getattr(handler, 'stream', None) in (
        sys.stdout,
        sys.stderr,
    )


@contextlib.contextmanager
def logging_through_bar(tqdm_class: Any) -> Iterator[None]:
    """While a bar is shown, write console log lines above it instead of after it.

    Every handler on the root logger (the user's ``logging.basicConfig``
    ones included) and on the ``stashworks`` logger that writes to stdout
    or stderr is swapped for one that writes through ``tqdm.write``, with
    the same level, format and filters; so is the last-resort handler
    that shows warnings when logging is not configured.  Files and other
    handlers are left alone.  Everything is put back on exit.
    """
    loggers = [logging.getLogger(), logging.getLogger('stashworks')]
    saved = [(logger, logger.handlers) for logger in loggers]
    last_resort = logging.lastResort
    try:
        for logger in loggers:
            logger.handlers = [_ThroughBar(h, tqdm_class) if _is_console(h) else h for h in logger.handlers]
        if isinstance(last_resort, logging.StreamHandler):
            logging.lastResort = _ThroughBar(last_resort, tqdm_class)
        yield
    finally:
        for logger, handlers in saved:
            logger.handlers = handlers
        logging.lastResort = last_resort


class ProgressDisplay:
    """The batch's progress, shown the way its surroundings allow (see the module).

    Args:
        total: items in the whole batch.
        initial: items settled (complete or failed) before this run; the
            bar starts there, so its ETA is honest.
        failed: failures recorded before this run.
        enabled: ``True`` always shows a bar (on stderr), ``False`` shows
            nothing, ``None`` decides: a bar at a terminal or in a
            notebook, else progress lines.
        desc: the bar's label.
        interval: seconds between progress lines (default:
            :func:`progress_interval`); ``0`` for none.
    """

    def __init__(
        self,
        total: int,
        initial: int,
        failed: int,
        enabled: Optional[bool],
        desc: str = 'items',
        interval: Optional[float] = None,
    ) -> None:
        self.failed = failed
        self._bar: Any = None
        self._lines: Optional[ProgressLines] = None
        self._logging: Optional[contextlib.ExitStack] = None
        notebook = enabled is None and in_notebook()
        if enabled or (enabled is None and (_isatty(sys.stderr) or notebook)):
            self._open_bar(total, initial, failed, desc, notebook)
        elif enabled is None:
            seconds = progress_interval(interval)
            if seconds > 0:
                self._lines = ProgressLines(total, initial, failed, seconds, desc)

    @property
    def enabled(self) -> bool:
        """Whether anything is shown."""
        return self._bar is not None or self._lines is not None

    def _open_bar(self, total: int, initial: int, failed: int, desc: str, notebook: bool) -> None:
        tqdm: Any
        if notebook:
            # tqdm.auto draws a notebook widget (or, without ipywidgets,
            # falls back to the text bar with a warning of its own).
            from tqdm.auto import tqdm
        else:
            from tqdm import tqdm
        self._bar = tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit='item',
            file=None if notebook else sys.stderr,
            dynamic_ncols=True,
            smoothing=0.1,
        )
        self._bar.set_postfix(failed=failed, refresh=False)
        stack = contextlib.ExitStack()
        stack.enter_context(logging_through_bar(type(self._bar)))
        self._logging = stack

    def advance_many(self, done: int, failed: int) -> None:
        """``done`` more items written and ``failed`` more failed (one call per batch of items)."""
        if self._lines is not None:
            self._lines.advance_many(done, failed)
            self.failed = self._lines.failed
            return
        if self._bar is None:
            return
        if failed:
            self.failed += failed
            self._bar.set_postfix(failed=self.failed, refresh=False)
        if done or failed:
            self._bar.update(done + failed)

    def tick(self) -> None:
        """Called now and then while nothing settles: progress lines keep coming."""
        if self._lines is not None:
            self._lines.tick()

    def close(self) -> None:
        """Close the bar (its last state stays on screen) and give logging back."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._logging is not None:
            self._logging.close()
            self._logging = None
        if self._lines is not None:
            self._lines.close()
            self._lines = None
