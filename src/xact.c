/*-------------------------------------------------------------------------
 *
 * xact.c
 *	  The transaction bracket of the oms background workers: runs a piece
 *	  of work (a saga batch, a relay claim or settle, a payment reply) in a
 *	  transaction of its own and survives its errors; and decides whether
 *	  the extension is there to be called at all.
 *
 * The worker (worker.c), the relay (relay.c) and the inbox (inbox.c) all
 * run their SQL through here, so an error anywhere is handled one way: the
 * transaction is rolled back, the error is recorded in the worker's shared
 * memory slot and logged, and the process lives on.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "log.h"
#include "shmem.h"
#include "xact.h"

/* The worker this process is (oms_xact_init): its slot and process number. */
static int	xact_slotno = -1;
static int	xact_proc = 0;

/* The error of the last failed oms_xact_run, in its err_cxt. */
static ErrorData *last_xact_error = NULL;

/* Called by the worker once it has its slot, before any transaction. */
void
oms_xact_init(int slotno, int proc)
{
	xact_slotno = slotno;
	xact_proc = proc;
}

/*
 * The version of the installed extension (pg_extension.extversion), or
 * NULL when the row is gone.
 */
static char *
installed_version(Oid extoid)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	char	   *version = NULL;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(extoid));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;
		Datum		value = heap_getattr(tuple, Anum_pg_extension_extversion,
										 RelationGetDescr(rel), &isnull);

		if (!isnull)
			version = TextDatumGetCString(value);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return version;
}

/*
 * Whether the installed SQL is the version this library was built for.
 * After a package upgrade the new library meets the old SQL until someone
 * runs ALTER EXTENSION oms UPDATE: the worker then does nothing (it would
 * call functions the old SQL does not have, or that behave differently),
 * says so once in the log and in oms_worker_status().last_error, and
 * carries on the moment the update commits.
 */
static bool
version_matches(Oid extoid)
{
	static char waiting_for[NAMEDATALEN] = "";
	char	   *version = installed_version(extoid);
	char		message[OMS_ERROR_LEN];
	StringInfoData line;

	if (version != NULL && strcmp(version, OMS_VERSION) == 0)
	{
		waiting_for[0] = '\0';
		return true;
	}
	/* The main worker says it; its saga workers wait quietly. */
	if (version == NULL || strcmp(waiting_for, version) == 0 || xact_proc > 0)
		return false;
	strlcpy(waiting_for, version, sizeof(waiting_for));
	snprintf(message, sizeof(message),
			 "waiting for ALTER EXTENSION oms UPDATE: the database has oms %s, the library is %s",
			 version, OMS_VERSION);
	oms_shmem_note_error(xact_slotno, message);
	oms_log_begin(&line, "worker_waiting_for_update");
	oms_log_str(&line, "installed_version", version);
	oms_log_str(&line, "library_version", OMS_VERSION);
	oms_log_str(&line, "hint", "run ALTER EXTENSION oms UPDATE in this database");
	oms_log_emit(WARNING, &line);
	return false;
}

/*
 * Whether the extension is installed here and usable right now; call it
 * inside a transaction.  False while DROP EXTENSION or ALTER EXTENSION
 * holds its lock: we skip the round rather than wait behind it or call a
 * function that is half gone, and look again after taking the lock, as
 * the drop may have committed between the lookup and the lock.  The lock
 * is kept until the end of the transaction.  False too while the installed
 * SQL is of another version than the library (see version_matches).
 */
bool
oms_xact_extension_ready(void)
{
	Oid			extoid;

	extoid = get_extension_oid("oms", true);
	if (!OidIsValid(extoid))
		return false;
	if (!ConditionalLockDatabaseObject(ExtensionRelationId, extoid, 0, AccessShareLock))
		return false;
	InvalidateCatalogSnapshot();
	if (get_extension_oid("oms", true) != extoid)
		return false;
	return version_matches(extoid);
}

/*
 * Runs "body" in a transaction of its own, with SPI connected and a
 * snapshot pushed, reporting "activity" in pg_stat_activity.  An error is
 * logged, recorded in shared memory and rolled back; the worker lives on.
 * Returns true and body's result in *result when the transaction
 * committed; false after an error, with its message in *errmsg unless
 * errmsg is NULL.  "err_cxt" must outlive the call: the error is copied
 * there.
 */
bool
oms_xact_run(int slotno, MemoryContext err_cxt, const char *activity,
			 OmsXactBody body, void *arg, int *result, char **errmsg)
{
	return oms_xact_run_ext(slotno, err_cxt, activity, body, arg, result, errmsg, true);
}

/*
 * The error of the last oms_xact_run that failed, copied into its
 * err_cxt: valid as long as that context is not reset.
 */
ErrorData  *
oms_xact_last_error(void)
{
	return last_xact_error;
}

/*
 * oms_xact_run, where the caller decides whether an error is logged
 * (log_error false: the caller logs its own line, rate-limited, using
 * oms_xact_last_error()).  The error is recorded in shared memory either
 * way.  The line logged here is event=worker_xact_failed with the
 * activity, at WARNING.
 */
bool
oms_xact_run_ext(int slotno, MemoryContext err_cxt, const char *activity,
				 OmsXactBody body, void *arg, int *result, char **errmsg,
				 bool log_error)
{
	volatile bool ok = true;
	volatile int value = 0;

	last_xact_error = NULL;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();

	PG_TRY();
	{
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, activity);

		value = body(arg);

		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/* No FATAL for a pending cancel or die while we clean up. */
		HOLD_INTERRUPTS();

		MemoryContextSwitchTo(err_cxt);
		edata = CopyErrorData();
		last_xact_error = edata;
		oms_shmem_note_error(slotno, edata->message);
		if (errmsg)
			*errmsg = edata->message;
		FlushErrorState();

		/* One structured line; detail, hint and context follow it. */
		if (log_error)
		{
			StringInfoData line;

			oms_log_begin(&line, "worker_xact_failed");
			oms_log_str(&line, "activity", activity);
			oms_log_emit_error(WARNING, &line, edata);
		}

		/* Releases SPI, snapshots and locks of the failed batch. */
		AbortCurrentTransaction();

		/* A cancel (e.g. pg_cancel_backend) is used up by this error. */
		QueryCancelPending = false;

		RESUME_INTERRUPTS();
		ok = false;
		value = 0;
	}
	PG_END_TRY();

	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);

	*result = value;
	return ok;
}
