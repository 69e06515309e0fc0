#!/usr/bin/env bash
# test/demo.sh: the runner behind "make demo".
# Owns: a throwaway mock Kafka cluster (test/kafka) and a throwaway
# PostgreSQL cluster with oms installed in database oms_demo, whose
# background worker serves that database and publishes its outbox to the
# mock Kafka; and running test/demo.sql there so a person can watch the
# API, the sagas and the relay at work.  demo.sql reads the topic back
# with kcat, then pays one order through the remote payment provider: the
# mock Kafka also has the payment topics, and the test payment service
# (test/payment/service.py) answers the charge commands.
set -euo pipefail
# Let failures inside $(...) stop the script too.
shopt -s inherit_errexit

# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=test/kafka/broker.sh
source "$OMS_ROOT/test/kafka/broker.sh"
# shellcheck source=test/process/common.sh
source "$OMS_ROOT/test/process/common.sh"
# shellcheck source=test/payment/lib.sh
source "$OMS_ROOT/test/payment/lib.sh"

DEMO_TOPIC=oms.order-events

main() {
	oms_ensure_packages
	oms_build_install
	# The mock broker runs in this shell (not in $(...)), so it lives as long
	# as the demo; it is stopped on exit, after the PostgreSQL cluster.
	oms_say "starting a mock Kafka cluster (test/kafka), topics $DEMO_TOPIC, $PM_COMMANDS_TOPIC and $PM_REPLIES_TOPIC with 3 partitions"
	oms_kafka_start --topic "$DEMO_TOPIC" --topic "$PM_COMMANDS_TOPIC" --topic "$PM_REPLIES_TOPIC" --partitions 3
	# The worker serves only the databases in oms.database_name (read at
	# server start), so the demo database is named here; oms.kafka_brokers
	# turns its outbox relay on.
	oms_start_cluster -- "oms.database_name = 'oms_demo'" \
		"oms.kafka_brokers = '$OMS_KAFKA_BOOTSTRAP'" \
		"oms.kafka_topic = '$DEMO_TOPIC'"
	oms_say "mock Kafka running: OMS_KAFKA_BOOTSTRAP=$OMS_KAFKA_BOOTSTRAP"
	# The payment service answers the commands the last section sends once
	# the demo switches to oms.payment_provider = 'kafka' (stopped at exit).
	DEMO_WORK=$(mktemp -d "${TMPDIR:-/tmp}/oms-demo.XXXXXX")
	# shellcheck disable=SC2016 # expanded when the exit hook runs
	oms_on_exit 'rm -rf "$DEMO_WORK"'
	oms_say "starting the test payment service (test/payment/service.py, log: $DEMO_WORK/service.log)"
	pm_service_start "$DEMO_WORK/service.log" ||
		oms_die "the test payment service did not start: $(tail -n 5 "$DEMO_WORK/service.log.err" 2>/dev/null)"
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
