#!/usr/bin/env bash
# test/suites/security_search_path.sh: no code of oms runs what a database
# owner who is not a superuser planted in schema public.
#
# A role with only oms_app that owns the database (CREATE on public is the
# owner's under PostgreSQL 15) plants, for every type of schema oms,
# comparison and || operators and functions of built-in names with exact
# argument types (test/security/plant.sql).  Each trap records who ran it,
# where a rollback cannot erase it, and makes its owner a superuser when it
# runs as one.
#
# Control: in a database with oms 0.1.0, a superuser session running what
# 0.1.0's worker ran (oms._next_saga_due(), search_path "$user", public)
# trips a trap and the owner becomes a superuser: the traps work and the
# defect was real.
#
# Then, in a database with the current oms, served by the worker, pg_cron
# and a mock Kafka with the test payment service, every path runs: the API
# as oms_app, sagas waiting for a remote reply, retried (test_flaky),
# compensated (test_decline, a cancel while waiting), timed out and voided
# (test_hang), refunded; the relay publishing commands and events, the
# reply consumer applying replies, the worker's maintenance, a pg_cron job,
# health and metrics read by a superuser.  No trap runs as a superuser and
# the owner stays an ordinary role.  Then the owner renames public and puts
# functions named like oms's API in a new public (test/security/rename.sql),
# and the same paths run again: still nothing.
# shellcheck disable=SC2317 # functions here are called indirectly (wait loops, exit hooks), which shellcheck 0.9 cannot follow
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck source=test/process/common.sh
source "$OMS_ROOT/test/process/common.sh"
# shellcheck source=test/kafka/broker.sh
source "$OMS_ROOT/test/kafka/broker.sh"
# shellcheck source=test/payment/lib.sh
source "$OMS_ROOT/test/payment/lib.sh"

DB=oms_attack
OLD_DB=oms_attack_old
OWNER=oms_db_owner
DEADLINE=120
CRON_DEADLINE=150
WORK=""

cleanup() {
	wt_keep_log security_search_path
	[[ -z "$WORK" ]] || rm -rf "$WORK"
}

oms_kafka_start --partitions 1 --topic oms.order-events --topic "$PM_COMMANDS_TOPIC" --topic "$PM_REPLIES_TOPIC"
wt_start_cluster "shared_preload_libraries = 'oms,pg_cron'" "cron.database_name = '$DB'" \
	"cron.host = '127.0.0.1'" "oms.database_name = '$DB'" \
	"oms.kafka_brokers = '$OMS_KAFKA_BOOTSTRAP'" "oms.payment_provider = 'kafka'" \
	"oms.payment_reply_timeout = '3s'" "oms.retry_base = '50ms'" "oms.retry_max = '200ms'" \
	"oms.maintenance_interval = 1"
oms_on_exit cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/oms-security.XXXXXX")
chmod 755 "$WORK"
# Every superuser session of the test itself (wt_sql and the libraries'
# helpers too) resolves nothing through public, or it would trip the traps.
export PGOPTIONS="-c search_path=pg_catalog"

# Sessions of the test itself: the owner with its default search_path,
# the superuser qualified and with a safe one.
as_owner() {
	local db=$1
	shift
	PGOPTIONS="-c client_min_messages=warning" "$OMS_PG_BINDIR/psql" -X -q -At -v ON_ERROR_STOP=1 \
		-U "$OWNER" -d "$db" "$@"
}
as_super() {
	local db=$1
	shift
	PGOPTIONS="-c client_min_messages=warning -c search_path=pg_catalog" \
		"$OMS_PG_BINDIR/psql" -X -q -At -v ON_ERROR_STOP=1 -U postgres -d "$db" "$@"
}
owner_is_superuser() { [[ "$(as_super postgres -c "SELECT rolsuper FROM pg_roles WHERE rolname = '$OWNER'")" == t ]]; }
superuser_hits() { as_super "$1" -c "SELECT last_value - 1 + is_called::int FROM trap.superuser_hits"; }
other_hits() { as_super "$1" -c "SELECT last_value - 1 + is_called::int FROM trap.other_hits"; }
trap_lines() { grep -F 'oms-trap:' "$WT_LOG" || true; }

