"""``.aio``: the async twin of every public call, as modal's synchronicity wrappers give it.

A function wrapped here is called as before (blocking), and also as ``f.aio(...)``, which
runs the very same blocking code in a worker thread so that the event loop keeps running:
``asyncio.to_thread`` under asyncio, ``trio.to_thread.run_sync`` under trio (the running
library is told by ``sniffio``). Three shapes, by what the function returns:

- :class:`Blocking` — a value: ``await vol.listdir.aio("/")``;
- :class:`Iterating` — an iterator: ``async for e in vol.iterdir.aio("/")``; each step (or
  each batch of ``batch`` items) is one trip to a worker thread;
- :class:`Managing` — a context manager: ``with vol.batch_upload() as b``,
  ``async with vol.batch_upload() as b`` and ``async with vol.batch_upload.aio() as b``
  all work; the function runs when the block is entered, as modal's context managers do.
  A manager that has ``__aenter__`` of its own (``VolumeUploadContextManager``) is entered
  through it; any other is entered and left in a worker thread.

For methods, :func:`method`, :func:`iterating_method` and :func:`managing_method` are the
decorators (descriptors binding the instance); a static function is wrapped by the class
itself (``from_name = Blocking(_from_name)``, or ``@Blocking``).

Must not: import trio at import time (``import volfs`` stays free of it); run blocking code
on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

import sniffio

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
S = TypeVar("S")


async def run_sync(call: Callable[[], R]) -> R:
    """Runs ``call`` in a worker thread of the running async library; returns its result."""
    library = sniffio.current_async_library()
    if library == "trio":
        import trio  # lazy: only an async caller under trio has it loaded already

        return await trio.to_thread.run_sync(call)
    if library == "asyncio":
        return await asyncio.to_thread(call)
    raise RuntimeError(f"volfs: .aio runs under asyncio or trio, not {library}")


class Blocking(Generic[P, R]):
    """A blocking callable with an awaitable ``.aio`` twin."""

    def __init__(self, func: Callable[P, R]) -> None:
        self._func = func
        functools.update_wrapper(self, func)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._func(*args, **kwargs)

    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return await run_sync(functools.partial(self._func, *args, **kwargs))


class Iterating(Generic[P, T]):
    """A callable returning an iterator, with an ``.aio`` twin returning an async iterator."""

    def __init__(self, func: Callable[P, Iterator[T]], batch: int = 1) -> None:
        self._func = func
        self._batch = batch
        functools.update_wrapper(self, func)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        return self._func(*args, **kwargs)

    def aio(self, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
        return _ThreadedIterator(functools.partial(self._func, *args, **kwargs), self._batch)


class _ThreadedIterator(AsyncIterator[T]):
    """An iterator driven from a worker thread, ``batch`` items a trip. The blocking call
    itself also runs there, at the first step (errors surface at the first ``anext``, as
    in modal's async generators)."""

    def __init__(self, start: Callable[[], Iterator[T]], batch: int) -> None:
        self._start = start
        self._batch = batch
        self._it: Iterator[T] | None = None
        self._ready: deque[T] = deque()
        self._exhausted = False

    def _fill(self) -> None:
        if self._it is None:
            self._it = iter(self._start())
        for _ in range(self._batch):
            try:
                self._ready.append(next(self._it))
            except StopIteration:
                self._exhausted = True
                return

    def __aiter__(self) -> _ThreadedIterator[T]:
        return self

    async def __anext__(self) -> T:
        if not self._ready and not self._exhausted:
            await run_sync(self._fill)
        if not self._ready:
            raise StopAsyncIteration
        return self._ready.popleft()

    async def aclose(self) -> None:
        """Closes the underlying iterator (a generator's ``finally`` runs), in a thread."""
        close = getattr(self._it, "close", None)
        self._exhausted = True
        self._ready.clear()
        if close is not None:
            await run_sync(close)


class DualContextManager(AbstractContextManager[T], AbstractAsyncContextManager[T]):
    """A context manager made when its block is entered, usable by ``with`` or ``async with``."""

    def __init__(self, make: Callable[[], AbstractContextManager[T]]) -> None:
        self._make = make
        self._inner: AbstractContextManager[T] | None = None

    def __enter__(self) -> T:
        self._inner = self._make()
        return self._inner.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._inner is not None
        return self._inner.__exit__(exc_type, exc, tb)

    async def __aenter__(self) -> T:
        self._inner = await run_sync(self._make)
        if isinstance(self._inner, AbstractAsyncContextManager):
            return await self._inner.__aenter__()  # type: ignore[no-any-return]
        return await run_sync(self._inner.__enter__)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        inner = self._inner
        assert inner is not None
        if isinstance(inner, AbstractAsyncContextManager):
            return await inner.__aexit__(exc_type, exc, tb)  # type: ignore[no-any-return]
        return await run_sync(lambda: inner.__exit__(exc_type, exc, tb))


class Managing(Generic[P, T]):
    """A callable returning a context manager, usable by ``with`` and ``async with``, with an
    ``.aio`` twin (the same manager: ``async with f.aio(...)``)."""

    def __init__(self, func: Callable[P, AbstractContextManager[T]]) -> None:
        self._func = func
        functools.update_wrapper(self, func)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> DualContextManager[T]:
        return DualContextManager(functools.partial(self._func, *args, **kwargs))

    def aio(self, *args: P.args, **kwargs: P.kwargs) -> DualContextManager[T]:
        return DualContextManager(functools.partial(self._func, *args, **kwargs))


class _Method(Generic[S, P, R]):
    """The descriptor part: binds the instance, then wraps the bound call."""

    def __init__(self, func: Callable[Concatenate[S, P], R]) -> None:
        self._func = func
        functools.update_wrapper(self, func)

    def _bound(self, obj: S) -> Callable[P, R]:
        return functools.partial(self._func, obj)

    def __call__(self, obj: S, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._func(obj, *args, **kwargs)  # Volume.listdir(vol, "/"), unbound


class _BlockingMethod(_Method[S, P, R]):
    @overload
    def __get__(self, obj: None, owner: type[Any]) -> _BlockingMethod[S, P, R]: ...
    @overload
    def __get__(self, obj: S, owner: type[Any]) -> Blocking[P, R]: ...
    def __get__(self, obj: S | None, owner: type[Any]) -> Any:
        return self if obj is None else Blocking(self._bound(obj))


class _IteratingMethod(_Method[S, P, Iterator[T]]):
    def __init__(self, func: Callable[Concatenate[S, P], Iterator[T]], batch: int) -> None:
        super().__init__(func)
        self._batch = batch

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> _IteratingMethod[S, P, T]: ...
    @overload
    def __get__(self, obj: S, owner: type[Any]) -> Iterating[P, T]: ...
    def __get__(self, obj: S | None, owner: type[Any]) -> Any:
        return self if obj is None else Iterating(self._bound(obj), self._batch)


class _ManagingMethod(_Method[S, P, AbstractContextManager[T]]):
    @overload
    def __get__(self, obj: None, owner: type[Any]) -> _ManagingMethod[S, P, T]: ...
    @overload
    def __get__(self, obj: S, owner: type[Any]) -> Managing[P, T]: ...
    def __get__(self, obj: S | None, owner: type[Any]) -> Any:
        return self if obj is None else Managing(self._bound(obj))


def method(func: Callable[Concatenate[S, P], R]) -> _BlockingMethod[S, P, R]:
    """A method returning a value: ``obj.f(...)`` blocks, ``await obj.f.aio(...)`` does not."""
    return _BlockingMethod(func)


def iterating_method(
    batch: int = 1,
) -> Callable[[Callable[Concatenate[S, P], Iterator[T]]], _IteratingMethod[S, P, T]]:
    """A method returning an iterator; ``.aio`` gives an async iterator fetching ``batch``
    items per trip to a worker thread (many small entries: a batch; 1 MiB chunks: one)."""

    def wrap(func: Callable[Concatenate[S, P], Iterator[T]]) -> _IteratingMethod[S, P, T]:
        return _IteratingMethod(func, batch)

    return wrap


def managing_method(
    func: Callable[Concatenate[S, P], AbstractContextManager[T]],
) -> _ManagingMethod[S, P, T]:
    """A method returning a context manager, for ``with`` and ``async with`` (also ``.aio``)."""
    return _ManagingMethod(func)


__all__ = [
    "Blocking",
    "DualContextManager",
    "Iterating",
    "Managing",
    "iterating_method",
    "managing_method",
    "method",
    "run_sync",
]
