#!/usr/bin/env bash
# `make demo-kafka`: the demo on a partitioned log instead of a folder (docs/scaling.md).
# A local Kafka broker (KRaft, one node, 127.0.0.1; the tests' jars from `make kafka-jars`),
# a 30-day history ending now published to an 8-partition topic, two exporter shards of one
# consumer group sharing a state folder, Prometheus scraping both as the exporter's job (the
# project's recording rules and alerts aggregate over shards and partitions), the analyst
# API over the folder, and the live simulator publishing to the topic. Ctrl-C stops all.
#
# Ports (all on 127.0.0.1) can be moved with KAFKA_PORT, CONTROLLER_PORT, SHARD1_PORT,
# SHARD2_PORT, API_PORT and PROM_PORT; KAFKA_LIBS is the broker's classpath folder.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-var/demo-kafka/data}
ITEMS=${2:-20000}
DAYS=${3:-30}
VAR=$(dirname "$DATA")
KPI=.venv/bin/kpi
PY=.venv/bin/python
KAFKA_LIBS=${KAFKA_LIBS:?set KAFKA_LIBS to the broker jars folder (make kafka-jars)}
KAFKA_PORT=${KAFKA_PORT:-9092}
CONTROLLER_PORT=${CONTROLLER_PORT:-9094}
SHARD1_PORT=${SHARD1_PORT:-9108}
SHARD2_PORT=${SHARD2_PORT:-9109}
API_PORT=${API_PORT:-8000}
PROM_PORT=${PROM_PORT:-9090}
LIVE_RATE=${LIVE_RATE:-50}
BOOTSTRAP=127.0.0.1:$KAFKA_PORT
TOPIC=postal.events
COMPLAINTS=postal.complaints
GROUP=postal-exporters
mkdir -p "$VAR"
pids=()
broker=""
# The clients leave first (the shards checkpoint and leave their group), the broker last:
# it runs in its own session, so a Ctrl-C on the terminal does not stop it under them.
cleanup() {
	trap - INT TERM EXIT
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	if [ -n "$broker" ]; then
		kill "$broker" 2>/dev/null || true
		wait "$broker" 2>/dev/null || true
	fi
}
trap cleanup INT TERM EXIT

wait_http() { # url, seconds
	for _ in $(seq 1 "$2"); do
		if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$1" 2>/dev/null; then return 0; fi
		sleep 1
	done
	echo "timed out waiting for $1" >&2
	return 1
}

