# oms: PGXS build, install, tests, demo and benchmark.

# oms, and oms_shard: the shard-to-shard stock calls of a sharded cluster
# (PL/Proxy functions, docs/architecture.md), installed only on shards;
# oms_router: the router database's oms API (docs/cluster.md).
EXTENSION   = oms oms_shard oms_router
# The version being built is oms.control's default_version.
EXTVERSION  = $(shell sed -n "s/^default_version = '\\(.*\\)'/\\1/p" oms.control)
MODULE_big  = oms
OBJS        = src/oms.o src/guc.o src/state.o src/money.o src/shmem.o src/worker.o src/launcher.o \
              src/kafka.o src/kafka_producer.o src/kafka_consumer.o src/kafka_config.o src/relay.o src/inbox.o src/log.o src/input.o src/xact.o src/trace.o

# The extension script is generated from src/sql/ in this order: roles.sql
# first, checks.sql last, and each fragment after those its "-- requires:"
# line names (objects it needs at creation time).  Each fragment grants its
# own objects; the suite install_order builds the script in another order
# those lines allow and finds the same catalog.
SQL_PARTS   = src/sql/roles.sql \
              src/sql/schema.sql \
              src/sql/shard.sql \
              src/sql/money.sql \
              src/sql/state.sql \
              src/sql/idempotency.sql \
              src/sql/orders.sql \
              src/sql/api.sql \
              src/sql/inventory.sql \
              src/sql/remote_stock.sql \
              src/sql/payment.sql \
              src/sql/saga.sql \
              src/sql/saga_api.sql \
              src/sql/fulfillment.sql \
              src/sql/returns.sql \
              src/sql/inbox.sql \
              src/sql/relay.sql \
              src/sql/worker.sql \
              src/sql/maintenance.sql \
              src/sql/pg_cron.sql \
              src/sql/metrics.sql \
              src/sql/health.sql \
              src/sql/analytics.sql \
              src/sql/checks.sql
DATA_built  = oms--$(EXTVERSION).sql
# Released scripts, frozen: the full script of 0.1.0 (so an old version can
# still be installed and updated) and one upgrade script per release.
DATA        = $(wildcard src/sql/versions/oms--*.sql) $(wildcard src/shard/oms_shard--*.sql)

# The router extension (docs/cluster.md): installed in a router database
# without oms, it routes the oms API to the shards through PL/Proxy.  Its
# script is generated the same way, from src/router/ in this order.
ROUTER_PARTS = src/router/routing.sql \
               src/router/api.sql \
               src/router/merge.sql \
               src/router/views.sql \
               src/router/checks.sql
DATA_built += oms_router--$(EXTVERSION).sql

REGRESS      = install state money orders idempotency bad_input privileges timeline_outbox inventory locations shard saga saga_at_once refund fulfillment returns relay kafka_config payment_kafka compensation input_rules tracing maintenance metrics health analytics
REGRESS_OPTS = --inputdir=. --load-extension=oms
# "make installcheck" runs the tests in the database test/run.sh uses (the
# health test's output names it); PGXS would say contrib_regression.
override CONTRIB_TESTDB = oms_regression
ISOLATION      = idempotency_race cancel_race oversell cancel_vs_worker refund_race saga_workers_race reserve_expired locations_race ship_cancel_race return_race
ISOLATION_OPTS = --inputdir=test --load-extension=oms

# Process-level tests (crash, restart, broker outage) with PostgreSQL's
# own TAP modules (docs/development.md).  "make installcheck" runs them as
# a normal user; as root (initdb refuses root) test/tap.sh runs them as the
# postgres user.
TAP_TESTS    = 1
PROVE_TESTS  = test/t/*.pl

SHLIB_LINK  = -lrdkafka

PG_CONFIG  ?= pg_config
PG_CPPFLAGS = -DOMS_VERSION=\"$(EXTVERSION)\" -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Werror=implicit-function-declaration
EXTRA_CLEAN = $(DATA_built) results regression.diffs regression.out test/results test/output_iso output_iso \
              src/*.gcno src/*.gcda src/build-flags.stamp

# COVERAGE=1 (set by "make coverage", test/coverage.sh) builds with gcov
# instrumentation; the normal build never sees these flags.
COVERAGE   ?= 0
ifeq ($(COVERAGE),1)
PG_CFLAGS  += -O0 --coverage
SHLIB_LINK += --coverage
endif

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# The TAP tests' own modules (OmsTest, OmsKafka); PGXS resets PROVE_FLAGS,
# which stays free for the user's flags.
PG_PROVE_FLAGS += -I ./test/perl

# glibc's _FORTIFY_SOURCE wants an optimizing build; -O0 would warn.
ifeq ($(COVERAGE),1)
override CPPFLAGS := $(filter-out -D_FORTIFY_SOURCE%,$(CPPFLAGS))
endif

oms--$(EXTVERSION).sql: $(SQL_PARTS)
	cat $^ > $@

oms_router--$(EXTVERSION).sql: $(ROUTER_PARTS)
	cat $^ > $@

# Every object depends on every header of src/ (one per module, see
# src/oms.h): a simple rule that is never wrong, at the price of a full
# rebuild when a header changes.  OMS_VERSION comes from the control file.
# The bitcode files (for JIT inlining) are built from the same sources.
OMS_HEADERS = $(wildcard src/*.h)
$(OBJS) $(OBJS:.o=.bc): $(OMS_HEADERS) oms.control

# The objects depend on the build flags in effect: switching COVERAGE on or
# off rebuilds everything, so a normal build after "make coverage" (and the
# other way round) never links instrumented and plain objects together.
src/build-flags.stamp: FORCE
	@echo 'COVERAGE=$(COVERAGE)' | cmp -s - $@ || echo 'COVERAGE=$(COVERAGE)' > $@
$(OBJS): src/build-flags.stamp
FORCE:

.PHONY: demo demo-cluster test bench valgrind lint format-check coverage FORCE
demo:
	bash test/demo.sh

# A router and three shards in one throwaway server (test/demo_cluster.sh).
demo-cluster:
	bash test/demo_cluster.sh

test:
	bash test/run.sh

bench:
	bash bench/run.sh

# regress + isolation suites and the worker with the server under valgrind
# memcheck: fails on memory errors in oms code (test/valgrind/README.md).
valgrind:
	bash test/valgrind/run.sh

# Static analysis (cppcheck, scan-build, shellcheck), the format check and
# the SQL conventions (docs/architecture.md); zero findings or the target
# fails (test/lint.sh).
lint:
	bash test/lint.sh

# Only the check of the C code against PostgreSQL's layout (pg_bsd_indent).
format-check:
	bash test/lint.sh format

# regress, isolation and suites with a gcov build; line and branch coverage
# of src/*.c on stdout and as HTML in log/coverage/ (test/coverage.sh).
coverage:
	bash test/coverage.sh
