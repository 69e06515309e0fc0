#!/usr/bin/env bash
# test/demo.sh: the runner behind "make demo".
# Owns: a throwaway mock Kafka cluster (test/kafka) and a throwaway
# PostgreSQL cluster with oms installed in database oms_demo, whose
# background worker serves that database and publishes its outbox to the
# mock Kafka; and running test/demo.sql there so a person can watch the
# API, the sagas and the relay at work.  demo.sql reads the topic back
# with kcat at the end.
set -euo pipefail
# Let failures inside $(...) stop the script too.
shopt -s inherit_errexit

# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=test/kafka/broker.sh
source "$OMS_ROOT/test/kafka/broker.sh"

DEMO_TOPIC=oms.order-events

main() {
	oms_ensure_packages
	oms_build_install
	# The mock broker runs in this shell (not in $(...)), so it lives as long
	# as the demo; it is stopped on exit, after the PostgreSQL cluster.
	oms_say "starting a mock Kafka cluster (test/kafka), topic $DEMO_TOPIC with 3 partitions"
	oms_kafka_start --topic "$DEMO_TOPIC" --partitions 3
	# The worker serves only the databases in oms.database_name (read at
	# server start), so the demo database is named here; oms.kafka_brokers
	# turns its outbox relay on.
	oms_start_cluster -- "oms.database_name = 'oms_demo'" \
		"oms.kafka_brokers = '$OMS_KAFKA_BOOTSTRAP'" \
		"oms.kafka_topic = '$DEMO_TOPIC'"
	oms_say "mock Kafka running: OMS_KAFKA_BOOTSTRAP=$OMS_KAFKA_BOOTSTRAP"
	oms_fresh_db oms_demo
	oms_header "oms demo (database oms_demo; each query is echoed before its result)"
	# -e echoes every query as sent, so variables show their real values;
	# -q hides psql's own chatter ("Output format is ...").  demo.sql reads
	# the topic with kcat through \copy ... FROM PROGRAM, which expands
	# $OMS_KAFKA_BOOTSTRAP from this environment.
	if ! oms_psql -e -P pager=off -d oms_demo -f "$OMS_ROOT/test/demo.sql"; then
		oms_server_log_tail 40
		oms_die "the demo stopped on an unexpected error"
	fi
}

main "$@"
