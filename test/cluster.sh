# shellcheck shell=bash
# test/cluster.sh: an oms cluster (one router database, N shard databases)
# inside the current throwaway PostgreSQL cluster, for tests, the demo and
# the benchmark.  Source it after test/lib.sh, once oms_start_cluster ran
# (or PGHOST/PGPORT name a server with oms and plproxy installed):
#
#   oms_cluster_create NAME N [P]   router database NAME, shards NAME_s0 ..
#                                    NAME_s<N-1>, P partitions (default 16,
#                                    a power of two) dealt round robin:
#                                    partition p belongs to shard p % N
#   oms_cluster_drop NAME           drops the router and its shards
#   oms_cluster_shard_of_partition P  the shard database owning partition P
#
# oms_cluster_create leaves OMS_CLUSTER_ROUTER (the router database) and
# OMS_CLUSTER_SHARDS (an array of the shard databases, by shard number).
# Each shard is an ordinary oms database (oms_fresh_db) plus, when those
# exist, the companion extension oms_shard and oms_configure_shard(); the
# router has the extension oms_router.  Router and shards get the same
# SQL/MED server oms_cluster (PL/Proxy's cluster) and a user mapping for
# PUBLIC: PL/Proxy then connects as the calling role (docs/cluster.md).
# Workers: the test server's workers serve only the databases named in
# oms.database_name (oms_start_cluster "oms.database_name = 'demo_s0,
# demo_s1, demo_s2'" to have them); without that, drive sagas with
# oms_run_sagas() through the router, which runs every shard's.

OMS_CLUSTER_PARTITIONS_DEFAULT=16
# PL/Proxy's cluster options (docs/cluster.md, "PL/Proxy options").
OMS_CLUSTER_OPTIONS="query_timeout '120', connection_lifetime '1800'"

# psql -At in a database, statements on stdin or as arguments.
_oms_cluster_sql() {
	local db=$1
	shift
	PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" oms_psql -At -d "$db" "$@"
}

# True when the installed server knows the extension.
_oms_cluster_has_extension() {
	[[ "$(_oms_cluster_sql postgres -c "SELECT count(*) FROM pg_available_extensions WHERE name = '$1'")" == 1 ]]
}

# The connect string of a database in this server (socket directory and
# port; no user: PL/Proxy adds the calling role).
_oms_cluster_connstr() {
	printf "dbname=%s host=%s port=%s connect_timeout=5" "$1" "$PGHOST" "$PGPORT"
}

# Creates the oms_cluster server in database $1 with the p<N> options.
_oms_cluster_server() {
	local db=$1 partitions=$2 p opts=""
	shift 2
	local shards=("$@")
	for ((p = 0; p < partitions; p++)); do
		opts+=", p$p '$(_oms_cluster_connstr "${shards[p % ${#shards[@]}]}")'"
	done
	_oms_cluster_sql "$db" >/dev/null <<-SQL
		CREATE EXTENSION IF NOT EXISTS plproxy;
		DROP SERVER IF EXISTS oms_cluster CASCADE;
		CREATE SERVER oms_cluster FOREIGN DATA WRAPPER plproxy OPTIONS ($OMS_CLUSTER_OPTIONS$opts);
		CREATE USER MAPPING FOR PUBLIC SERVER oms_cluster;
		GRANT USAGE ON FOREIGN SERVER oms_cluster TO oms_app, oms_reader, oms_admin;
	SQL
}

oms_cluster_create() {
	local name=$1 n=$2 partitions=${3:-$OMS_CLUSTER_PARTITIONS_DEFAULT} k p db parts
	OMS_CLUSTER_ROUTER=$name
	OMS_CLUSTER_SHARDS=()
	for ((k = 0; k < n; k++)); do
		OMS_CLUSTER_SHARDS+=("${name}_s$k")
	done
	for ((k = 0; k < n; k++)); do
		db=${OMS_CLUSTER_SHARDS[k]}
		oms_fresh_db "$db" >/dev/null
		if _oms_cluster_has_extension oms_shard; then
			_oms_cluster_sql "$db" -c "CREATE EXTENSION oms_shard CASCADE" >/dev/null
		fi
		_oms_cluster_server "$db" "$partitions" "${OMS_CLUSTER_SHARDS[@]}"
		parts=""
		for ((p = k; p < partitions; p += n)); do
			parts+="${parts:+,}$p"
		done
		# Guarded so that the harness also runs against an oms without shard
		# identity (an unconfigured node owns everything: one shard only).
		if [[ "$(_oms_cluster_sql "$db" -c "SELECT to_regprocedure('oms_configure_shard(integer,integer,integer[])') IS NOT NULL")" == t ]]; then
			_oms_cluster_sql "$db" -c "SELECT oms_configure_shard($k, $partitions, '{$parts}')" >/dev/null
		fi
	done
	PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" oms_psql -d postgres \
		-c "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" -c "CREATE DATABASE \"$name\"" >/dev/null
	_oms_cluster_sql "$name" -c "CREATE EXTENSION oms_router CASCADE" >/dev/null
	_oms_cluster_server "$name" "$partitions" "${OMS_CLUSTER_SHARDS[@]}"
	export OMS_CLUSTER_ROUTER
}

oms_cluster_drop() {
	local name=$1 db
	for db in $(_oms_cluster_sql postgres -c "SELECT datname FROM pg_database WHERE datname LIKE '${name}\_s%' OR datname = '$name'"); do
		PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" oms_psql -d postgres -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null
	done
}

oms_cluster_shard_of_partition() {
	printf '%s\n' "${OMS_CLUSTER_SHARDS[$1 % ${#OMS_CLUSTER_SHARDS[@]}]}"
}
