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

# Another run on this machine (a second clone, a developer's broker) may hold the default ports: take free ones.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_base() {  # a port P with P..P+$1 all free
  local span=$1 p q ok
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 40000)) ok=1
    for ((q = p; q <= p + span; q++)); do port_free "$q" || { ok=0; break; }; done
    [ "$ok" = 1 ] && { echo "$p"; return 0; }
  done
  echo "test.sh: found no free loopback ports" >&2
  return 1
}
if [ -z "${KAWA_KAFKA_PORT:-}" ] && ! { port_free 19092 && port_free 19093; }; then
  KAWA_KAFKA_PORT=$(free_base 1)
  export KAWA_KAFKA_PORT KAWA_KAFKA_CONTROLLER_PORT=$((KAWA_KAFKA_PORT + 1))
  echo "ports 19092/19093 are taken: Kafka goes on $KAWA_KAFKA_PORT/$KAWA_KAFKA_CONTROLLER_PORT"
fi
if [ -z "${KAWA_CEPH_PORT:-}" ] && ! { port_free 17480 && port_free 17481; }; then
  KAWA_CEPH_PORT=$(free_base 60)
  export KAWA_CEPH_PORT
  echo "port 17480 is taken: the Ceph RGW goes on $KAWA_CEPH_PORT (its daemons on the 60 ports above)"
fi

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

# pytest on KAWA_TEST_WORKERS pytest-xdist workers (default 2; 0 runs in-process, one test at a time). Every server
# but one is per worker (moto, PostgreSQL, the restartable Kafka broker) or never restarted (the shared Kafka broker:
# topics are unique per test). The exception is the Ceph RGW, which a Ceph fault test restarts, so the Ceph tests run
# after the others, one at a time (xdist's loadgroup does not keep them on one worker here; tests/conftest.py says
# why). Arguments given to this script make one pytest run with them instead, on the same workers.
WORKERS=${KAWA_TEST_WORKERS:-2}
export PYTHONFAULTHANDLER=1  # a crash in a native library (librdkafka, numpy) prints every thread's stack
if [ "$#" -gt 0 ]; then
  echo "== pytest ($WORKERS workers): $*"
  .venv/bin/python -m pytest -n "$WORKERS" "$@"
  exit
fi
echo "== pytest, all but Ceph ($WORKERS workers)"
status=0
.venv/bin/python -m pytest -n "$WORKERS" -m "not ceph" || status=$?
echo "== pytest, Ceph RGW tests (one at a time)"
.venv/bin/python -m pytest -n 0 -m ceph || status=$((status ? status : $?))
exit "$status"