# --------------------------------------------------------------- control
as_super postgres -c "CREATE ROLE $OWNER LOGIN"
as_super postgres -c "CREATE DATABASE $OLD_DB OWNER $OWNER"
as_super "$OLD_DB" -c "CREATE EXTENSION oms SCHEMA public VERSION '0.1.0'"
as_super postgres -c "GRANT oms_app TO $OWNER"
as_owner "$OLD_DB" -f "$OMS_ROOT/test/security/plant.sql" >/dev/null
# A saga for oms._next_saga_due() to look at (no worker serves this database).
as_super "$OLD_DB" -c "SELECT public.oms_set_stock('SEC-1', 10)" >/dev/null
as_owner "$OLD_DB" -c "SELECT public.oms_pay_order((public.oms_create_order('c', '[{\"sku\": \"SEC-1\", \"quantity\": 1, \"unit_price\": 1}]') ->> 'order_id')::uuid, 'test_hang')" >/dev/null
# Its payment now waits for a reply: the saga is due in the future, which
# is when oms._next_saga_due() compares its status.
as_super "$OLD_DB" -c "SELECT public.oms_run_sagas()" >/dev/null
as_owner "$OLD_DB" -c "SELECT 'running'::oms.saga_status = 'running'" >/dev/null
wt_check "the traps are armed: the owner's own comparison of oms.saga_status runs one" \
	"$([[ "$(other_hits "$OLD_DB")" -ge 1 ]] && echo 0 || echo 1)" "other hits: $(other_hits "$OLD_DB")"
# What the 0.1.0 worker ran after every saga batch, with its search_path.
PGOPTIONS="-c client_min_messages=error" "$OMS_PG_BINDIR/psql" -X -q -At -U postgres -d "$OLD_DB" \
	-c "SELECT oms._next_saga_due()" >/dev/null 2>&1 || true
if owner_is_superuser && (($(superuser_hits "$OLD_DB") >= 1)); then
	wt_ok "control: with oms 0.1.0, the worker's oms._next_saga_due() ran a trap as superuser and the owner became one"
else
	wt_not_ok "control: with oms 0.1.0, the worker's oms._next_saga_due() runs a trap as superuser" \
		"superuser hits: $(superuser_hits "$OLD_DB")" "$(trap_lines)"
fi
as_super postgres -c "ALTER ROLE $OWNER NOSUPERUSER"
as_super postgres -c "DROP DATABASE $OLD_DB"
TRAP_LINES_BEFORE=$(trap_lines | wc -l)

# ------------------------------------------------------------- the attack
as_super postgres -c "CREATE DATABASE $DB OWNER $OWNER"
as_super "$DB" -c "CREATE EXTENSION oms SCHEMA public" -c "CREATE EXTENSION pg_cron"
planted=$(as_owner "$DB" -f "$OMS_ROOT/test/security/plant.sql")
wt_diag "planted in public: $(tr '\n' ' ' <<<"$planted")(operators, functions)"
as_super "$DB" -c "SELECT count(public.oms_set_stock('SEC-' || i, 1000000)) FROM generate_series(1, 3) AS i" >/dev/null

worker_up() { [[ -n "$(wt_worker_pid "$DB")" ]]; }
if ! wt_wait_until 60 worker_up; then
	wt_not_ok "the worker serves $DB" "$(tail -n 20 "$WT_LOG")"
	exit 1
fi
if pm_service_start "$WORK/service.log" && pm_inbox_ready "$DB" 90; then
	wt_ok "the payment service answers and the worker consumes its replies"
else
	wt_not_ok "the payment service answers and the worker consumes its replies" "$(tail -n 20 "$WT_LOG")"
	exit 1
fi

