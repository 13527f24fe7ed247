"""Where each asyncio task of a running worker waits: ``kill -USR1 <pid>`` writes every task's whole await chain to
stderr (the worker's log).

asyncio's own ``Task.print_stack`` (and mode's SIGUSR1 dump, which uses it) shows a suspended task's outer
coroutine only: for a Faust agent, ``Agent._execute_actor`` at ``await coro``, which says nothing of where the agent
is. Here the chain is followed down through ``cr_await`` / ``ag_await`` / ``gi_yieldfrom`` (and from an
``async for``'s pending ``asend`` to its async generator) to what the innermost frame waits on."""
from __future__ import annotations

import asyncio
import faulthandler
import gc
import inspect
import signal
import sys
import traceback
from functools import partial
from typing import Callable, TextIO

MAX_DEPTH = 200


def _frame_of(obj):
    return getattr(obj, "cr_frame", None) or getattr(obj, "ag_frame", None) or getattr(obj, "gi_frame", None)


def _awaited_by(obj):
    """What a suspended coroutine, async generator or generator awaits, or None."""
    for name in ("cr_await", "ag_await", "gi_yieldfrom"):
        inner = getattr(obj, name, None)
        if inner is not None:
            return inner
    if type(obj).__name__ in ("async_generator_asend", "async_generator_athrow"):
        # a pending ``__anext__`` of an ``async for``: its generator is reachable only through the GC's referents
        return next((r for r in gc.get_referents(obj) if inspect.isasyncgen(r)), None)
    if type(obj).__name__ == "coroutine_wrapper":
        # ``await x`` where ``x.__await__`` returns a coroutine's (a Faust agent's actor): likewise
        return next((r for r in gc.get_referents(obj) if inspect.iscoroutine(r)), None)
    return None


def await_chain(coro) -> tuple[list, object]:
    """The frames from ``coro`` down its await chain, outermost first, and the object the innermost one waits on
    (a Future, a Task, or None when it is not suspended on anything)."""
    frames, obj, seen = [], coro, set()
    while obj is not None and id(obj) not in seen and len(frames) < MAX_DEPTH:
        seen.add(id(obj))
        frame, inner = _frame_of(obj), _awaited_by(obj)
        if frame is not None:
            frames.append(frame)
        elif inner is None:
            return frames, obj  # no frame and nothing further (a Future, or a finished coroutine): the leaf
        obj = inner
    return frames, obj


def format_tasks(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """Every task of ``loop`` (the running loop by default) with its await chain, one block each."""
    tasks = asyncio.all_tasks(loop)
    lines = [f"--- {len(tasks)} asyncio tasks, innermost call last ---"]
    for task in sorted(tasks, key=lambda t: t.get_name()):
        frames, leaf = await_chain(task.get_coro())
        lines.append(f"Task {task.get_name()} ({'done' if task.done() else 'pending'}): {task.get_coro()!r}")
        summary = traceback.StackSummary.extract(((f, f.f_lineno) for f in frames), limit=MAX_DEPTH,
                                                 lookup_lines=True)
        lines.extend(line.rstrip("\n") for line in summary.format())
        waiter = getattr(task, "_fut_waiter", None)  # the future itself (the chain ends in its iterator)
        if not task.done() and (waiter is not None or leaf is not None):
            lines.append(f"    waiting on {waiter if waiter is not None else leaf!r}"[:500])
    return "\n".join(lines) + "\n"


def dump_tasks(out: TextIO | None = None, report: Callable[[], str] | None = None) -> None:
    """Every task's chain, then ``report()`` (what else the process knows of where it stands)."""
    out = out or sys.__stderr__  # the process's own (mode puts a logging proxy without a file in sys.stderr)
    out.write(format_tasks())
    if report is not None:
        out.write(report())
    out.flush()


def install(loop: asyncio.AbstractEventLoop, report: Callable[[], str] | None = None) -> None:
    """``kill -USR1``: every thread's stack at once, from the signal handler itself (faulthandler), so a loop
    busy in one long call shows where; then every task's chain, from the loop as soon as it runs again. Replaces
    mode's SIGUSR1 dump, which stops at each agent's ``await coro``."""
    # a registration made before the loop ran (streams/cli.py) is dropped first: registered again, faulthandler
    # would keep the handler it saved then, and leave the loop's (installed since) in place of its own
    faulthandler.unregister(signal.SIGUSR1)
    loop.add_signal_handler(signal.SIGUSR1, partial(dump_tasks, report=report))
    # then the loop's handler above; to the process's stderr (a file descriptor: faulthandler writes from the
    # signal handler, and mode's sys.stderr is a logging proxy without one)
    faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True, chain=True)
