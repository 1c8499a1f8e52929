#!/usr/bin/env bash
# Kawa's whole test suite with every set-up step: virtualenv and dependencies, system packages the tests use,
# Apache Kafka (resolved from Maven Central and started on loopback), Ceph (scripts/ceph.sh: mon, OSD, RGW),
# then ruff, mypy and pytest.
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

echo "== starting Ceph (mon, OSD, RGW)"
_ceph_started=$SECONDS
_ceph_env=$(bash scripts/ceph.sh start)
export KAWA_TEST_CEPH KAWA_TEST_CEPH_ACCESS_KEY KAWA_TEST_CEPH_SECRET_KEY
KAWA_TEST_CEPH=$(sed -n 's/^KAWA_TEST_CEPH=//p' <<<"$_ceph_env")
KAWA_TEST_CEPH_ACCESS_KEY=$(sed -n 's/^KAWA_TEST_CEPH_ACCESS_KEY=//p' <<<"$_ceph_env")
KAWA_TEST_CEPH_SECRET_KEY=$(sed -n 's/^KAWA_TEST_CEPH_SECRET_KEY=//p' <<<"$_ceph_env")
trap 'bash scripts/kafka.sh stop >/dev/null 2>&1 || true; bash scripts/ceph.sh stop >/dev/null 2>&1 || true' EXIT
echo "Ceph RGW at $KAWA_TEST_CEPH (started in $((SECONDS - _ceph_started)) s)"

echo "== pytest"
export PYTHONFAULTHANDLER=1  # a crash in a native library (librdkafka, numpy) prints every thread's stack
.venv/bin/python -m pytest "$@"