echo "== starting a Kafka broker on $BOOTSTRAP (logs in $VAR/kafka/kafka.log)"
KDIR="$VAR/kafka"
rm -rf "$KDIR" "$VAR/shard-state" "$VAR/prometheus"
mkdir -p "$KDIR"
cat >"$KDIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$KDIR/logs
num.partitions=8
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
message.max.bytes=16777216
PROPS
printf 'Configuration:\n  Appenders:\n    Console:\n      name: STDOUT\n      PatternLayout:\n        pattern: "[%%d] %%p %%m (%%c)%%n"\n  Loggers:\n    Root:\n      level: WARN\n      AppenderRef:\n        - ref: STDOUT\n' >"$KDIR/log4j2.yaml"
JAVA=(java -Xmx512m -XX:+UseSerialGC -Djava.awt.headless=true "-Dlog4j2.configurationFile=$KDIR/log4j2.yaml" -cp "$KAFKA_LIBS/*")
# As Kafka's Uuid.randomUuid: never starting with "-", which the storage tool reads as an option.
CLUSTER_ID=$(python3 -c 'import base64, uuid
while (i := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"): pass
print(i)')
"${JAVA[@]}" kafka.tools.StorageTool format -t "$CLUSTER_ID" -c "$KDIR/server.properties" >"$KDIR/format.log" 2>&1
setsid "${JAVA[@]}" kafka.Kafka "$KDIR/server.properties" >"$KDIR/kafka.log" 2>&1 &
broker=$!
$PY - "$BOOTSTRAP" <<'WAIT'
import sys, time
from confluent_kafka.admin import AdminClient
admin = AdminClient({"bootstrap.servers": sys.argv[1], "log_level": 0})
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        if admin.list_topics(timeout=2).brokers:
            sys.exit(0)
    except Exception:
        time.sleep(0.5)
sys.exit("kafka broker not ready after 120 s")
WAIT

echo "== generating $ITEMS items over $DAYS days ending now into $DATA; publishing them to $TOPIC (8 partitions)"
rm -rf "$DATA"
$KPI simulate --out "$DATA" --items "$ITEMS" --days "$DAYS" --seed 1 --start now --quiet
$KPI publish "$DATA" --kafka "$BOOTSTRAP" --topic "$TOPIC" --complaints-topic "$COMPLAINTS" \
	--partitions 8 --quiet

echo "== two exporter shards of group $GROUP (:$SHARD1_PORT, :$SHARD2_PORT), state in $VAR/shard-state"
for port in "$SHARD1_PORT" "$SHARD2_PORT"; do
	$KPI exporter "$DATA" --kafka "$BOOTSTRAP" --topic "$TOPIC" --complaints-topic "$COMPLAINTS" \
		--group "$GROUP" --state "$VAR/shard-state" --listen "127.0.0.1:$port" \
		--refresh-interval 5s --checkpoint-interval 5s >"$VAR/shard-$port.log" 2>&1 &
	pids+=($!)
done

echo "== the analyst API on :$API_PORT, the live simulator publishing ~$LIVE_RATE events/s"
$KPI api "$DATA" --listen "127.0.0.1:$API_PORT" --database none >"$VAR/api.log" 2>&1 &
pids+=($!)
$KPI simulate --out "$DATA" --live --rate "$LIVE_RATE" --kafka "$BOOTSTRAP" --topic "$TOPIC" \
	>"$VAR/simulate-live.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$SHARD1_PORT/readyz" 120
wait_http "http://127.0.0.1:$SHARD2_PORT/readyz" 120
wait_http "http://127.0.0.1:$API_PORT/readyz" 120

prom_url=""
if command -v prometheus >/dev/null 2>&1; then
	# Both shards as the exporter's job: the project's rules run on them unchanged.
	PCONF="$VAR/prometheus-config"
	mkdir -p "$PCONF" "$VAR/prometheus"
	$PY -c 'import sys, yaml
from exporters.mixin.configs import shards_prometheus_config as config
yaml.safe_dump(config(sys.argv[1].split(","), sys.argv[2], sys.argv[3], interval="5s"), sys.stdout, sort_keys=False)' \
		"127.0.0.1:$SHARD1_PORT,127.0.0.1:$SHARD2_PORT" "127.0.0.1:$API_PORT" "127.0.0.1:$PROM_PORT" \
		>"$PCONF/prometheus.yml"
	cp prometheus/rules.yml "$PCONF/"
	sed -E 's/^( +for: ).*/\11m/' prometheus/alerts.yml >"$PCONF/alerts.yml"
	prometheus --config.file="$PCONF/prometheus.yml" --storage.tsdb.path="$VAR/prometheus" \
		--web.listen-address="127.0.0.1:$PROM_PORT" >"$VAR/prometheus.log" 2>&1 &
	pids+=($!)
	wait_http "http://127.0.0.1:$PROM_PORT/-/ready" 60 && prom_url=http://127.0.0.1:$PROM_PORT
fi

cat <<MSG

Postal KPI on Kafka is running (logs in $VAR/). Open:
  shard 1 metrics                  http://127.0.0.1:$SHARD1_PORT/metrics
  shard 2 metrics                  http://127.0.0.1:$SHARD2_PORT/metrics
  analyst API (history folder)     http://127.0.0.1:$API_PORT/docs
MSG
if [ -n "$prom_url" ]; then
	cat <<MSG
  events per partition             $prom_url/classic/graph?g0.expr=sum%20by(partition)(rate(postal_exporter_events_ingested_total%5B1m%5D))
  backlog over both shards         $prom_url/classic/graph?g0.expr=topk(5,sum%20by(facility)(postal_backlog_items))
  consumer lag                     $prom_url/classic/graph?g0.expr=postal_exporter_kafka_lag_messages
  kill a shard (kill PID of shard-$SHARD1_PORT) and watch the other take its partitions over
MSG
else
	echo "  (install Debian's prometheus to scrape the shards: make system-deps)"
fi
echo
echo "Press Ctrl-C to stop."
echo "demo-kafka ready"
wait -n "${pids[@]}" "$broker" || true
echo "a demo process stopped; see $VAR/*.log" >&2
