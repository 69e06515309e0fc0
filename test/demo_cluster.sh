#!/usr/bin/env bash
# test/demo_cluster.sh: the runner behind "make demo-cluster".
# Owns: a throwaway mock Kafka cluster (test/kafka) with one topic, and a
# throwaway PostgreSQL server holding an oms cluster made by test/cluster.sh:
# the router database demo and three shard databases demo_s0, demo_s1 and
# demo_s2 (16 partitions, partition p on shard p % 3), each shard served by
# its own oms worker, every shard's relay publishing to the same topic.
# Then test/demo_cluster.sql runs on the router, so a person can watch
# orders routed by their idempotency key, a basket of SKUs homed on other
# shards confirmed, an order canceled, the merged reads, and every event
# read back from Kafka per order.  The SQL checks what it shows and stops
# with an error when something is wrong (test/suites/demo_cluster.sh
# counts that as a failed test).
set -euo pipefail
# Let failures inside $(...) stop the script too.
shopt -s inherit_errexit

# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=test/kafka/broker.sh
source "$OMS_ROOT/test/kafka/broker.sh"
# shellcheck source=test/cluster.sh
source "$OMS_ROOT/test/cluster.sh"

DEMO_TOPIC=oms.order-events
DEMO_ROUTER=demo
DEMO_SHARDS=3
DEMO_PARTITIONS=16

main() {
	oms_ensure_packages
	oms_build_install
	# The mock broker runs in this shell (not in $(...)), so it lives as long
	# as the demo; it is stopped on exit, after the PostgreSQL server.
	oms_say "starting a mock Kafka cluster (test/kafka), topic $DEMO_TOPIC with 3 partitions"
	oms_kafka_start --topic "$DEMO_TOPIC" --partitions 3
	# The worker serves only the databases in oms.database_name (read at
	# server start): the three shards, not the router (it has no oms).  All
	# three relays publish to the same topic.
	local shards=() k
	for ((k = 0; k < DEMO_SHARDS; k++)); do
		shards+=("${DEMO_ROUTER}_s$k")
	done
	oms_start_cluster -- "oms.database_name = '$(IFS=,; printf '%s' "${shards[*]}")'" \
		"oms.kafka_brokers = '$OMS_KAFKA_BOOTSTRAP'" \
		"oms.kafka_topic = '$DEMO_TOPIC'"
	oms_say "mock Kafka running: OMS_KAFKA_BOOTSTRAP=$OMS_KAFKA_BOOTSTRAP"
	oms_say "making the cluster: router database $DEMO_ROUTER, shards ${shards[*]}, $DEMO_PARTITIONS partitions (test/cluster.sh)"
	oms_cluster_create "$DEMO_ROUTER" "$DEMO_SHARDS" "$DEMO_PARTITIONS"
	oms_header "oms cluster demo (router database $DEMO_ROUTER; each query is echoed before its result)"
	# -e echoes every query as sent; demo_cluster.sql reads the topic with
	# kcat through \copy ... FROM PROGRAM, which expands $OMS_KAFKA_BOOTSTRAP
	# from this environment.
	if ! oms_psql -e -P pager=off -d "$DEMO_ROUTER" -v partitions="$DEMO_PARTITIONS" \
		-f "$OMS_ROOT/test/demo_cluster.sql"; then
		oms_server_log_tail 40
		oms_die "the cluster demo stopped: a check failed or a call raised an error (see above)"
	fi
}

main "$@"
