#!/usr/bin/env bash
# test/suites/kafka_secrets.sh: Kafka credentials live in oms.kafka_config_file
# and never show up anywhere else.
#
# This suite's own cluster (oms.database_name = kafka_secrets, the remote
# payment provider on, so both the relay's producer and the reply consumer
# are built) with a mock Kafka cluster.  oms.kafka_config_file names
# kafka.properties in the data directory; log_min_messages = debug2 so
# that librdkafka's debug output (debug=conf, later debug=all, set in the
# file) reaches the server log, and oms.log_min_interval = 0 so that no
# librdkafka line is held back by the rate limit.  Random secrets (letters only) are written
# to the file as sasl.username, sasl.password and ssl.key.password; the
# security protocol stays plaintext, so the mock broker still takes events.
#   1. No file yet: producer and consumer refused (bad_config), the reason
#      names the file, logged once however often the worker loops.
#   2. The file appears, reload: events are published; librdkafka's
#      configuration dump shows the file's properties, secrets [redacted].
#   3. Reload with the same content (file touched, mode 0400): no client is
#      rebuilt.  The worker is known to have processed the reload when an
#      event lands on a topic set in the same reload.
#   4. New content (password rotated, debug=all): both clients rebuilt.
#   5. Refused files, each followed by reload: group-readable (0644), owned
#      by another user, a directory, a secret pasted on a line of its own,
#      a reserved property.  Each turns both clients to bad_config with a
#      message naming the file (and line and property); then a root-owned
#      0640 file is accepted and publishing resumes.
#   6. A malformed sasl.oauthbearer.config: librdkafka's own error quotes
#      the value; oms logs and stores it [redacted].
#   7. ALTER SYSTEM SET oms.kafka_config with sasl.password fails with a
#      clear error and writes nothing to postgresql.auto.conf; the same
#      in postgresql.conf is refused at reload.
#   8. None of the file's secrets (nor the one in postgresql.conf) is in
#      the server log, pg_settings (every column, read as superuser),
#      pg_file_settings, postgresql.auto.conf, pg_stat_activity, or the
#      output of any status, health or metrics function; the refused ALTER
#      SYSTEM value only in the STATEMENT line PostgreSQL logs for a failed
#      statement.
# shellcheck disable=SC2317 # functions here are called indirectly (wait loops, exit hooks), which shellcheck 0.9 cannot follow
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck source=test/process/common.sh
source "$OMS_ROOT/test/process/common.sh"
# shellcheck source=test/kafka/broker.sh
source "$OMS_ROOT/test/kafka/broker.sh"
# shellcheck source=test/relay/lib.sh
source "$OMS_ROOT/test/relay/lib.sh"

DB=kafka_secrets
TOPIC=oms.order-events
ITEMS='[{"sku": "SKU-01", "quantity": 1, "unit_price": 100}]'

cleanup() { wt_keep_log kafka_secrets; }

# Letters only, so that no hex id or number in a log can match by chance.
secret() {
	/usr/bin/python3 -c 'import secrets, string, sys
print(sys.argv[1] + "".join(secrets.choice(string.ascii_letters) for _ in range(30)))' "$1"
}
S_USER=$(secret Zu)
S_PASS=$(secret Zp)
S_KEY=$(secret Zk)
S_PASS2=$(secret Zq)
S_OAUTH=$(secret Zo)
S_PASTED=$(secret Zx)
S_ALTER=$(secret Za)
S_CONF=$(secret Zc)
# Never to be seen: the file's secrets, and one refused in postgresql.conf.
SECRETS=("$S_USER" "$S_PASS" "$S_KEY" "$S_PASS2" "$S_OAUTH" "$S_PASTED" "$S_CONF")

