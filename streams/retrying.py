"""One retry policy for every transient outage (schema registry, warehouse database, alert webhook), from tenacity:
exponential backoff from ``first`` seconds, capped at ``cap``, with random jitter so that many workers and sinks
coming back together do not hit the recovering service in lock-step. Each retry is logged and may be counted."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, stop_never,
                      wait_exponential_jitter)

T = TypeVar("T")


def wait_policy(first: float, cap: float) -> wait_exponential_jitter:
    """first, 2·first, 4·first, … capped at ``cap``, each plus up to ``first`` seconds of random jitter."""
    return wait_exponential_jitter(multiplier=first, max=cap, exp_base=2, jitter=first)


def retrying(what: str, on: tuple[type[BaseException], ...], log: logging.Logger, *, first: float = 0.5,
             cap: float = 30.0, attempts: int | None = None,
             on_retry: Callable[[RetryCallState], None] | None = None) -> AsyncRetrying:
    """``async for attempt in retrying(...): with attempt: ...``; retries while the block raises one of ``on``,
    forever unless ``attempts`` is given (then the last error is raised)."""
    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        problem = str(error).splitlines()[0] if error is not None and str(error) else type(error).__name__
        log.warning("%s failed (%s); attempt %d, retrying in %.1fs", what, problem, state.attempt_number,
                    state.next_action.sleep if state.next_action else 0.0)
        if on_retry is not None:
            on_retry(state)

    return AsyncRetrying(retry=retry_if_exception_type(on), wait=wait_policy(first, cap),
                         stop=stop_never if attempts is None else stop_after_attempt(attempts),
                         before_sleep=before_sleep, reraise=True)


async def retried(call: Callable[[], Awaitable[T]], what: str, on: tuple[type[BaseException], ...],
                  log: logging.Logger, **policy) -> T:
    """``await call()``, retried per ``retrying(what, on, log, **policy)`` while it raises one of ``on``. The first
    attempt runs outside tenacity: each ``AsyncRetrying`` run is a nest of reference cycles (its retry state, the
    actions' closures: ~40 objects), garbage only the cyclic collector frees, and it outlives the awaited call long
    enough to reach the oldest generation: it was all the cyclic garbage the warehouse sink made, one nest per
    batch (2026-11-27: a census of full collections every 2 s). A first failure is handed to tenacity as its
    first attempt's outcome, so it is logged, counted and backed off exactly as before."""
    try:
        return await call()
    except on as exc:
        first: BaseException | None = exc
    async for attempt in retrying(what, on, log, **policy):
        with attempt:
            if first is not None:
                error, first = first, None
                raise error
            return await call()
    raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover
