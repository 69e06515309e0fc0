#!/usr/bin/env bash
# test/suites/router.sh: the router contract (docs/cluster.md).  Makes a
# router database and its shards with test/cluster.sh, then
#   - runs the client API contract (test/client/test_client.py) through
#     the router: every check must pass there too;
#   - runs test/router/test_router.py: the router's API equals oms's
#     (oms.api_differences), every routed function gives what the owning
#     shard gives (errors included), idempotent creates land on their key's
#     shard, cross-shard reads cover every shard.
# Three shards once oms core has shard identity (oms_configure_shard);
# until then one unconfigured shard, and the checks that need more say SKIP.
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck source=test/cluster.sh
source "$OMS_ROOT/test/cluster.sh"

router=oms_router_suite
partitions=16
shard_count=3
probe=oms_router_probe
oms_fresh_db "$probe" >/dev/null
if [[ "$(oms_psql -At -d "$probe" -c "SELECT to_regprocedure('oms_configure_shard(integer,integer,integer[])') IS NOT NULL")" != t ]]; then
	shard_count=1
fi
oms_psql -d postgres -c "DROP DATABASE $probe" >/dev/null

oms_cluster_create "$router" "$shard_count" "$partitions"
echo "# router $OMS_CLUSTER_ROUTER, shards ${OMS_CLUSTER_SHARDS[*]}"

rc=0
# The client contract, its check names prefixed so a failure says where.
PGDATABASE=$router OMS_CLIENT_SHARDS="${OMS_CLUSTER_SHARDS[*]}" \
	/usr/bin/python3 "$OMS_ROOT/test/client/test_client.py" >"$OMS_CLUSTER_DIR/router_client.out" 2>&1 || rc=1
sed -E 's/^(not ok|ok) - /\1 - through the router: /' "$OMS_CLUSTER_DIR/router_client.out"

OMS_ROUTER=$router OMS_SHARDS="${OMS_CLUSTER_SHARDS[*]}" OMS_PARTITIONS=$partitions \
	/usr/bin/python3 "$OMS_ROOT/test/router/test_router.py" || rc=1

oms_cluster_drop "$router"
exit "$rc"
