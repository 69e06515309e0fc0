#!/usr/bin/env bash
# test/suites/demo_cluster.sh: "make demo-cluster" runs to its end.
# test/demo_cluster.sh starts its own server (router and three shards, each
# served by its worker) and mock Kafka, and its SQL checks what it shows:
# creates on their key's shard, the retried create, the cross-shard basket
# confirmed and its stock taken on the home shards, the canceled order's
# holds released, every order's events in Kafka (ce_omsseq 1..n, one
# partition).  Any failed check stops it with an error, so the whole demo
# counts as one test here.  The runner has built and installed oms already.
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

mkdir -p "$OMS_LOG_DIR"
log="$OMS_LOG_DIR/demo_cluster.log"
name="make demo-cluster runs to its end, every check of test/demo_cluster.sql true (output: log/demo_cluster.log)"
# Its own server and broker: none of the runner's settings leak in.
if env -u PGHOST -u PGPORT -u PGDATABASE -u OMS_CLUSTER_DIR -u OMS_PGDATA -u OMS_KAFKA_PID -u OMS_KAFKA_DIR \
	OMS_SKIP_INSTALL=1 bash "$OMS_ROOT/test/demo_cluster.sh" >"$log" 2>&1 &&
	grep -q '^cluster demo finished$' "$log"; then
	echo "ok - $name"
else
	echo "not ok - $name"
	tail -n 40 "$log" | sed 's/^/# /'
	exit 1
fi
