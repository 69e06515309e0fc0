#!/usr/bin/env bash
# test/suites/upgrade.sh: ALTER EXTENSION oms UPDATE gives the catalog of a
# fresh install and loses nothing, while the worker runs.
#
# The versions: the frozen full scripts (src/sql/versions/oms--X.sql) and
# the chain of upgrade scripts (oms--A--B.sql) from the oldest of them to
# oms.control's default_version, found from the file names, so a new
# release only adds files (and a checksum below once it is released).
#
#   scripts   every released script is byte-identical to what shipped
#             (RELEASED_SHA256); the upgrade scripts form one chain from the
#             oldest frozen version to default_version, none left over; make
#             install installed every script.
#   catalog   for each frozen version V: CREATE EXTENSION oms VERSION 'V',
#             then ALTER EXTENSION oms UPDATE TO each next version in turn
#             (every script runs); test/upgrade/catalog.sql then describes
#             the same catalog as a fresh CREATE EXTENSION oms (diff shown).
#   data      a database the worker serves gets the oldest version and
#             test/upgrade/fill.sql: orders in every status, sagas in flight
#             (not started, retrying, waiting for an answer, cancel requested,
#             compensating, refunds) and every event still in the outbox.
#             The worker's library is newer than the SQL, so it waits
#             (oms_worker_status().last_error, event=worker_waiting_for_update)
#             and moves nothing over several of its loops.  Then, with the
#             worker running, one transaction snapshots every table and
#             sequence of the extension (test/upgrade/snapshot.sql), runs
#             ALTER EXTENSION oms UPDATE and snapshots again: same rows, except
#             the data changes DATA_CHANGES lists.  The catalog equals a
#             fresh install's here too.
#   after     the worker takes over: every saga finishes as its payment
#             method and cancel say, the outbox empties, and kcat, reading
#             the topic on its own, finds every event of every order (those
#             pending at the update and those made since), in order per order
#             (test/upgrade/delivery.sql).
# shellcheck disable=SC2317 # functions here are called indirectly (wait loops, exit hooks), which shellcheck 0.9 cannot follow
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck source=test/process/common.sh
source "$OMS_ROOT/test/process/common.sh"
# shellcheck source=test/kafka/broker.sh
source "$OMS_ROOT/test/kafka/broker.sh"

VERSIONS_DIR="$OMS_ROOT/src/sql/versions"
UPGRADE_DIR="$OMS_ROOT/test/upgrade"
DB=upgrade_data
TOPIC=oms.order-events
WORK=""

# sha256 of every released script.  Released scripts are never edited: a fix
# goes into the next upgrade script.  When a version is released, add its
# full script (frozen into src/sql/versions) and the upgrade script to it.
declare -A RELEASED_SHA256=(
	[oms--0.1.0.sql]=94bbeb7aef7c624fff208c07ef7c0f35c5fd1190fd603fdbbde9fb83ed9c4ac7
	[oms--0.1.0--0.2.0.sql]=856cb9e862af3eff5c4f7dcb421c4df56f9a078d60989d4820e4c8af03112bba
)

# Data the upgrade scripts change on purpose, left out of the row comparison:
# "schema.table" or "schema.table.column", each with a comment naming the
# script and what it does to the rows; the script itself must say it too.
# For example (an UPDATE of oms.orders also sets updated_at, by trigger):
#	oms.orders.metadata		# oms--0.2.0--0.3.0.sql moves metadata.channel into its own column
#	oms.orders.updated_at	# set by that UPDATE
# Columns an update adds are not compared (the catalog test covers them).
DATA_CHANGES=(
	# none yet
)

cleanup() {
	wt_keep_log upgrade
	if { ((WT_RC != 0)) || [[ "${WT_KEEP_LOG:-0}" == 1 ]]; } && [[ -n "$WORK" ]]; then
		mkdir -p "$OMS_LOG_DIR/test/upgrade"
		cp -r "$WORK"/. "$OMS_LOG_DIR/test/upgrade/" 2>/dev/null || true
	fi
	[[ -z "$WORK" ]] || rm -rf "$WORK"
}

# ------------------------------------------------------------ the versions
default_version() {
	sed -n "s/^default_version = '\\(.*\\)'/\\1/p" "$OMS_ROOT/oms.control"
}

