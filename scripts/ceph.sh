#!/usr/bin/env bash
# A single-node Ceph cluster on loopback (Debian's packages, Ceph 16.2 Pacific) with the RADOS Gateway (S3 API
# and its bucket notifications), for Kawa's tests and benchmark.
#
#   scripts/ceph.sh start        install the Debian packages when missing, start a fresh cluster (one monitor,
#                                one OSD on memstore, no manager: S3 does not need one), the RGW and an S3 user;
#                                wait until the RGW answers; prints KAWA_TEST_CEPH=http://127.0.0.1:PORT and the
#                                keys (KAWA_TEST_CEPH_ACCESS_KEY=…, KAWA_TEST_CEPH_SECRET_KEY=…) on stdout
#   scripts/ceph.sh stop         stop every daemon (SIGTERM, then SIGKILL) and remove the cluster's directory
#   scripts/ceph.sh status       exit 0 and print the endpoint when the RGW runs, exit 3 otherwise
#   scripts/ceph.sh restart-rgw  a crash and a recovery of the gateway only: SIGKILL radosgw, start it again on
#                                the same cluster (RADOS keeps buckets, objects and persistent notification
#                                queues) and wait until it answers; prints the endpoint like `start`
#   scripts/ceph.sh user UID     a second S3 user UID on the running cluster (created once, keys UID-key and
#                                UID-secret); prints KAWA_CEPH_USER_ACCESS_KEY=… and KAWA_CEPH_USER_SECRET_KEY=…
#
# Environment (all optional):
#   KAWA_CEPH_DIR          where the cluster lives (default ${KAWA_CACHE_DIR:-<repo>/.cache}/ceph)
#   KAWA_CEPH_PORT         RGW port (default 17480); the monitor listens on PORT+1, the OSD on PORT+10..PORT+60
#   KAWA_CEPH_ACCESS_KEY   the S3 user's access key (default kawa-test)
#   KAWA_CEPH_SECRET_KEY   its secret key (default kawa-test-secret)
#   KAWA_CEPH_MEMSTORE_MB  the OSD's memstore size in MiB (default 1024; objects live in the OSD's memory)
#   KAWA_CEPH_START_TIMEOUT  seconds to wait for each daemon (default 90)
#
# `start` is idempotent: when the RGW of this directory already answers, it prints its endpoint and leaves it.
# The OSD keeps objects in memory (memstore): the data survives RGW restarts, not a cluster stop.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HOST=127.0.0.1
PORT=${KAWA_CEPH_PORT:-17480}
MON_PORT=$((PORT + 1))
BASE=${KAWA_CEPH_DIR:-${KAWA_CACHE_DIR:-$ROOT/.cache}/ceph}
RUN="$BASE/run"
CONF="$RUN/ceph.conf"
ACCESS_KEY=${KAWA_CEPH_ACCESS_KEY:-kawa-test}
SECRET_KEY=${KAWA_CEPH_SECRET_KEY:-kawa-test-secret}
MEMSTORE_MB=${KAWA_CEPH_MEMSTORE_MB:-1024}
START_TIMEOUT=${KAWA_CEPH_START_TIMEOUT:-90}
ENDPOINT="http://$HOST:$PORT"
PACKAGES=(ceph-mon ceph-osd radosgw ceph-common)