oms_kafka_start --topic "$TOPIC" --partitions 1
for t in oms.sync-1 oms.sync-2 oms.payment-replies; do oms_kafka_cmd "create $t 1" >/dev/null; done
wt_start_cluster "oms.database_name = '$DB'" \
	"oms.kafka_brokers = '$OMS_KAFKA_BOOTSTRAP'" \
	"oms.kafka_config_file = 'kafka.properties'" \
	"oms.payment_provider = 'kafka'" \
	"oms.log_min_interval = 0" \
	"log_min_messages = debug2"
oms_on_exit cleanup
PROPS="$OMS_PGDATA/kafka.properties"

oms_fresh_db "$DB" >/dev/null
wt_setup_stock "$DB" 3 100000

# Usage: write_props OWNER MODE < content: replaces the file.
write_props() {
	local tmp
	tmp=$(mktemp)
	cat >"$tmp"
	install -o "$1" -g postgres -m "$2" "$tmp" "$PROPS"
	rm -f "$tmp"
}
reload() { wt_sql postgres "SELECT pg_reload_conf()" >/dev/null; }
new_order() { wt_sql "$DB" "SELECT 1 FROM oms_create_order('secrets', '$ITEMS')" >/dev/null; }
consumer_state() { wt_sql_quiet "$DB" "SELECT oms._inbox_shmem_status() ->> 'consumer'"; }
consumer_error() { wt_sql_quiet "$DB" "SELECT oms._inbox_shmem_status() ->> 'last_error'"; }
loops() { wt_worker_status "$DB" loops; }
count_log() { grep -cF -- "$1" "$WT_LOG" || true; }
# Usage: topic_has_data TOPIC: its only partition's high watermark is above 0.
topic_has_data() {
	local q
	q=$(timeout 10 kcat -Q -b "$OMS_KAFKA_BOOTSTRAP" -t "$1:0:-1" 2>/dev/null) || return 1
	[[ "${q##* }" =~ ^[0-9]+$ ]] && ((${q##* } > 0))
}
# Usage: refused TEXT: producer and consumer both refused, their errors containing TEXT.
refused() {
	[[ "$(rl_status "$DB" last_error)" == *"$1"* && "$(consumer_state)" == bad_config &&
		"$(consumer_error)" == *"$1"* ]]
}
# Usage: published: a new event leaves the outbox (creates one each call).
published() { new_order && rl_outbox_empty "$DB"; }
# Usage: check_refused NAME TEXT: waits until both clients report TEXT.
check_refused() {
	if wt_wait_until 30 refused "$2"; then
		wt_ok "$1: relay and reply consumer refused, bad_config, the error names it"
	else
		wt_not_ok "$1: relay and reply consumer refused, bad_config, the error names it" \
			"relay: $(rl_status "$DB" last_error)" "consumer: $(consumer_state) $(consumer_error)"
	fi
}

worker_up() { [[ -n "$(wt_worker_pid "$DB")" ]]; }
if ! wt_wait_until 60 worker_up; then
	wt_not_ok "the worker serves $DB" "$(tail -n 20 "$WT_LOG")"
	exit 1
fi

# ------------------------------------------------------------ 1. no file
MISSING="could not open oms.kafka_config_file \"$PROPS\": No such file or directory"
check_refused "a missing file" "$MISSING"
new_order
L0=$(loops)
looped() { new_order && (($(loops) >= L0 + 5)); }
wt_wait_until 30 looped || true
wt_check "the missing file is logged once per client (relay_config_invalid, inbox_config_invalid) over $(($(loops) - L0)) more loops" \
	"$([[ "$(grep 'event=relay_config_invalid' "$WT_LOG" | grep -cF "$PROPS")" == 1 &&
		"$(grep 'event=inbox_config_invalid' "$WT_LOG" | grep -cF "$PROPS")" == 1 ]] && echo 0 || echo 1)" \
	"$(grep -E 'event=(relay|inbox)_config_invalid' "$WT_LOG")"
