#!/usr/bin/env bash
# A real two-node Ray cluster on this machine, for trying `cluster=local_cluster` and
# `raylight submit` the way a remote cluster behaves:
#
#   scripts/local-cluster.sh up       head node + one worker node on 127.0.0.1, token auth on
#   scripts/local-cluster.sh status   `ray status` of that cluster
#   scripts/local-cluster.sh down     stops only the processes this script started
#
# Everything lives under $RAYLIGHT_CLUSTER_DIR (default .local-cluster/, git-ignored): the auth
# token (mode 600, never printed), Ray's temp/session directory and the ports used. Sized for a
# 2-core machine: 1 CPU per node. Ports (override with env): GCS $RAYLIGHT_GCS_PORT (6380),
# dashboard + Jobs API $RAYLIGHT_DASHBOARD_PORT (8266), Ray client $RAYLIGHT_CLIENT_PORT (10001),
# all on 127.0.0.1.
#
# Client side, for `ray job list` etc.:  source <(scripts/local-cluster.sh env)
set -euo pipefail

DIR=$(mkdir -p "${RAYLIGHT_CLUSTER_DIR:-.local-cluster}" && cd "${RAYLIGHT_CLUSTER_DIR:-.local-cluster}" && pwd)
BIN=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin}
GCS_PORT=${RAYLIGHT_GCS_PORT:-6380}
DASH_PORT=${RAYLIGHT_DASHBOARD_PORT:-8266}
# Ray's default; worker processes take 10002-19999, so not inside that range.
CLIENT_PORT=${RAYLIGHT_CLIENT_PORT:-10001}
# Ray keeps per-session sockets under the temp dir; unix socket paths must stay short.
TMP=${RAYLIGHT_CLUSTER_TMP:-/tmp/raylight-cluster-$(id -u)-$GCS_PORT}
TOKEN="$DIR/token"

export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH="$TOKEN"
export RAY_USAGE_STATS_ENABLED=0
# Serve's HTTP ingress: Ray's HAProxy (raylight's default where ray[serve] installed its binary).
export RAY_SERVE_ENABLE_HA_PROXY=${RAY_SERVE_ENABLE_HA_PROXY:-1}
# A request whose replica died after taking it (no response at all) is retried on another one:
# /predict is idempotent. Ray's default retries only connections that never opened.
export RAY_SERVE_HAPROXY_RETRY_ON=${RAY_SERVE_HAPROXY_RETRY_ON:-conn-failure empty-response}
# HAProxy's config under this cluster's temp dir: its process then carries the path, so `down`
# stops it with the rest (killed daemons leave it running, holding its ports). Its admin socket
# stays in Ray's default place: HAProxy allows socket paths of at most 97 characters.
export RAY_SERVE_HAPROXY_CONFIG_FILE_LOC="$TMP/hap/haproxy.cfg"
export RAY_SERVE_HAPROXY_SERVER_STATE_BASE="$TMP/hap"
export RAY_SERVE_HAPROXY_SERVER_STATE_FILE="$TMP/hap/server-state"
# Job entrypoints run `python ...`: on this cluster that is the project's environment.
export PATH="$BIN:$PATH"

ray_() { "$BIN/ray" "$@"; }

our_pids() {
  # Ray's daemons carry the session directory (under $TMP) on their command line; nothing
  # else on the machine does, so `down` never touches another Ray.
  pgrep -f -- "$TMP/" || true
}

case "${1:-}" in
  up)
    if [ -n "$(our_pids)" ]; then
      echo "local cluster already running (GCS 127.0.0.1:$GCS_PORT)"; exit 0
    fi
    mkdir -p "$TMP"
    if [ ! -s "$TOKEN" ]; then
      (umask 077 && "$BIN/python" -c "import secrets; print(secrets.token_hex(32))" > "$TOKEN")
    fi
    chmod 600 "$TOKEN"
    common=(--node-ip-address=127.0.0.1 --num-cpus=1 --object-store-memory=300000000
            --temp-dir="$TMP" --disable-usage-stats)
    # Two nodes share one address: each node's dashboard agent needs its own HTTP port (Ray's
    # default, 52365, would collide, leaving the Jobs API with "no available agent").
    read -r AGENT_HEAD AGENT_WORKER < <("$BIN/python" - <<'PY'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
PY
)
    ray_ start --head --port="$GCS_PORT" --include-dashboard=true --dashboard-host=127.0.0.1 \
      --dashboard-port="$DASH_PORT" --ray-client-server-port="$CLIENT_PORT" \
      --dashboard-agent-listen-port="$AGENT_HEAD" "${common[@]}" >"$DIR/head.log" 2>&1 \
      || { cat "$DIR/head.log"; exit 1; }
    ray_ start --address="127.0.0.1:$GCS_PORT" --dashboard-agent-listen-port="$AGENT_WORKER" \
      "${common[@]}" >"$DIR/worker.log" 2>&1 || { cat "$DIR/worker.log"; exit 1; }
    printf '{"gcs": "127.0.0.1:%s", "dashboard": "http://127.0.0.1:%s", "token_path": "%s"}\n' \
      "$GCS_PORT" "$DASH_PORT" "$TOKEN" > "$DIR/cluster.json"
    # Wait until both nodes have joined (bounded).
    for _ in $(seq 60); do
      n=$("$BIN/python" - "$GCS_PORT" <<'PY' 2>/dev/null || echo 0
import os, sys
import ray
ray.init(address=f"127.0.0.1:{sys.argv[1]}", logging_level="ERROR", log_to_driver=False)
print(sum(1 for n in ray.nodes() if n["Alive"]))
PY
)
      [ "$n" -ge 2 ] && break
      sleep 1
    done
    echo "local cluster up: 2 nodes, GCS 127.0.0.1:$GCS_PORT, dashboard/Jobs API http://127.0.0.1:$DASH_PORT (token auth)"
    ;;
  down)
    pids=$(our_pids)
    if [ -z "$pids" ]; then echo "local cluster not running"; exit 0; fi
    # In order, as `ray stop` does. Raylets first: each stops its workers and agents and
    # leaves the GCS in well under a second while the GCS is up. Everything at once left the
    # raylets waiting on a GCS already gone until the SIGKILL below, 15 s later, which also
    # orphaned their agents. Ray's autoscaler monitor ignores SIGTERM for 20+ s; this cluster
    # never scales, so it has nothing to save and gets SIGKILL.
    pkill -f -- "raylet/raylet .*$TMP/" 2>/dev/null || true
    for _ in $(seq 20); do [ -z "$(pgrep -f -- "raylet/raylet .*$TMP/")" ] && break; sleep 0.5; done
    pkill -9 -f -- "autoscaler/_private/monitor.py .*$TMP/" 2>/dev/null || true
    pids=$(our_pids)
    [ -n "$pids" ] && kill $pids 2>/dev/null || true
    for _ in $(seq 30); do [ -z "$(our_pids)" ] && break; sleep 0.5; done
    pids=$(our_pids); [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
    rm -f "$DIR/cluster.json"
    echo "local cluster stopped"
    ;;
  status)
    if [ -z "$(our_pids)" ]; then echo "local cluster not running"; exit 3; fi
    ray_ status --address="127.0.0.1:$GCS_PORT"
    ;;
  env)
    echo "export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH='$TOKEN' RAY_ADDRESS='http://127.0.0.1:$DASH_PORT'"
    ;;
  *)
    echo "usage: $0 up|down|status|env" >&2; exit 2
    ;;
esac