say() { echo "ceph.sh: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
now_ms() { date +%s%3N; }

install_packages() {
  local missing=()
  command -v ceph-mon >/dev/null || missing+=(ceph-mon)
  command -v ceph-osd >/dev/null || missing+=(ceph-osd)
  command -v radosgw >/dev/null || missing+=(radosgw)
  command -v ceph-authtool >/dev/null || missing+=(ceph-common)
  [ ${#missing[@]} -eq 0 ] && return
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  say "installing Debian packages ${PACKAGES[*]} (once) ..."
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
}

pid_of() {  # the PID of daemon $1 (mon, osd, rgw) of this cluster, or nothing
  local file="$RUN/$1.pid" pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -F "$CONF" >/dev/null; then
    echo "$pid"
  fi
}

rgw_answers() {  # an anonymous ListBuckets is answered with S3's XML
  curl -s -m 3 "$ENDPOINT/" 2>/dev/null | grep "ListAllMyBucketsResult" >/dev/null
}

log_tail() {
  local f
  for f in "$RUN"/log/*.log; do
    [ -f "$f" ] || continue
    say "---- last lines of $f ----"
    tail -n 25 "$f" >&2 || true
  done
}

wait_for() {  # wait_for DESCRIPTION DAEMON COMMAND...
  local what=$1 daemon=$2 deadline=$((SECONDS + START_TIMEOUT))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ -n "$daemon" ] && [ -z "$(pid_of "$daemon")" ]; then
      log_tail
      die "$daemon exited while waiting for $what"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log_tail
      die "timed out after ${START_TIMEOUT}s waiting for $what"
    fi
    sleep 0.2
  done
}

ceph_cli() { timeout 20 ceph -c "$CONF" "$@"; }

write_conf() {
  cat >"$CONF" <<EOF
# Written by scripts/ceph.sh: one monitor, one memstore OSD and one RGW on loopback, for tests.
[global]
fsid = $1
mon host = v2:$HOST:$MON_PORT
public addr = $HOST
ms bind ipv4 = true
ms bind ipv6 = false
ms bind port min = $((PORT + 10))
ms bind port max = $((PORT + 60))
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $RUN/\$cluster.\$name.keyring
log file = $RUN/log/\$name.log
admin socket = $RUN/\$name.asok
pid file = $RUN/\$name.daemon.pid
run dir = $RUN
debug ms = 0
# One OSD: pools of size 1 with few placement groups, no host-level spreading.
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
[mon]
mon data = $RUN/mon
mon cluster log file = $RUN/log/cluster.log
[osd]
osd data = $RUN/osd
osd objectstore = memstore
memstore device bytes = $((MEMSTORE_MB * 1024 * 1024))
osd memory target = 536870912
osd op num shards = 1
osd op num threads per shard = 2
[client.rgw.kawa]
rgw frontends = beast endpoint=$HOST:$PORT
rgw enable apis = s3, s3website, admin, sts, iam, notifications
rgw dns name = $HOST
rgw thread pool size = 64
rgw data = $RUN/rgw
rgw enable usage log = false
EOF
}

start_rgw() {
  local started
  started=$(now_ms)
  mkdir -p "$RUN/rgw"
  setsid radosgw -c "$CONF" -n client.rgw.kawa -f >>"$RUN/log/rgw.out" 2>&1 </dev/null &
  echo $! >"$RUN/rgw.pid"
  wait_for "the RGW at $ENDPOINT" rgw rgw_answers
  say "RGW ready after $(( $(now_ms) - started )) ms (pid $(pid_of rgw))"
}

print_endpoint() {
  echo "KAWA_TEST_CEPH=$ENDPOINT"
  echo "KAWA_TEST_CEPH_ACCESS_KEY=$ACCESS_KEY"
  echo "KAWA_TEST_CEPH_SECRET_KEY=$SECRET_KEY"
}

memory_report() {
  local d pid rss total=0 line=""
  for d in mon osd rgw; do
    pid=$(pid_of "$d")
    [ -n "$pid" ] || continue
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    total=$((total + rss))
    line="$line $d=$((rss / 1024))MiB"
  done
  say "resident memory:$line total=$((total / 1024))MiB"
}

start() {
  if [ -n "$(pid_of rgw)" ] && rgw_answers; then
    say "already running ($ENDPOINT)"
    print_endpoint
    return
  fi
  install_packages
  stop >/dev/null 2>&1 || true
  if port_open "$PORT" || port_open "$MON_PORT"; then
    die "port $PORT or $MON_PORT on $HOST is taken by another process; set KAWA_CEPH_PORT"
  fi
  local t0 fsid osd_uuid osd_id
  t0=$(now_ms)
  rm -rf "$RUN"
  mkdir -p "$RUN/log" "$RUN/mon" "$RUN/osd"
  fsid=$(cat /proc/sys/kernel/random/uuid)
  write_conf "$fsid"
  # Keys: the monitor's, the admin's (also in the monitor's keyring, so the first `ceph` call is allowed).
  ceph-authtool --create-keyring "$RUN/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool --create-keyring "$RUN/ceph.client.admin.keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
  ceph-authtool "$RUN/mon.keyring" --import-keyring "$RUN/ceph.client.admin.keyring" >/dev/null
  monmaptool --create --addv a "[v2:$HOST:$MON_PORT]" --fsid "$fsid" "$RUN/monmap" >/dev/null
  ceph-mon -c "$CONF" --mkfs -i a --monmap "$RUN/monmap" --keyring "$RUN/mon.keyring" >>"$RUN/log/setup.out" 2>&1 \
    || { tail -n 20 "$RUN/log/setup.out" >&2; die "ceph-mon --mkfs failed"; }
  cp "$RUN/mon.keyring" "$RUN/mon/keyring"
  setsid ceph-mon -c "$CONF" -i a -f >>"$RUN/log/mon.out" 2>&1 </dev/null &
  echo $! >"$RUN/mon.pid"
  wait_for "the monitor on $HOST:$MON_PORT" mon ceph_cli -s
  say "monitor ready after $(( $(now_ms) - t0 )) ms"
  # The OSD: register it, make its memstore and key, start it.
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)
  osd_id=$(ceph_cli osd new "$osd_uuid")
  [ "$osd_id" = 0 ] || die "expected OSD id 0, got '$osd_id'"
  ceph-osd -c "$CONF" --no-mon-config -i 0 --mkfs --mkkey --osd-uuid "$osd_uuid" --keyring "$RUN/osd/keyring" \
    >>"$RUN/log/setup.out" 2>&1 || { tail -n 20 "$RUN/log/setup.out" >&2; die "ceph-osd --mkfs failed"; }
  ceph_cli auth add osd.0 osd 'allow *' mon 'allow profile osd' -i "$RUN/osd/keyring" >/dev/null 2>&1
  setsid ceph-osd -c "$CONF" -i 0 --keyring "$RUN/osd/keyring" -f >>"$RUN/log/osd.out" 2>&1 </dev/null &
  echo $! >"$RUN/osd.pid"
  wait_for "the OSD to be up" osd sh -c "ceph -c '$CONF' osd stat 2>/dev/null | grep '1 up' >/dev/null"
  say "OSD ready after $(( $(now_ms) - t0 )) ms"
  # The gateway: its key, then the daemon (it creates its pools), then the S3 user.
  ceph_cli auth get-or-create client.rgw.kawa mon 'allow rw' osd 'allow rwx' \
    >"$RUN/ceph.client.rgw.kawa.keyring"
  start_rgw
  timeout 60 radosgw-admin -c "$CONF" user create --uid kawa --display-name "Kawa tests" \
    --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" >>"$RUN/log/setup.out" 2>&1 \
    || { tail -n 20 "$RUN/log/setup.out" >&2; die "radosgw-admin user create failed"; }
  say "cluster ready after $(( $(now_ms) - t0 )) ms: $ENDPOINT (ceph $(ceph-osd --version | awk '{print $3}'))"
  memory_report
  print_endpoint
}

user() {
  local uid=${1:-}
  [[ "$uid" =~ ^[a-z][a-z0-9-]{0,30}$ ]] || die "usage: scripts/ceph.sh user UID (lower-case letters, digits, dashes)"
  [ -n "$(pid_of rgw)" ] || die "no RGW runs in $RUN; use: scripts/ceph.sh start"
  if ! timeout 60 radosgw-admin -c "$CONF" user info --uid "$uid" >/dev/null 2>&1; then
    timeout 60 radosgw-admin -c "$CONF" user create --uid "$uid" --display-name "$uid" \
      --access-key "$uid-key" --secret-key "$uid-secret" >>"$RUN/log/setup.out" 2>&1 \
      || { tail -n 20 "$RUN/log/setup.out" >&2; die "radosgw-admin user create --uid $uid failed"; }
  fi
  echo "KAWA_CEPH_USER_ACCESS_KEY=$uid-key"
  echo "KAWA_CEPH_USER_SECRET_KEY=$uid-secret"
}

restart_rgw() {
  local pid
  pid=$(pid_of rgw)
  [ -n "$(pid_of osd)" ] || die "no cluster runs in $RUN; use: scripts/ceph.sh start"
  if [ -n "$pid" ]; then
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    say "killed the RGW (pid $pid, SIGKILL)"
  fi
  local i
  for i in $(seq 1 100); do port_open "$PORT" || break; sleep 0.1; done
  start_rgw
  print_endpoint
}

stop_daemon() {
  local pid i
  pid=$(pid_of "$1")
  [ -n "$pid" ] || { rm -f "$RUN/$1.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$RUN/$1.pid"
  say "stopped $1 (pid $pid)"
}

stop() {
  stop_daemon rgw
  stop_daemon osd
  stop_daemon mon
  rm -rf "$RUN"
}

status() {
  if [ -n "$(pid_of rgw)" ] && rgw_answers; then
    echo "running mon=$(pid_of mon) osd=$(pid_of osd) rgw=$(pid_of rgw) KAWA_TEST_CEPH=$ENDPOINT"
    memory_report
  else
    echo "not running"
    exit 3
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  restart-rgw) restart_rgw ;;
  user) user "${2:-}" ;;
  *) echo "usage: $0 start|stop|status|restart-rgw|user UID" >&2; exit 2 ;;
esac