wt_check "nothing is published while the file is refused" \
	"$([[ "$(wt_sql "$DB" "SELECT count(*) > 0 FROM oms.outbox")" == t ]] && echo 0 || echo 1)"

# ------------------------------------------------------------ 2. the file appears
write_props postgres 0600 <<EOF
# Kafka credentials of oms (test values)
! the other comment style

security.protocol = plaintext
sasl.username = $S_USER
sasl.password=$S_PASS
	ssl.key.password =	$S_KEY
debug = conf
EOF
reload
if wt_wait_until 60 published; then
	wt_ok "after the file appears and a reload, the relay publishes (the file is read)"
else
	wt_not_ok "after the file appears and a reload, the relay publishes (the file is read)" \
		"$(wt_sql_quiet "$DB" "SELECT oms_relay_status()")"
fi
consumer_running() { [[ "$(consumer_state)" == running ]]; }
wt_check "the reply consumer is built from the file too (running)" \
	"$(wt_wait_until 30 consumer_running && echo 0 || echo 1)" "$(consumer_state) $(consumer_error)"
for who in relay inbox; do
	dump=$(grep "event=kafka_log" "$WT_LOG" | grep "client=$who" | grep "facility=CONF" || true)
	wt_check "librdkafka's configuration dump ($who, debug=conf from the file) shows sasl.username, sasl.password and ssl.key.password as [redacted]" \
		"$([[ "$dump" == *"sasl.username = [redacted]"* && "$dump" == *"sasl.password = [redacted]"* &&
			"$dump" == *"ssl.key.password = [redacted]"* && "$dump" == *"debug = conf"* ]] && echo 0 || echo 1)" \
		"$(head -n 30 <<<"$dump")"
done

# ------------------------------------------------------------ 3. same content
R0=$(count_log "event=relay_started")
I0=$(count_log "event=inbox_started")
chmod 0400 "$PROPS"
touch "$PROPS"
wt_sql postgres "ALTER SYSTEM SET oms.kafka_topic = 'oms.sync-1'" >/dev/null
reload
on_sync_1() { new_order && topic_has_data oms.sync-1; }
if wt_wait_until 60 on_sync_1; then
	wt_check "a reload with the file's content unchanged (mode and mtime changed) rebuilds no client" \
		"$([[ "$(count_log "event=relay_started")" == "$R0" && "$(count_log "event=inbox_started")" == "$I0" ]] && echo 0 || echo 1)" \
		"relay_started $R0 -> $(count_log "event=relay_started"), inbox_started $I0 -> $(count_log "event=inbox_started")"
else
	wt_not_ok "the worker processed the reload (an event on oms.sync-1)" "$(wt_sql_quiet "$DB" "SELECT oms_relay_status()")"
fi

# ------------------------------------------------------------ 4. new content
write_props postgres 0600 <<EOF
security.protocol=plaintext
sasl.username=$S_USER
sasl.password=$S_PASS2
debug=all
socket.keepalive.enable=true
EOF
reload
rebuilt() {
	(($(count_log "event=relay_started") > R0)) && (($(count_log "event=inbox_started") > I0)) &&
		[[ "$(grep "facility=CONF" "$WT_LOG" | grep -c "socket.keepalive.enable = true")" -ge 2 ]]
}
wt_check "a reload with new content (password rotated) rebuilds the producer and the consumer with it" \
	"$(wt_wait_until 60 rebuilt && echo 0 || echo 1)" \
	"relay_started $R0 -> $(count_log "event=relay_started"), inbox_started $I0 -> $(count_log "event=inbox_started")"
wt_check "publishing goes on with the new file" "$(wt_wait_until 60 published && echo 0 || echo 1)"
GOOD=$(cat "$PROPS")

