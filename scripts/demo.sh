#!/usr/bin/env bash
# The demo: a 30-day peak-season history ending now plus a live feed, the service
# (exporter + API) on 127.0.0.1, and - when installed - Debian's Prometheus and
# Alertmanager with the project's rules, so the scenario's alerts go pending and fire.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-var/demo}
ITEMS=${2:-50000}
DAYS=${3:-30}
VAR=$(dirname "$DATA")
STATE="$VAR/demo-state"
KPI=.venv/bin/kpi
# 15-minute steps keep the demo's backfill to a few minutes on a laptop (5 m is the default).
BACKFILL_STEP=${BACKFILL_STEP:-15m}
mkdir -p "$VAR"
pids=()
cleanup() {
	trap - INT TERM EXIT
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
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

echo "== generating $ITEMS items over $DAYS days ending now into $DATA (live feed follows)"
rm -rf "$DATA" "$STATE"
$KPI simulate --out "$DATA" --items "$ITEMS" --days "$DAYS" --seed 1 --start now --quiet
$KPI simulate --out "$DATA" --live --rate 20 --quiet >"$VAR/simulate-live.log" 2>&1 &
pids+=($!)

# The duty desk: Alertmanager posts every alert to the API with a bearer token that the
# API knows only by its SHA-256 digest; incidents go to an SQLite file.
AMCONF="$VAR/alertmanager-config"
mkdir -p "$AMCONF"
cp prometheus/alertmanager.yml "$AMCONF/"
TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
printf '%s\n' "$TOKEN" >"$AMCONF/duty-webhook.token"
chmod 600 "$AMCONF/duty-webhook.token"
DIGEST=$(printf '%s' "$TOKEN" | sha256sum | cut -d' ' -f1)
printf 'webhook_tokens:\n  - name: demo-alertmanager\n    sha256: %s\n' "$DIGEST" >"$VAR/demo-api.yaml"
DUTY_DB="sqlite:///$VAR/duty.db"

echo "== starting the service (exporter :9108, API :8000, incidents in $VAR/duty.db)"
$KPI serve "$DATA" --exporter-listen 127.0.0.1:9108 --api-listen 127.0.0.1:8000 \
	--state "$STATE" --refresh-interval 5s --config "$VAR/demo-api.yaml" --database "$DUTY_DB" \
	>"$VAR/serve.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:9108/readyz 120
wait_http http://127.0.0.1:8000/readyz 120

prom_url="" am_url=""
if command -v prometheus-alertmanager >/dev/null 2>&1; then
	mkdir -p "$VAR/alertmanager"
	prometheus-alertmanager --config.file="$AMCONF/alertmanager.yml" \
		--storage.path="$VAR/alertmanager" --web.listen-address=127.0.0.1:9093 \
		--cluster.listen-address= >"$VAR/alertmanager.log" 2>&1 &
	pids+=($!)
	am_url=http://127.0.0.1:9093
fi
if command -v prometheus >/dev/null 2>&1; then
	# The project's rules, with every `for:` cut to 1m so the demo's alerts fire within
	# minutes instead of the production quarter of an hour.
	# The whole scenario in Prometheus from the first minute: the history up to now as
	# TSDB blocks (recording rules included) in a fresh data directory, then the live
	# scrapes continue every counter from there (docs/backfill.md).
	rm -rf "$VAR/prometheus"
	echo "== backfilling the $DAYS days into Prometheus' TSDB (kpi backfill, step $BACKFILL_STEP)"
	$KPI backfill "$DATA" --out "$VAR/prometheus" --to now --step "$BACKFILL_STEP" \
		>"$VAR/backfill.log" 2>&1 || { echo "backfill failed, see $VAR/backfill.log" >&2; mkdir -p "$VAR/prometheus"; }
	mkdir -p "$VAR/prometheus-config"
	cp prometheus/prometheus.yml prometheus/rules.yml "$VAR/prometheus-config/"
	sed -E 's/^( +for: ).*/\11m/' prometheus/alerts.yml >"$VAR/prometheus-config/alerts.yml"
	# Retention longer than the history, or Prometheus drops the oldest backfilled blocks.
	prometheus --config.file="$VAR/prometheus-config/prometheus.yml" --storage.tsdb.path="$VAR/prometheus" \
		--storage.tsdb.retention.time="$((DAYS + 30))d" \
		--web.listen-address=127.0.0.1:9090 >"$VAR/prometheus.log" 2>&1 &
	pids+=($!)
	wait_http http://127.0.0.1:9090/-/ready 60 && prom_url=http://127.0.0.1:9090
fi

cat <<MSG

Postal KPI demo is running (logs in $VAR/). Open:
  metrics (Prometheus exposition)  http://127.0.0.1:9108/metrics
  analyst API (OpenAPI docs)       http://127.0.0.1:8000/docs
  national KPIs by region          http://127.0.0.1:8000/api/v1/kpis/on_time_ratio?by=region
  backlog drill-down               http://127.0.0.1:8000/api/v1/backlog?limit=20
MSG
if [ -n "$prom_url" ]; then
	cat <<MSG
  Prometheus alerts                $prom_url/classic/alerts   (pending, then firing: for: cut to 1m in the demo)
  Prometheus graph                 $prom_url/classic/graph?g0.expr=topk(5,sum%20by(facility)(postal_backlog_items))
MSG
else
	echo "  (install Debian's prometheus and prometheus-alertmanager to watch the alerts: make system-deps)"
fi
[ -n "$am_url" ] && echo "  Alertmanager                     $am_url/#/alerts"
[ -n "$am_url" ] && cat <<MSG
  incidents (alerts on record)     http://127.0.0.1:8000/api/v1/incidents   (appear as alerts fire)
  today's duty report              $KPI duty-report --database $DUTY_DB --date $(date -u +%F)
MSG
cat <<MSG
  KPI report on the same data      $KPI report $DATA --by region --kpi on_time_ratio,within_72h_ratio,complaints_per_million
  Full stack with Grafana          docker compose up --build   (where a Docker engine runs), then http://127.0.0.1:3000

Press Ctrl-C to stop.
MSG
wait -n "${pids[@]}" || true
echo "a demo process stopped; see $VAR/*.log" >&2