# Versions with a frozen full script, oldest first.
frozen_versions() {
	local f v
	for f in "$VERSIONS_DIR"/oms--*.sql; do
		v=${f##*/oms--}
		v=${v%.sql}
		[[ "$v" == *--* ]] || printf '%s\n' "$v"
	done | sort -V
}

upgrade_scripts() {
	local f
	for f in "$VERSIONS_DIR"/oms--*--*.sql; do
		[[ ! -e "$f" ]] || printf '%s\n' "${f##*/}"
	done
}

# Sets CHAIN to the versions from the oldest frozen one to default_version,
# one upgrade script per step; on failure sets CHAIN_ERROR and returns 1.
walk_chain() {
	local to
	to=$(default_version)
	CHAIN=("$(frozen_versions | head -n 1)")
	CHAIN_ERROR=""
	local current=${CHAIN[0]} next
	while [[ "$current" != "$to" ]]; do
		next=$(upgrade_scripts | sed -n "s/^oms--${current//./\\.}--\\(.*\\)\\.sql$/\\1/p")
		if [[ $(grep -c . <<<"$next") != 1 ]]; then
			CHAIN_ERROR="from $current: upgrade scripts to '${next//$'\n'/, }', need exactly one"
			return 1
		fi
		if ((${#CHAIN[@]} > 100)); then
			CHAIN_ERROR="no end after 100 steps: ${CHAIN[*]}"
			return 1
		fi
		CHAIN+=("$next")
		current=$next
	done
}

# Usage: update_steps FROM -> "ALTER EXTENSION oms UPDATE TO 'X';" per step after FROM.
update_steps() {
	local from=$1 v past=0
	for v in "${CHAIN[@]}"; do
		((past)) && printf "ALTER EXTENSION oms UPDATE TO '%s';\n" "$v"
		[[ "$v" == "$from" ]] && past=1
	done
	return 0
}

check_released_scripts() {
	local name sum bad=()
	for name in "${!RELEASED_SHA256[@]}"; do
		sum=$(sha256sum "$VERSIONS_DIR/$name" 2>/dev/null | awk '{print $1}' || true)
		[[ "$sum" == "${RELEASED_SHA256[$name]}" ]] || bad+=("$name: sha256 ${sum:-(file missing)}, released ${RELEASED_SHA256[$name]}")
	done
	wt_check "released scripts are unchanged (${!RELEASED_SHA256[*]})" "$((${#bad[@]} > 0))" "${bad[@]}"
}

check_chain() {
	local n_scripts
	n_scripts=$(upgrade_scripts | grep -c . || true)
	if ! walk_chain; then
		wt_not_ok "upgrade scripts lead from $(frozen_versions | head -n 1) to default_version $(default_version)" "$CHAIN_ERROR"
		return 1
	fi
	wt_check "upgrade scripts lead from ${CHAIN[0]} to default_version ${CHAIN[-1]}: ${CHAIN[*]}, none left over" \
		"$((n_scripts != ${#CHAIN[@]} - 1))" "$(upgrade_scripts)"
	if ((${#CHAIN[@]} < 2)); then
		wt_diag "default_version is the oldest frozen version: nothing to update"
		return 1
	fi
}

check_installed() {
	local sharedir f missing=()
	sharedir="$("$PG_CONFIG" --sharedir)/extension"
	for f in "$VERSIONS_DIR"/oms--*.sql "$OMS_ROOT/oms--$(default_version).sql" "$OMS_ROOT/oms.control"; do
		cmp -s "$f" "$sharedir/${f##*/}" || missing+=("${f#"$OMS_ROOT"/} is not installed as $sharedir/${f##*/}")
	done
	wt_check "make install installed every script (in $sharedir)" "$((${#missing[@]} > 0))" "${missing[@]}"
}

# --------------------------------------------------------------- catalog
# Usage: catalog_of DB FILE
catalog_of() {
	oms_psql -At -d "$1" -f "$UPGRADE_DIR/catalog.sql" >"$2"
}

# Usage: check_same_catalog LABEL FILE: compares FILE with the fresh install's.
check_same_catalog() {
	local label=$1 file=$2 diff
	diff=$(diff -u "$WORK/catalog-fresh.txt" "$file" 2>&1) || true
	wt_check "$label: the catalog equals a fresh install's ($(wc -l <"$file") lines compared)" \
		"$([[ -z "$diff" ]] && echo 0 || echo 1)" "$(head -n 100 <<<"$diff")"
}

# Usage: create_updated_db DB FROM STEPS...: creates DB with oms FROM and runs the steps.
create_updated_db() {
	local db=$1 from=$2
	oms_psql -d postgres -c "CREATE DATABASE $db" &&
		oms_psql -d "$db" -c "CREATE EXTENSION oms VERSION '$from'" &&
		update_steps "$from" | oms_psql -d "$db"
}

installed_version() {
	wt_sql_quiet "$1" "SELECT extversion FROM pg_extension WHERE extname = 'oms'"
}

catalog_tests() {
	local v db out
	# The updated databases first: roles belong to the cluster, and a
	# fresh install first would create a role an upgrade script forgot.
	for v in "${CHAIN[@]:0:${#CHAIN[@]}-1}"; do
		[[ -e "$VERSIONS_DIR/oms--$v.sql" ]] || continue
		db="upgrade_from_${v//[^0-9a-zA-Z]/_}"
		if ! out=$(create_updated_db "$db" "$v" 2>&1); then
			wt_not_ok "CREATE EXTENSION oms VERSION '$v', then ALTER EXTENSION oms UPDATE TO each next version" "$out"
			continue
		fi
		wt_check "CREATE EXTENSION oms VERSION '$v', then UPDATE TO $(update_steps "$v" | grep -o "'.*'" | tr '\n' ' ')-> $(installed_version "$db")" \
			"$([[ "$(installed_version "$db")" == "$(default_version)" ]] && echo 0 || echo 1)"
		catalog_of "$db" "$WORK/catalog-from-$v.txt"
	done
	oms_psql -d postgres -c "CREATE DATABASE upgrade_fresh" && oms_psql -d upgrade_fresh -c "CREATE EXTENSION oms"
	catalog_of upgrade_fresh "$WORK/catalog-fresh.txt"
	for v in "${CHAIN[@]:0:${#CHAIN[@]}-1}"; do
		[[ -e "$WORK/catalog-from-$v.txt" ]] && check_same_catalog "updated from $v" "$WORK/catalog-from-$v.txt"
	done
	return 0
}

# ------------------------------------------------------------------ data
worker_status() { wt_worker_status "$DB" "$1"; }

worker_waits() {
	[[ "$(worker_status last_error)" == "waiting for ALTER EXTENSION oms UPDATE"* ]]
}

# Usage: loops_past N -> true once the worker looped more than N times.
loops_past() {
	local loops
	loops=$(worker_status loops)
	[[ -n "$loops" ]] && ((loops > $1))
}

in_flight() { wt_in_flight "$DB"; }
sagas_settled() { [[ "$(in_flight)" == 0 ]]; }

# Orders whose status is not the one public.upgrade_expect gives (COLUMN: before or after).
wrong_statuses() {
	wt_sql "$DB" "SELECT string_agg(format('%s: %s, expected %s', e.customer_id, coalesce(o.status::text, 'missing'), e.$1), '; ')
		FROM public.upgrade_expect AS e LEFT JOIN oms.orders AS o USING (customer_id)
		WHERE o.status IS DISTINCT FROM e.$1::oms.order_status"
}

snapshot_diff() {
	wt_sql "$DB" "SELECT relation || ': ' || difference FROM public.upgrade_snapshot_diff('$1', '$2')"
}

sagas_summary() {
	wt_sql_quiet "$DB" "SELECT o.customer_id, o.status, s.kind, s.status, s.step_no, s.next_run_at
		FROM oms.orders AS o JOIN oms.sagas AS s ON s.order_id = o.id ORDER BY 1, 3"
}

fill_database() {
	local out
	oms_psql -d postgres -c "CREATE DATABASE $DB" &&
		oms_psql -d "$DB" -c "CREATE EXTENSION oms VERSION '${CHAIN[0]}'" || return 1
	if ! wt_wait_until 60 worker_waits; then
		wt_not_ok "the worker (library $(default_version)) waits while $DB has oms ${CHAIN[0]}" \
			"oms_worker_status(): $(wt_sql_quiet "$DB" "SELECT * FROM oms_worker_status()")" "$(tail -n 20 "$WT_LOG")"
		return 1
	fi
	wt_ok "the worker (library $(default_version)) waits while $DB has oms ${CHAIN[0]}: $(worker_status last_error)"
	wt_check "the server log has event=worker_waiting_for_update for $DB" \
		"$(grep -q "event=worker_waiting_for_update database=$DB installed_version=${CHAIN[0]}" "$WT_LOG" && echo 0 || echo 1)" \
		"$(grep worker_waiting "$WT_LOG" | tail -n 3)"

	if ! out=$(oms_psql -d "$DB" -f "$UPGRADE_DIR/fill.sql" 2>&1 >"$WORK/fill.log"); then
		wt_not_ok "fill.sql made orders with the ${CHAIN[0]} API" "$out"
		return 1
	fi
	local wrong pending expected statuses all_statuses
	wrong=$(wrong_statuses before)
	statuses=$(wt_sql "$DB" "SELECT count(DISTINCT status) FROM oms.orders")
	all_statuses=$(wt_sql "$DB" "SELECT cardinality(enum_range(NULL::oms.order_status))")
	pending=$(wt_sql "$DB" "SELECT count(*) FROM oms.outbox")
	# One saga in flight per order that has still to change its status.
	expected=$(wt_sql "$DB" "SELECT count(*) FROM public.upgrade_expect WHERE before <> after")
	wt_check "filled: every status ($statuses of $all_statuses), $(in_flight) sagas in flight ($(wt_sql "$DB" "SELECT string_agg(DISTINCT kind || ' ' || status, ', ') FROM oms.sagas WHERE status IN ('running', 'compensating')")), $pending events in the outbox" \
		"$([[ -z "$wrong" && "$statuses" == "$all_statuses" && "$(in_flight)" == "$expected" && "$pending" -gt 0 ]] && echo 0 || echo 1)" \
		"$wrong" "expected $expected sagas in flight" "$(sagas_summary)"
}

# Nothing may move while the SQL is older than the library: not a saga,
# not an outbox row.  Counted in worker loops, not in seconds.
check_worker_idle() {
	local loops diff
	oms_psql -d "$DB" -f "$UPGRADE_DIR/snapshot.sql" >/dev/null
	wt_sql "$DB" "SELECT public.upgrade_snapshot('filled')" >/dev/null
	loops=$(worker_status loops)
	if ! wt_wait_until 60 loops_past $((loops + 3)); then
		wt_not_ok "the worker loops while it waits" "loops $loops -> $(worker_status loops)"
		return
	fi
	wt_sql "$DB" "SELECT public.upgrade_snapshot('waited')" >/dev/null
	diff=$(snapshot_diff filled waited)
	wt_check "nothing moved over $(($(worker_status loops) - loops)) worker loops while $DB had oms ${CHAIN[0]}" \
		"$([[ -z "$diff" ]] && echo 0 || echo 1)" "$diff"
}

# The update itself, with the worker running: the snapshots before and after
# it in the same transaction, so nothing else can come between them.
update_under_worker() {
	local exclude out t0
	exclude="{$(IFS=,; echo "${DATA_CHANGES[*]}")}"
	wt_sql "$DB" "CREATE TABLE public.upgrade_pending AS SELECT id, aggregateid, seq, type FROM oms.outbox" >/dev/null
	LOG_AT_UPDATE=$(stat -c %s "$WT_LOG")
	t0=$(wt_now)
	if ! out=$(oms_psql -d "$DB" -v exclude="$exclude" 2>&1 <<-'EOF'
		BEGIN;
		SELECT public.upgrade_snapshot('before', NULL, :'exclude');
		ALTER EXTENSION oms UPDATE;
		SELECT public.upgrade_snapshot('after', 'before', :'exclude');
		COMMIT;
	EOF
	); then
		wt_not_ok "ALTER EXTENSION oms UPDATE with the worker running" "$out"
		return 1
	fi
	wt_check "ALTER EXTENSION oms UPDATE with the worker running: ${CHAIN[0]} -> $(installed_version "$DB") in $(wt_elapsed "$t0") s" \
		"$([[ "$(installed_version "$DB")" == "$(default_version)" ]] && echo 0 || echo 1)"
	local lost new summary
	lost=$(snapshot_diff before after | grep -v ': only after' || true)
	new=$(snapshot_diff before after | grep ': only after' || true)
	summary=$(wt_sql "$DB" "SELECT format('%s tables and sequences, %s rows', count(*), sum(row_count))
		FROM public.upgrade_snapshot WHERE label = 'before'")
	wt_check "no row lost or changed by the update ($summary${DATA_CHANGES[*]:+; leaving out ${DATA_CHANGES[*]}})" \
		"$([[ -z "$lost" ]] && echo 0 || echo 1)" "$lost"
	[[ -z "$new" ]] || wt_diag "tables the update created: $new"
	catalog_of "$DB" "$WORK/catalog-data.txt"
	check_same_catalog "$DB, updated with data under the worker" "$WORK/catalog-data.txt"
}

# ----------------------------------------------------------------- after
outbox_empty() { wt_sql_true "$DB" "SELECT NOT EXISTS (SELECT FROM oms.outbox)"; }

check_after_update() {
	local t0 wrong errors
	t0=$(wt_now)
	if wt_wait_until 120 sagas_settled; then
		wt_ok "the worker finished every saga in flight ($(wt_elapsed "$t0") s after the update)"
	else
		wt_not_ok "the worker finished every saga in flight" "$(sagas_summary)" "$(tail -n 20 "$WT_LOG")"
	fi
	wrong=$(wrong_statuses after)
	wt_check "every order ended as its payment method and cancel say" \
		"$([[ -z "$wrong" ]] && echo 0 || echo 1)" "$wrong" "$(sagas_summary)"
	if wt_wait_until 60 outbox_empty; then
		wt_ok "the relay emptied the outbox ($(wt_sql "$DB" "SELECT count(*) FROM public.upgrade_pending") events were pending at the update)"
	else
		wt_not_ok "the relay emptied the outbox" "$(wt_sql_quiet "$DB" "SELECT oms_relay_status()")"
	fi
	errors=$(tail -c +"$((LOG_AT_UPDATE + 1))" "$WT_LOG" | grep -E 'oms (saga )?worker: (ERROR|FATAL|PANIC):|event=(worker_xact_failed|worker_batch_failed|relay_batch_failed|saga_error)' || true)
	wt_check "no worker error in the server log since the update" \
		"$([[ -z "$errors" ]] && echo 0 || echo 1)" "$(head -n 10 <<<"$errors")"
}

check_delivery() {
	local rc=0 out name ok detail
	# The outbox is empty, so Kafka acknowledged everything: one pass of kcat
	# to the end of every partition reads it all.
	timeout 60 kcat -C -b "$OMS_KAFKA_BOOTSTRAP" -t "$TOPIC" -o beginning -e -J -q \
		>"$WORK/consumed.json" 2>"$WORK/kcat.err" || rc=$?
	wt_check "kcat read the topic to its end ($(wc -l <"$WORK/consumed.json") records)" "$rc" "$(head -n 5 "$WORK/kcat.err")"
	if ! out=$(oms_psql -At -F '|' -d "$DB" -f "$UPGRADE_DIR/delivery.sql" <"$WORK/consumed.json" 2>&1); then
		wt_not_ok "the delivery checks ran" "$out"
		return
	fi
	while IFS='|' read -r name ok detail; do
		[[ -n "$name" ]] || continue
		wt_check "kafka: $name" "$ok" "$detail"
	done <<<"$out"
}

# ------------------------------------------------------------------ main
T0=$(wt_now)
check_released_scripts
check_installed
if ! check_chain; then
	exit "$WT_RC"
fi

# Main shell, not $(...): the broker lives as long as this script.
oms_kafka_start --topic "$TOPIC" --partitions 3
# Short retry and timeout: fill.sql leaves sagas waiting on both.
wt_start_cluster "oms.database_name = '$DB'" \
	"oms.kafka_brokers = '$OMS_KAFKA_BOOTSTRAP'" \
	"oms.retry_base = '3s'" \
	"oms.step_timeout = '5s'"
oms_on_exit cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/oms-upgrade.XXXXXX")
wt_diag "versions: ${CHAIN[*]}; mock Kafka: $OMS_KAFKA_BOOTSTRAP"

catalog_tests
if fill_database; then
	check_worker_idle
	if update_under_worker; then
		check_after_update
		check_delivery
	fi
fi
wt_diag "suite took $(wt_elapsed "$T0") s"
exit "$WT_RC"
