#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine (Debian + Python 3.11 + JDK), idempotently:
#   bash scripts/bootstrap.sh run    -> Maven, kcat, the Python venv, the Kafka/Apicurio jars
#   bash scripts/bootstrap.sh test   -> the same plus PostgreSQL, Prometheus/Alertmanager (promtool, amtool), Chromium
set -euo pipefail
profile="${1:-run}"
cd "$(dirname "$0")/.."

say() { printf '\033[1;34m==>\033[0m %s\n' "$*"; }

pkgs=()
command -v mvn >/dev/null || pkgs+=(maven)
command -v kcat >/dev/null || pkgs+=(kcat)
command -v java >/dev/null || pkgs+=(openjdk-17-jre-headless)
if [ "$profile" = test ]; then
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || pkgs+=(postgresql)
  command -v promtool >/dev/null || pkgs+=(prometheus)
  command -v amtool >/dev/null || pkgs+=(prometheus-alertmanager)
  command -v stress-ng >/dev/null || pkgs+=(stress-ng)                # mixed CPU/disk load beside the drills
  command -v chromium >/dev/null || pkgs+=(chromium)                  # the live page in a real browser
  command -v chromedriver >/dev/null || pkgs+=(chromium-driver)
fi
if [ ${#pkgs[@]} -gt 0 ]; then
  say "installing Debian packages: ${pkgs[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  say "installing Python dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  rm -f .venv/.installed-*; touch "$stamp"
fi

say "resolving Kafka and Apicurio Registry jars (cached after the first time)"
.venv/bin/jamsostek fetch
