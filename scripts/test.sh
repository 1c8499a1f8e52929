#!/usr/bin/env bash
# Kawa's whole test suite with every set-up step: virtualenv and dependencies, system packages the tests use,
# Apache Kafka (resolved from Maven Central and started on loopback), then ruff, mypy and pytest.
# moto_server and other servers are started by session fixtures. Extra arguments go to pytest.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

bash scripts/setup.sh
# shellcheck disable=SC1091
source scripts/system-deps.sh

echo "== lint: ruff, mypy"
.venv/bin/ruff check src tests bench
.venv/bin/mypy

echo "== starting Apache Kafka"
KAWA_TEST_KAFKA=$(bash scripts/kafka.sh start | sed -n 's/^KAWA_TEST_KAFKA=//p')
export KAWA_TEST_KAFKA
trap 'bash scripts/kafka.sh stop >/dev/null 2>&1 || true' EXIT
echo "Kafka at $KAWA_TEST_KAFKA"

echo "== pytest"
export PYTHONFAULTHANDLER=1  # a crash in a native library (librdkafka, numpy) prints every thread's stack
.venv/bin/python -m pytest "$@"
