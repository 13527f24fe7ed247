"""Find a Java runtime of at least a given feature version (Kafka 4.1 needs 17, Apicurio 3.3 needs 21)."""
from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

from streams.launcher.errors import LauncherError

_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')


@functools.cache
def java_version(java: str) -> int | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = _VERSION.search(out)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2)) if major == 1 else major  # "1.8.0" -> 8


def candidates() -> list[str]:
    found: list[str] = []
    if os.environ.get("JAVA_HOME"):
        found.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    if shutil.which("java"):
        found.append(shutil.which("java"))
    found += sorted(glob.glob("/usr/lib/jvm/*/bin/java")) + sorted(glob.glob("/opt/*/bin/java"))
    return list(dict.fromkeys(p for p in found if os.access(p, os.X_OK)))


def find_java(min_version: int, purpose: str) -> str:
    """The first JDK (JAVA_HOME, PATH, /usr/lib/jvm) whose version is >= min_version."""
    seen = []
    for java in candidates():
        version = java_version(java)
        seen.append(f"{java} ({version or 'unknown'})")
        if version and version >= min_version:
            return java
    raise LauncherError(
        f"{purpose} needs Java {min_version} or newer, but none was found"
        + (f"; found: {', '.join(seen)}" if seen else " (no `java` on PATH, JAVA_HOME unset, nothing in /usr/lib/jvm)")
        + f". Install a JDK {min_version}+ (e.g. Debian openjdk-{min_version}-jdk-headless) or set JAVA_HOME."
    )
