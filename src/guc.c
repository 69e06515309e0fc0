/*-------------------------------------------------------------------------
 *
 * guc.c
 *	  The oms.* configuration settings.
 *
 * Every setting lives under the "oms." prefix, which is reserved so that a
 * misspelt oms setting is reported instead of silently becoming a
 * placeholder.  docs/configuration.md describes each one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "nodes/pg_list.h"
#include "utils/guc.h"
#include "utils/varlena.h"

#include "oms.h"

/* How long an idempotency key replays its response, in seconds. */
int			oms_idempotency_ttl = 24 * 60 * 60;

/* Saga engine: see docs/configuration.md.  Read from SQL with current_setting(). */
static int	oms_reservation_ttl = 15 * 60;
static int	oms_step_timeout = 30 * 1000;
static int	oms_retry_base = 1000;
static int	oms_retry_max = 60 * 1000;
static int	oms_max_attempts = 5;

/* Set by a superuser while restoring a dump: rows arrive in their final status. */
bool		oms_restoring = false;

/* Input limits: guard against absurd orders before any arithmetic. */
int			oms_max_order_items = 1000;
int			oms_max_item_quantity = 1000000;

/*
 * oms.database_name: comma-separated databases the background worker
 * serves, one worker each.  Read by the postmaster when it sizes shared
 * memory, hence PGC_POSTMASTER.  An empty list starts no worker at all.
 */
char	   *oms_database_name = NULL;

/*
 * oms.worker_enabled: off pauses the workers.  They stay connected and keep
 * looping at oms.worker_naptime, so switching back on needs only a reload.
 */
bool		oms_worker_enabled = true;

/*
 * oms.worker_naptime: the longest a worker sleeps between two batches when
 * nobody wakes it, and how often the launcher looks for missing workers.
 * Committed work normally wakes the worker at once; this timeout only
 * covers wakes that were missed.
 */
int			oms_worker_naptime = 1000;

/*
 * oms.worker_batch_size: saga steps one worker transaction handles at
 * most.  Bounds transaction length and lock time; a full batch makes the
 * worker start the next one without sleeping.
 */
int			oms_worker_batch_size = 100;

static void define_saga_gucs(void);
static bool check_database_name(char **newval, void **extra, GucSource source);

/*
 * Splits an oms.database_name value into a list of names pointing into
 * "rawstring", which is modified.  Names keep their case (they are
 * database names, not SQL identifiers); double quotes allow a comma in a
 * name.  Returns false on a syntax error.
 */
bool
oms_split_database_names(char *rawstring, List **names)
{
	return SplitGUCList(rawstring, ',', names);
}

/*
 * Rejects lists the launcher could not serve.  Like any invalid value of an
 * extension's setting in postgresql.conf, it is reported as a WARNING at
 * startup and the default applies.
 */
static bool
check_database_name(char **newval, void **extra, GucSource source)
{
	char	   *raw;
	List	   *names;
	ListCell   *lc;
	bool		ok = true;

	if (*newval == NULL)
		return true;

	raw = pstrdup(*newval);
	if (!oms_split_database_names(raw, &names))
	{
		GUC_check_errdetail("List syntax is invalid.");
		pfree(raw);
		return false;
	}

	if (list_length(names) > OMS_MAX_DATABASES)
	{
		GUC_check_errdetail("At most %d databases can be listed.", OMS_MAX_DATABASES);
		ok = false;
	}

	foreach(lc, names)
	{
		const char *name = lfirst(lc);

		if (!ok)
			break;
		if (strlen(name) >= NAMEDATALEN)
		{
			GUC_check_errdetail("Database name \"%s\" is longer than %d bytes.",
								name, NAMEDATALEN - 1);
			ok = false;
			break;
		}
		for (ListCell *prev = list_head(names); prev != lc; prev = lnext(names, prev))
		{
			if (strcmp(lfirst(prev), name) == 0)
			{
				GUC_check_errdetail("Database \"%s\" is listed twice.", name);
				ok = false;
				break;
			}
		}
	}

	list_free(names);
	pfree(raw);
	return ok;
}

void
oms_define_gucs(void)
{
	define_saga_gucs();

	DefineCustomIntVariable("oms.idempotency_ttl",
							"How long an idempotency key replays the stored response.",
							"After this time oms_purge_idempotency_keys() removes the key and "
							"the key may be used for a new request.",
							&oms_idempotency_ttl,
							24 * 60 * 60, 1, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("oms.max_order_items",
							"Largest number of lines accepted in one order.",
							NULL,
							&oms_max_order_items,
							1000, 1, 100000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("oms.max_item_quantity",
							"Largest quantity accepted on one order line.",
							NULL,
							&oms_max_item_quantity,
							1000000, 1, INT_MAX,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("oms.restoring",
							 "Accepts orders inserted in any status, for restoring a dump.",
							 "While on, inserted orders keep the status and version they carry. "
							 "Status changes by UPDATE stay guarded.",
							 &oms_restoring,
							 false,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("oms.database_name",
							   "Databases the oms background worker serves.",
							   "A comma-separated list; one worker runs in each listed "
							   "database that exists.  An empty list runs no worker.",
							   &oms_database_name,
							   "postgres",
							   PGC_POSTMASTER,
							   GUC_LIST_INPUT,
							   check_database_name, NULL, NULL);

	DefineCustomBoolVariable("oms.worker_enabled",
							 "Lets the oms background workers process work.",
							 "When off, the workers stay connected but do nothing.",
							 &oms_worker_enabled,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("oms.worker_naptime",
							"Longest sleep of an oms background worker between batches.",
							"Workers are woken when work is committed; this timeout "
							"covers missed wakes.  The launcher checks for missing "
							"workers at the same interval.",
							&oms_worker_naptime,
							1000, 10, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("oms.worker_batch_size",
							"Saga steps an oms background worker handles per transaction.",
							NULL,
							&oms_worker_batch_size,
							100, 1, 10000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("oms");
}

static const struct config_enum_entry payment_provider_options[] = {
	{"test", 0, false},
	{NULL, 0, false}
};
static int	oms_payment_provider_choice = 0;

/*
 * Settings of the saga engine.  Durations are GUC units so that SQL reads
 * them as intervals ('15min', '30s').
 */
static void
define_saga_gucs(void)
{
	DefineCustomIntVariable("oms.reservation_ttl",
							"How long a reservation holds stock before it expires.",
							"An expired reservation stops counting against availability at once.",
							&oms_reservation_ttl,
							15 * 60, 1, INT_MAX,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("oms.step_timeout",
							"How long a saga step may wait for an answer before it counts as failed.",
							NULL,
							&oms_step_timeout,
							30 * 1000, 1, INT_MAX,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("oms.retry_base",
							"First retry delay of a transiently failed saga step; doubles per attempt.",
							NULL,
							&oms_retry_base,
							1000, 1, INT_MAX,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("oms.retry_max",
							"Largest retry delay of a saga step.",
							NULL,
							&oms_retry_max,
							60 * 1000, 1, INT_MAX,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("oms.max_attempts",
							"Attempts of a saga step (or compensation) before it counts as failed.",
							NULL,
							&oms_max_attempts,
							5, 1, 1000,
							PGC_SUSET, 0,
							NULL, NULL, NULL);
	DefineCustomEnumVariable("oms.payment_provider",
							 "Payment provider the saga engine calls.",
							 "test is the built-in deterministic provider.",
							 &oms_payment_provider_choice,
							 0, payment_provider_options,
							 PGC_SUSET, 0,
							 NULL, NULL, NULL);
}