# ------------------------------------------------------------ 5. refused files
chmod 0644 "$PROPS"
reload
check_refused "a group- and world-readable file (0644)" "oms.kafka_config_file \"$PROPS\" has group or world access"
chown nobody "$PROPS"
reload
check_refused "a file owned by another user" "oms.kafka_config_file \"$PROPS\" must be owned by the database server's user or root"
wt_sql postgres "ALTER SYSTEM SET oms.kafka_config_file = '$OMS_PGDATA/global'" >/dev/null
reload
check_refused "a directory" "oms.kafka_config_file \"$OMS_PGDATA/global\" is not a regular file"
wt_sql postgres "ALTER SYSTEM SET oms.kafka_config_file = 'kafka.properties'" >/dev/null
write_props postgres 0600 <<EOF
$GOOD
$S_PASTED
EOF
reload
check_refused "a secret pasted on a line of its own" "line 6 of oms.kafka_config_file \"$PROPS\" is not of the form property=value"
write_props postgres 0600 <<EOF
$GOOD
enable.idempotence = false
EOF
reload
check_refused "a reserved property" "property \"enable.idempotence\" (line 6 of oms.kafka_config_file \"$PROPS\") cannot be set: oms sets it itself"
L0=$(loops)
wt_wait_until 30 looped || true
invalid=$(grep -E 'event=(relay|inbox)_config_invalid' "$WT_LOG" | grep -cF 'enable.idempotence' || true)
wt_check "each refusal is logged once per client ($invalid lines for the reserved property)" \
	"$([[ "$invalid" == 2 ]] && echo 0 || echo 1)"
wt_sql postgres "ALTER SYSTEM SET oms.kafka_topic = 'oms.sync-2'" >/dev/null
write_props root 0640 <<<"$GOOD"
reload
on_sync_2() { new_order && topic_has_data oms.sync-2 && rl_outbox_empty "$DB"; }
wt_check "fixed (owned by root, 0640) and reloaded: the relay publishes everything again" \
	"$(wt_wait_until 60 on_sync_2 && echo 0 || echo 1)" "$(wt_sql_quiet "$DB" "SELECT oms_relay_status()")"
wt_check "the reply consumer runs again" "$(wt_wait_until 30 consumer_running && echo 0 || echo 1)" \
	"$(consumer_state) $(consumer_error)"

# ------------------------------------------------------------ 6. librdkafka quotes a value
write_props postgres 0600 <<EOF
security.protocol = SASL_PLAINTEXT
sasl.mechanism = OAUTHBEARER
enable.sasl.oauthbearer.unsecure.jwt = true
sasl.oauthbearer.config = principal=oms bogus$S_OAUTH
EOF
reload
# The value's blank before "bogus" goes too: it is part of a quoted run of the value.
quoted() { grep 'event=kafka_error' "$WT_LOG" | grep -qE 'Unrecognized sasl.oauthbearer.config beginning at: ?\[redacted\]"'; }
wt_check "librdkafka's OAUTHBEARER error quoting the malformed sasl.oauthbearer.config is logged [redacted]" \
	"$(wt_wait_until 60 quoted && echo 0 || echo 1)" "$(grep 'event=kafka_error' "$WT_LOG" | tail -n 3)"
stored() {
	local re='Unrecognized sasl\.oauthbearer\.config beginning at: ?\[redacted\]$'
	[[ "$(consumer_error)" =~ $re ]]
}
wt_check "the same error is stored [redacted] as the reply consumer's last_error" \
	"$(wt_wait_until 30 stored && echo 0 || echo 1)" "$(consumer_error)"
write_props postgres 0600 <<<"$GOOD"
reload
wt_check "back to the good file: publishing resumes" "$(wt_wait_until 60 published && echo 0 || echo 1)"