# Usage: drive SCHEMA TAG: every API path as the owner (oms_app), through
# the API in SCHEMA, with customers TAG-*.
drive() {
	local api=$1 tag=$2 item
	item='[{"sku": "SEC-1", "quantity": 1, "unit_price": 500}]'
	as_owner "$DB" <<-SQL >/dev/null
		SELECT $api.oms_pay_order(($api.oms_create_order('$tag-ok', '$item') ->> 'order_id')::uuid, 'test_ok');
		SELECT $api.oms_pay_order(($api.oms_create_order('$tag-flaky', '$item', 'USD', '$tag-key-1') ->> 'order_id')::uuid, 'test_flaky', '$tag-key-2');
		SELECT $api.oms_pay_order(($api.oms_create_order('$tag-decline', '$item') ->> 'order_id')::uuid, 'test_decline');
		SELECT $api.oms_pay_order(($api.oms_create_order('$tag-hang', '$item') ->> 'order_id')::uuid, 'test_hang');
		SELECT $api.oms_pay_order(($api.oms_create_order('$tag-cancel', '$item') ->> 'order_id')::uuid, 'test_hang');
		SELECT $api.oms_cancel_order(($api.oms_create_order('$tag-pending', '$item') ->> 'order_id')::uuid, 'changed my mind');
	SQL
	cancel_id=$(as_super "$DB" -c "SELECT id FROM oms.orders WHERE customer_id = '$tag-cancel'")
	as_owner "$DB" -c "SELECT $api.oms_cancel_order('$cancel_id', 'too slow')" >/dev/null
}
# The refund of a confirmed order, and reads of everything.
refund_and_read() {
	local api=$1 tag=$2 ok_id
	ok_id=$(as_super "$DB" -c "SELECT id FROM oms.orders WHERE customer_id = '$tag-ok'")
	as_owner "$DB" <<-SQL >/dev/null
		SELECT $api.oms_refund_order('$ok_id', 100, 'partial');
		SELECT $api.oms_get_order('$ok_id');
		SELECT count(*) FROM $api.oms_order_timeline('$ok_id');
		SELECT $api.oms_transition_allowed('pending', 'processing');
		SELECT $api.oms_format_money(1999, 'USD');
	SQL
	as_super "$DB" <<-SQL >/dev/null
		SELECT $api.oms_health();
		SELECT length($api.oms_metrics());
		SELECT count(*) FROM oms.metrics;
		SELECT $api.oms_relay_status();
		SELECT count(*) FROM $api.oms_worker_status();
		SELECT $api.oms_run_sagas();
		SELECT $api.oms_run_maintenance();
	SQL
}
settled() {
	wt_sql_true "$DB" "SELECT (SELECT count(*) FROM oms.sagas WHERE status IN ('running', 'compensating')) = 0
		AND (SELECT count(*) FROM oms.outbox) = 0"
}
# Usage: worker_maintained SINCE: the worker ran a maintenance task after SINCE.
worker_maintained() {
	wt_sql_true "$DB" "SELECT bool_or(last_run_by = 'worker' AND last_started_at > '$1') FROM oms.maintenance_tasks"
}
# Usage: cron_ran SINCE: a pg_cron job of oms succeeded after SINCE.
cron_ran() {
	wt_sql_true "$DB" "SELECT EXISTS (SELECT FROM cron.job_run_details AS d JOIN cron.job AS j USING (jobid)
		WHERE j.jobname LIKE 'oms-$DB-%' AND d.status = 'succeeded' AND d.start_time > '$1')"
}
# Usage: round LABEL SCHEMA TAG: every path, then the verdict.
round() {
	local label=$1 api=$2 tag=$3 since
	since=$(wt_sql "$DB" "SELECT now()")
	drive "$api" "$tag"
	if wt_wait_until "$DEADLINE" settled; then
		if wt_wait_until "$DEADLINE" worker_maintained "$since"; then
			wt_ok "$label: the worker ran maintenance"
		else
			wt_not_ok "$label: the worker ran maintenance" "$(wt_sql_quiet "$DB" "SELECT * FROM oms.maintenance_status")"
		fi
		refund_and_read "$api" "$tag"
		wt_wait_until "$DEADLINE" settled || true
		wt_ok "$label: every saga finished and the outbox is empty"
	else
		wt_not_ok "$label: every saga finished and the outbox is empty" \
			"$(wt_sql_quiet "$DB" "SELECT o.customer_id, o.status, s.status, s.error FROM oms.orders o
				JOIN oms.sagas s ON s.order_id = o.id WHERE s.status IN ('running', 'compensating')")" \
			"$(wt_sql_quiet "$DB" "SELECT count(*) FROM oms.outbox")"
	fi
	wt_check "$label: the worker applied payment replies from Kafka" \
		"$(wt_sql "$DB" "SELECT count(*) > 0 FROM oms.inbox i JOIN oms.payment_commands c USING (correlation_id)
			JOIN oms.orders o ON o.id = c.order_id WHERE i.result = 'applied' AND o.customer_id LIKE '$tag-%'")"
	wt_check "$label: the sagas waited, retried, compensated, voided and refunded" \
		"$(wt_sql "$DB" "SELECT bool_and(o.status::text = e.status) AND count(*) = 5 FROM oms.orders o
			JOIN (VALUES ('$tag-ok', 'partially_refunded'), ('$tag-flaky', 'confirmed'), ('$tag-decline', 'failed'),
						 ('$tag-hang', 'failed'), ('$tag-cancel', 'canceled')) AS e(customer, status)
			ON e.customer = o.customer_id")" \
		"$(wt_sql_quiet "$DB" "SELECT customer_id, status FROM oms.orders WHERE customer_id LIKE '$tag-%' ORDER BY 1")"
	if wt_wait_until "$CRON_DEADLINE" cron_ran "$since"; then
		wt_ok "$label: a pg_cron maintenance job ran"
	else
		wt_not_ok "$label: a pg_cron maintenance job ran" \
			"$(wt_sql_quiet "$DB" "SELECT jobid, status, return_message FROM cron.job_run_details ORDER BY start_time DESC LIMIT 5")"
	fi
	local hits lines
	hits=$(superuser_hits "$DB")
	lines=$(trap_lines | tail -n +"$((TRAP_LINES_BEFORE + 1))")
	wt_check "$label: no planted operator or function ran as a superuser" \
		"$([[ "$hits" == 0 && -z "$lines" ]] && echo 0 || echo 1)" "superuser hits: $hits" "$lines"
	wt_check "$label: the database owner is still not a superuser" "$(owner_is_superuser && echo 1 || echo 0)"
}

