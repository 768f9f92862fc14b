"""Giving memory back after large requests, rejected ones above all.

A JSON request of tens of MiB becomes tens of millions of Python objects while it is
parsed. Three things kept that memory after the request had been answered:

- the exception of a rejected request holds the frames it passed through and, with them,
  the parsed body; once those frames are old and part of a reference cycle (the thread
  pool's future, the exception chain), only a full collection frees them, and the
  server's raised gc thresholds make that rare. `detach` clears those frames.
- glibc gives each thread that contends for the heap an arena of its own (up to 8 per
  core), and memory freed in them stays with the process. `limit_malloc_arenas` caps the
  arenas at two; Python code holds the GIL anyway, so they are rarely contended.
- freed memory inside the heap goes back to the kernel only when the heap is trimmed.
  `HeapTrimmer` calls `malloc_trim(0)` once the server has been quiet for a moment after a
  large request, so a burst costs no trimming in the middle of it.

Example:

>>> trimmer = HeapTrimmer(quiet_seconds=0.05)
>>> trimmer.note(64 * 2**20)   # a 64 MiB request was answered; trim once things are quiet
>>> trimmer.close()
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
import traceback

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # mallopt parameter, from glibc's malloc.h


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "malloc_trim"):  # not glibc (musl, macOS): nothing to do
        return None
    return libc


def detach(err: BaseException) -> BaseException:
    """Clears the frames of `err`'s traceback (and of its causes), and returns `err`.

    The frames' locals, such as a parsed request body, are freed at once, whatever later
    holds on to the exception; frames still running are left alone.

    >>> def parse():
    ...     data = list(range(10))
    ...     raise ValueError("bad")
    >>> try:
    ...     parse()
    ... except ValueError as e:
    ...     err = detach(e)
    >>> err.__traceback__ is None, str(err)
    (True, 'bad')
    """
    seen = set()
    current = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if current.__traceback__ is not None:
            traceback.clear_frames(current.__traceback__)
            current.__traceback__ = None
        current = current.__cause__ or current.__context__
    return err


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Caps glibc's malloc arenas (before the threads that would create more start).

    Returns:
        True when set, False where the C library is not glibc.
    """
    libc = _libc()
    return bool(libc is not None and libc.mallopt(_M_ARENA_MAX, arenas))


class HeapTrimmer:
    """Returns freed heap memory to the kernel once requests of `min_bytes` or more are
    over and the server has been quiet for `quiet_seconds`.

    Args:
        min_bytes: requests with bodies at least this large ask for a trim.
        quiet_seconds: how long after the last such request to trim.
    """

    def __init__(self, min_bytes: int = 1 << 20, quiet_seconds: float = 0.25):
        self.min_bytes = min_bytes
        self.quiet_seconds = quiet_seconds
        self._libc = _libc()
        self._due = None
        self._wake = threading.Condition()
        self._closed = False
        self._thread = None
        if self._libc is not None:
            self._thread = threading.Thread(target=self._run, name="heap-trimmer", daemon=True)
            self._thread.start()

    def note(self, body_bytes: int) -> None:
        """Called after each request with its body size (an exception's or the answer's)."""
        if body_bytes < self.min_bytes or self._thread is None:
            return
        with self._wake:
            self._due = time.monotonic() + self.quiet_seconds
            self._wake.notify()

    def _run(self) -> None:
        with self._wake:
            while not self._closed:
                if self._due is None:
                    self._wake.wait()
                    continue
                left = self._due - time.monotonic()
                if left > 0:
                    self._wake.wait(left)
                    continue
                self._due = None
                self._wake.release()
                try:
                    self._libc.malloc_trim(0)
                finally:
                    self._wake.acquire()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)
