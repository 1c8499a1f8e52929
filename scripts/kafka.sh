#!/usr/bin/env bash
# A single-node Apache Kafka (KRaft: broker and controller in one JVM) on loopback, for Kawa's tests and
# benchmark.
#
#   scripts/kafka.sh start    resolve the broker jars (Maven Central, once), start a fresh broker, wait until
#                             it answers a metadata request; prints KAWA_TEST_KAFKA=127.0.0.1:PORT on stdout
#   scripts/kafka.sh stop     stop it (SIGTERM, then SIGKILL after a grace period)
#   scripts/kafka.sh status   exit 0 and print the address when it runs, exit 3 otherwise
#   scripts/kafka.sh kill     crash it: SIGKILL the broker JVM, keep its data directory
#   scripts/kafka.sh restart  a crash and a recovery: SIGKILL the broker (when it runs), then start it again on
#                             the SAME data directory (no new format) and wait until it answers; prints the
#                             address like `start`. With no data directory yet it is a fresh `start`.
#
# Environment (all optional):
#   KAWA_KAFKA_DIR            where jars and the running broker live (default ${KAWA_CACHE_DIR:-<repo>/.cache}/kafka)
#   KAWA_KAFKA_LIBS           an already resolved jar directory to use (default <KAWA_KAFKA_DIR>/libs-4.1.0), so a
#                             second broker beside the test broker needs no second Maven resolution
#   KAWA_KAFKA_PORT           client port (default 19092)
#   KAWA_KAFKA_CONTROLLER_PORT  KRaft controller port (default 19093)
#   KAWA_KAFKA_HEAP           JVM heap (default 512m)
#   KAWA_KAFKA_START_TIMEOUT  seconds to wait for the broker (default 90)
#   KAWA_KAFKA_LOG_LEVEL      broker log level in <run>/logs/server.log (default WARN)
#   KAWA_PYTHON               a python with confluent-kafka for the readiness probe (default <repo>/.venv/bin/python)
#
# `start` is idempotent: when a healthy broker started by this script already runs, it prints its address and
# leaves it alone. Every fresh `start` formats a new, empty data directory; only `restart` reuses one.
# A second broker runs beside the test broker with its own KAWA_KAFKA_PORT, KAWA_KAFKA_CONTROLLER_PORT and
# KAWA_KAFKA_DIR (each command acts only on the broker of its KAWA_KAFKA_DIR).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
POM="$ROOT/scripts/kafka/pom.xml"
KAFKA_VERSION=4.1.0
DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1
HOST=127.0.0.1
PORT=${KAWA_KAFKA_PORT:-19092}
CONTROLLER_PORT=${KAWA_KAFKA_CONTROLLER_PORT:-19093}
HEAP=${KAWA_KAFKA_HEAP:-512m}
START_TIMEOUT=${KAWA_KAFKA_START_TIMEOUT:-90}
LOG_LEVEL=${KAWA_KAFKA_LOG_LEVEL:-WARN}
BASE=${KAWA_KAFKA_DIR:-${KAWA_CACHE_DIR:-$ROOT/.cache}/kafka}
LIBS=${KAWA_KAFKA_LIBS:-$BASE/libs-$KAFKA_VERSION}
RUN="$BASE/run"
PIDFILE="$RUN/kafka.pid"
ADDRESS="$HOST:$PORT"

