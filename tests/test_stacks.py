"""The task dump behind ``kill -USR1``: each task's whole await chain, not only its outer coroutine."""
import asyncio
import io
import os
import signal

from streams import stacks


async def _source():
    while True:
        await asyncio.sleep(3600)
        yield 1


async def _agent_body():
    async for _ in _source():
        pass


async def _execute_actor(coro):  # as Faust's Agent._execute_actor: the outer frame asyncio's own dump stops at
    await coro


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


def test_sigusr1_writes_threads_and_tasks_once_installed(capfd):
    async def main():
        stacks.install(asyncio.get_running_loop())
        try:
            os.kill(os.getpid(), signal.SIGUSR1)
            await asyncio.sleep(0.1)
        finally:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)
    asyncio.run(main())
    err = capfd.readouterr().err
    assert "Current thread" in err and "asyncio tasks" in err and "in main" in err