# pg_cron jobs for every task; the worker keeps the rest.
as_super "$DB" -c "SELECT public.oms_schedule_maintenance('{\"prune\": \"* * * * *\", \"purge_idempotency_keys\": \"* * * * *\"}')" >/dev/null
wt_check "pg_cron jobs call schema oms, never the extension's schema" \
	"$(wt_sql "$DB" "SELECT count(*) = 5 AND bool_and(command LIKE 'SELECT oms.\_run_maintenance(%') FROM cron.job")" \
	"$(wt_sql_quiet "$DB" "SELECT command FROM cron.job")"
# The worker and pg_cron may run the same tasks: each is safe to run twice.
wt_sql "$DB" "UPDATE oms.maintenance_tasks SET period = '1 second', cron_jobid = NULL, cron_job_name = NULL" >/dev/null

round "planted operators" public sec1
as_owner "$DB" -f "$OMS_ROOT/test/security/rename.sql" >/dev/null
wt_check "the owner renamed public and impersonates oms's API in a new public" \
	"$(as_super "$DB" -c "SELECT count(*) > 20 FROM pg_proc WHERE pronamespace = 'public'::regnamespace")"
round "renamed schema" public_orig sec2
wt_diag "traps run by ordinary roles (the owner's own sessions): $(other_hits "$DB")"

exit "$WT_RC"
