"""Resolve Kafka's jars and the Apicurio Registry distribution from Maven Central into a local cache.

deploy/local/pom.xml names the artefacts. A finished resolution leaves a ``.complete`` marker, so a second start
needs no network; a file lock keeps parallel starts (pytest-xdist, two terminals) from racing."""
from __future__ import annotations

import contextlib
import fcntl
import shutil
import subprocess
import tarfile
from pathlib import Path

from streams.config import PROJECT_ROOT
from streams.launcher.errors import LauncherError

POM = PROJECT_ROOT / "deploy" / "local" / "pom.xml"


@contextlib.contextmanager
def _locked(cache: Path):
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _mvn(*args: str) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LauncherError("Maven (`mvn`) is needed once to fetch Kafka/Apicurio jars; install Debian `maven`.")
    cmd = [mvn, "-q", "-B", "-f", str(POM), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise LauncherError(f"Maven failed ({' '.join(cmd[3:])}):\n{tail}")


def kafka_classpath(cache: Path, version: str) -> str:
    """`<cache>/kafka-<version>/lib/*`, resolving kafka_2.13 and its runtime dependencies on first use."""
    lib = cache / f"kafka-{version}" / "lib"
    marker = lib / ".complete"
    if not marker.exists():
        with _locked(cache):
            if not marker.exists():
                shutil.rmtree(lib, ignore_errors=True)
                _mvn("dependency:copy-dependencies", "-DincludeScope=runtime", f"-Dkafka.version={version}",
                     f"-DoutputDirectory={lib}")
                if not any(lib.glob(f"kafka_2.13-{version}.jar")):
                    raise LauncherError(f"Maven ran but {lib} has no kafka_2.13-{version}.jar")
                marker.touch()
    return f"{lib}/*"


def apicurio_home(cache: Path, version: str) -> Path:
    """Directory holding Apicurio's `quarkus-run.jar`, downloading and unpacking the distribution on first use."""
    home = cache / f"apicurio-{version}"
    marker = home / ".complete"
    if not marker.exists():
        with _locked(cache):
            if not marker.exists():
                downloads = cache / "downloads"
                _mvn("dependency:copy@apicurio", f"-Dapicurio.version={version}", f"-DoutputDirectory={downloads}")
                archive = downloads / f"apicurio-registry-app-{version}-all.tar.gz"
                if not archive.exists():
                    raise LauncherError(f"Maven ran but {archive} is missing")
                shutil.rmtree(home, ignore_errors=True)
                with tarfile.open(archive) as tar:
                    tar.extractall(home, filter="data")
                jar = next(home.rglob("quarkus-run.jar"), None)
                if jar is None:
                    raise LauncherError(f"{archive} has no quarkus-run.jar")
                archive.unlink()  # 150 MB we no longer need
                marker.write_text(str(jar.parent))
    return Path(marker.read_text())
