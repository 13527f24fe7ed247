"""The task dump behind ``kill -USR1``: each task's whole await chain, not only its outer coroutine."""
import asyncio
import faulthandler
import io
import os
import signal
import subprocess
import sys
import time

from streams import stacks


async def _source():
    while True:
        await asyncio.sleep(3600)
        yield 1


async def _agent_body():
    async for _ in _source():
        pass


class _Actor:  # as Faust's AwaitableActor: awaiting it awaits the agent's coroutine through ``__await__``
    def __init__(self, coro):
        self.coro = coro

    def __await__(self):
        return self.coro.__await__()


async def _execute_actor(coro):  # as Faust's Agent._execute_actor: the outer frame asyncio's own dump stops at
    await _Actor(coro)


def test_the_dump_follows_a_task_down_to_what_its_innermost_frame_waits_on():
    async def main():
        task = asyncio.create_task(_execute_actor(_agent_body()), name="agent-task")
        await asyncio.sleep(0.05)
        text = stacks.format_tasks()
        task.cancel()
        return text
    text = asyncio.run(main())
    block = text.split("Task agent-task")[1].split("\nTask ")[0]
    names = [n for n in ("_execute_actor", "_agent_body", "_source", "sleep") if f"in {n}" in block]
    assert names == ["_execute_actor", "_agent_body", "_source", "sleep"], block
    assert "waiting on <Future pending" in block


def _busy(seconds: float) -> None:  # a loop stuck in one long call
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


def test_sigusr1_shows_a_busy_loop_where_it_is_then_every_task_once_it_runs_again(capfd, monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # as mode's logging proxy in a worker: no file descriptor
    faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)  # as streams/cli.py, before the loop
    async def main():
        stacks.install(asyncio.get_running_loop())
        try:
            # from another process, as an operator would (a thread of ours that sent it and exited could race
            # the dump of every thread)
            subprocess.Popen(["sh", "-c", f"sleep 0.1; kill -USR1 {os.getpid()}"])
            _busy(1.0)
            threads = capfd.readouterr().err  # written from the signal handler while the loop was busy
            await asyncio.sleep(0.1)
            return threads, capfd.readouterr().err
        finally:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)
            faulthandler.unregister(signal.SIGUSR1)
    threads, tasks = asyncio.run(main())
    assert "Current thread" in threads and "in _busy" in threads
    assert "asyncio tasks" in tasks and "in main" in tasks