say() { echo "kafka.sh: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

pom_digest() { sha256sum "$POM" | cut -d' ' -f1; }

resolve_jars() {
  local stamp="$LIBS/.resolved"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(pom_digest)" ]; then
    return
  fi
  command -v mvn >/dev/null || die "Maven (mvn) is not installed; install it (apt-get install maven) to fetch Apache Kafka"
  say "resolving Apache Kafka $KAFKA_VERSION jars from Maven Central into $LIBS (once) ..."
  local tmp="$LIBS.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  if ! mvn -q -B -f "$POM" "$DEPENDENCY_PLUGIN:copy-dependencies" -DincludeScope=runtime \
      -DoutputDirectory="$tmp" >"$tmp.mvn.log" 2>&1; then
    tail -n 40 "$tmp.mvn.log" >&2
    rm -rf "$tmp"
    die "Maven could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION (is Maven Central reachable?)"
  fi
  rm -f "$tmp.mvn.log"
  ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "Maven returned no kafka_2.13 jar; see $POM"
  pom_digest >"$tmp/.resolved"
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS"
}

# The PID of our running broker, or nothing. A PID file whose process is gone or is not our broker is stale.
running_pid() {
  [ -f "$PIDFILE" ] || return 0
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
      && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -F "kafka.Kafka $RUN/server.properties" >/dev/null; then
    echo "$pid"
  fi
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

probe_python() {
  local py
  for py in "${KAWA_PYTHON:-}" "$ROOT/.venv/bin/python" python3; do
    if [ -n "$py" ] && command -v "$py" >/dev/null 2>&1 && "$py" -c "import confluent_kafka" 2>/dev/null; then
      echo "$py"
      return
    fi
  done
}

# A metadata request that lists at least one broker: the node is up as broker and controller.
metadata_ok() {
  local py
  py=$(probe_python)
  if [ -n "$py" ]; then
    "$py" - "$ADDRESS" 2>/dev/null <<'EOF'
import sys
from confluent_kafka.admin import AdminClient
admin = AdminClient({"bootstrap.servers": sys.argv[1], "log_level": 0})
try:
    metadata = admin.list_topics(timeout=3)
except Exception:
    sys.exit(1)
sys.exit(0 if metadata.brokers else 1)
EOF
  else
    # No confluent-kafka here: fall back to the broker's own "started" line.
    grep -q "Kafka Server started" "$RUN/logs/server.log" 2>/dev/null
  fi
}

# A Kafka Uuid: 16 random bytes, URL-safe base64 without padding, not starting with '-' (as Uuid.randomUuid).
new_cluster_id() {
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22)
    [ "${id:0:1}" != "-" ] && break
  done
  echo "$id"
}

log_tail() {
  say "---- last lines of $RUN/logs/server.log ----"
  tail -n 60 "$RUN/logs/server.log" >&2 2>/dev/null || true
  say "---- last lines of $RUN/broker.out ----"
  tail -n 30 "$RUN/broker.out" >&2 2>/dev/null || true
}

write_configs() {
  mkdir -p "$RUN/data" "$RUN/logs"
  cat >"$RUN/log4j2.properties" <<EOF
# Written by scripts/kafka.sh: quiet broker logs to a file.
status = error
name = kawa-test-kafka
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $RUN/logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = $LOG_LEVEL
rootLogger.appenderRef.file.ref = FILE
# The one INFO line that says the broker is up.
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
EOF
  cat >"$RUN/server.properties" <<EOF
# Written by scripts/kafka.sh: one KRaft node for tests, bound to loopback.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$RUN/data
num.network.threads=2
num.io.threads=4
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
delete.topic.enable=true
# Internal topics for a single node, small so the first group join is quick.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Test-friendly timings: groups form at once, short sessions allowed.
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
# A broker restarted after a crash re-registers once its old session expires (default 9 s): shorter, but
# long enough that a busy machine stalling the JVM does not fence the only broker.
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=1000
# Retention and compaction run soon after start and often.
log.initial.task.delay.ms=500
log.retention.check.interval.ms=1000
log.segment.delete.delay.ms=1000
log.cleaner.enable=true
log.cleaner.threads=1
log.cleaner.backoff.ms=500
log.cleaner.dedupe.buffer.size=16777216
EOF
}

start() {
  local pid
  pid=$(running_pid)
  if [ -n "$pid" ]; then
    if metadata_ok; then
      say "already running (pid $pid)"
      echo "KAWA_TEST_KAFKA=$ADDRESS"
      return
    fi
    say "broker pid $pid does not answer; restarting it"
    stop
  fi
  preflight
  rm -rf "$RUN"
  write_configs
  local cluster_id
  cluster_id=$(new_cluster_id)
  if ! java -Xmx256m -Dlog4j2.configurationFile="$RUN/log4j2.properties" -cp "$LIBS/*" \
      kafka.tools.StorageTool format --config "$RUN/server.properties" --cluster-id "$cluster_id" \
      >>"$RUN/broker.out" 2>&1; then
    log_tail
    die "formatting the Kafka storage in $RUN/data failed"
  fi
  launch
}

# Java, free ports and the jars: what every start needs.
preflight() {
  command -v java >/dev/null || die "java is not installed; Apache Kafka $KAFKA_VERSION needs a JDK 17+"
  if port_open "$PORT" || port_open "$CONTROLLER_PORT"; then
    die "port $PORT or $CONTROLLER_PORT on $HOST is taken by another process; set KAWA_KAFKA_PORT / KAWA_KAFKA_CONTROLLER_PORT"
  fi
  resolve_jars
}

# Start the broker JVM on the formatted $RUN/data and wait until it answers a metadata request.
launch() {
  local pid
  say "starting Apache Kafka $KAFKA_VERSION on $ADDRESS (controller $CONTROLLER_PORT, data $RUN/data)"
  # setsid: its own session, so a Ctrl-C in the starting terminal does not reach it; stop it by PID.
  setsid java "-Xmx$HEAP" "-Xms128m" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$RUN/log4j2.properties" -Dkafka.logs.dir="$RUN/logs" \
    -cp "$LIBS/*" kafka.Kafka "$RUN/server.properties" >>"$RUN/broker.out" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  pid=$(cat "$PIDFILE")
  local started=$SECONDS
  local deadline=$((SECONDS + START_TIMEOUT))
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log_tail
      die "the broker (pid $pid) exited during start-up"
    fi
    if port_open "$PORT" && metadata_ok; then
      break
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log_tail
      stop || true
      die "the broker did not answer a metadata request on $ADDRESS within ${START_TIMEOUT}s"
    fi
    sleep 0.5
  done
  say "ready after $((SECONDS - started))s (pid $pid)"
  echo "KAWA_TEST_KAFKA=$ADDRESS"
}

# SIGKILL, as a crash: no controlled shutdown, the data directory stays as the JVM left it.
kill_broker() {
  local pid i
  pid=$(running_pid)
  if [ -z "$pid" ]; then
    say "not running"
    return
  fi
  kill -KILL "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && die "pid $pid survived SIGKILL for 10s"
  # The ports are free once the kernel has closed the dead JVM's sockets.
  for i in $(seq 1 100); do
    port_open "$PORT" || port_open "$CONTROLLER_PORT" || break
    sleep 0.1
  done
  rm -f "$PIDFILE"
  say "killed (pid $pid, SIGKILL); data kept in $RUN/data"
}

# Kill (when running) and start again on the same data: the broker recovers its log as after a crash.
restart() {
  kill_broker
  if [ ! -f "$RUN/data/meta.properties" ]; then
    say "no formatted data directory in $RUN/data; starting a fresh broker"
    start
    return
  fi
  preflight
  write_configs
  launch
}

stop() {
  local pid
  pid=$(running_pid)
  if [ -z "$pid" ]; then
    rm -f "$PIDFILE"
    say "not running"
    return
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for i in $(seq 1 100); do  # 20 s for a controlled shutdown
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "pid $pid ignored SIGTERM for 20s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  rm -f "$PIDFILE"
  say "stopped (pid $pid)"
}

status() {
  local pid
  pid=$(running_pid)
  if [ -n "$pid" ]; then
    echo "running pid $pid KAWA_TEST_KAFKA=$ADDRESS"
  else
    echo "not running"
    exit 3
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  kill) kill_broker ;;
  restart) restart ;;
  *) echo "usage: $0 start|stop|status|kill|restart" >&2; exit 2 ;;
esac