# ------------------------------------------------------------ 7. ALTER SYSTEM refused
before=$(cat "$OMS_PGDATA/postgresql.auto.conf")
out=$(wt_sql postgres "ALTER SYSTEM SET oms.kafka_config = 'compression.type=lz4, sasl.password=$S_ALTER'" 2>&1) && rc=0 || rc=$?
wt_check "ALTER SYSTEM SET oms.kafka_config with sasl.password fails: the error names the property and oms.kafka_config_file, not the value" \
	"$([[ $rc != 0 && "$out" == *'oms.kafka_config cannot set secret property "sasl.password"'* &&
		"$out" == *'oms.kafka_config_file'* && "$out" != *"$S_ALTER"* ]] && echo 0 || echo 1)" "$out"
wt_check "the refused ALTER SYSTEM wrote nothing to postgresql.auto.conf" \
	"$([[ "$(cat "$OMS_PGDATA/postgresql.auto.conf")" == "$before" ]] && echo 0 || echo 1)"
stmt_only=$(grep -F "$S_ALTER" "$WT_LOG" | grep -vc 'STATEMENT:' || true)
wt_check "the refused value reaches the server log only in PostgreSQL's STATEMENT line of the failed statement" \
	"$([[ "$stmt_only" == 0 ]] && echo 0 || echo 1)" "$(grep -F "$S_ALTER" "$WT_LOG" | cut -c 1-200)"

conf_refused() { (($(count_log 'oms.kafka_config cannot set secret property "sasl.password"') > n0)); }
n0=$(count_log 'oms.kafka_config cannot set secret property "sasl.password"')
printf "oms.kafka_config = 'sasl.password=%s'\n" "$S_CONF" | oms_as_pg tee -a "$OMS_PGDATA/postgresql.conf" >/dev/null
reload
wt_check "sasl.password in oms.kafka_config in postgresql.conf is refused at reload, logged without the value (checked below)" \
	"$(wt_wait_until 30 conf_refused && echo 0 || echo 1)"
oms_as_pg sed -i "/$S_CONF/d" "$OMS_PGDATA/postgresql.conf"
reload

# ------------------------------------------------------------ 8. nowhere else
# Usage: leaks TEXT -> the labels of the file's secrets (whole, or either half) found in TEXT.
leaks() {
	local s found=""
	for s in "${SECRETS[@]}"; do
		if [[ "$1" == *"$s"* || "$1" == *"${s:0:16}"* || "$1" == *"${s:16}"* ]]; then
			found+="${s:0:2} "
		fi
	done
	printf '%s' "$found"
}
check_clean() {
	local what=$1 text=$2 found
	found=$(leaks "$text")
	wt_check "no secret in $what" "$([[ -z "$found" ]] && echo 0 || echo 1)" "found: $found"
}
# The error paths above ran; make sure the worker's last status is current.
wt_wait_until 30 published || true
check_clean "the server log ($(wc -l <"$WT_LOG") lines, librdkafka debug=conf and debug=all included)" "$(cat "$WT_LOG")"
check_clean "pg_settings, every column, read as superuser" "$(wt_sql postgres "SELECT s::text FROM pg_settings AS s")"
check_clean "pg_file_settings" "$(wt_sql postgres "SELECT f::text FROM pg_file_settings AS f")"
check_clean "postgresql.auto.conf" "$(cat "$OMS_PGDATA/postgresql.auto.conf")"
check_clean "pg_stat_activity" "$(wt_sql postgres "SELECT a::text FROM pg_stat_activity AS a")"
for q in "SELECT oms_relay_status()" "SELECT oms_health()" "SELECT oms_metrics()" \
	"SELECT w::text FROM oms_worker_status() AS w" "SELECT oms._inbox_shmem_status()" \
	"SELECT r::text FROM oms._relay_shmem_status() AS r" "SELECT m::text FROM oms.metrics AS m"; do
	check_clean "$q" "$(wt_sql "$DB" "$q")"
done
wt_check "the server log shows the secret properties' names but no value (sasl.password = [redacted] seen $(count_log 'sasl.password = [redacted]') times)" \
	"$([[ "$(count_log 'sasl.password = [redacted]')" -ge 2 ]] && echo 0 || echo 1)"

exit "$WT_RC"
