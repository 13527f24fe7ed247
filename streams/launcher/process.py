"""Small helpers shared by the broker and registry launchers: free ports, child processes, readiness waits."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import time
from functools import partial
from pathlib import Path
from typing import Callable

from streams.launcher.errors import LauncherError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def accepts(port: int) -> bool:
    """Something listens on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def require_free(port: int, what: str) -> int:
    if port_in_use(port):
        raise LauncherError(f"port {port} for {what} is in use on 127.0.0.1; stop whatever holds it or pick another port")
    return port


_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _terminate_with_parent(death_signal: int) -> None:
    """In the child, before exec: the kernel sends it ``death_signal`` when the process that started it dies,
    however it dies (even SIGKILL, which no handler sees). Runs after the child switched user, which would clear
    it."""
    _libc.prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)


def spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None,
          user: str | None = None, death_signal: int = signal.SIGTERM) -> subprocess.Popen:
    """Start a child in its own session (a Ctrl-C in the terminal reaches us, and we stop children in order) that
    dies with us: stopped by our ``finally`` blocks on SIGTERM/SIGINT, and by the kernel (``death_signal``) if we
    are killed. Call from the main thread: the kernel ties the child to the thread that started it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                cwd=cwd, start_new_session=True, user=user,
                                preexec_fn=partial(_terminate_with_parent, death_signal))


def log_tail(log: Path, lines: int = 25) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen, what: str, log: Path, timeout: float) -> float:
    """Poll ``ready`` until true; fail fast if the process dies. Returns seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise LauncherError(f"{what} exited with code {proc.returncode} while starting. Log {log}:\n{log_tail(log)}")
        try:
            if ready():
                return time.monotonic() - start
        except Exception:
            pass
        time.sleep(0.25)
    stop(proc, 5)
    raise LauncherError(f"{what} did not become ready within {timeout:.0f}s. Log {log}:\n{log_tail(log)}")


def stop(proc: subprocess.Popen | None, timeout: float = 20, sig: int = signal.SIGTERM) -> None:
    """``sig`` (a clean shutdown), then SIGKILL after ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def kill(proc: subprocess.Popen | None) -> None:
    """SIGKILL, as a crash would (reliability tests)."""
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
