/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The oms worker: one per served database, running oms._worker_tick()
 *	  in batches; and oms._notify_worker(), which wakes it when work is
 *	  committed.
 *
 * The worker is a dynamic background worker started by the launcher with
 * its shared memory slot in bgw_main_arg and its database OID in
 * bgw_extra.  Each loop does work first and sleeps after, so a wake that
 * arrives while a batch runs is never lost: the latch stays set and the
 * next wait returns at once.  A batch that fills up means more work is
 * waiting and the next one starts without sleeping.
 *
 * What the work is belongs to SQL (oms._worker_tick in the extension
 * script); this file owns the process around it: signals, the transaction
 * bracket, surviving errors, and sleeping on the latch.  After the saga
 * batch, the outbox relay (relay.c) publishes a batch of events, using the
 * same transaction bracket for its two short transactions, and the inbox
 * (inbox.c) applies the payment replies that arrived, one transaction each.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "lib/stringinfo.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "oms.h"

PG_FUNCTION_INFO_V1(oms_notify_worker);

#define WORKER_TICK_QUERY "SELECT oms._worker_tick($1)"
#define NEXT_DUE_QUERY "SELECT oms._next_saga_due()"
#define DUE_NOW_QUERY "SELECT oms._sagas_due_now()"

/* A worker that finds sagas held by others looks again after this, doubling. */
#define HELD_RETRY_MIN_MS 10

/* Backend-local state of oms._notify_worker(). */
static bool wake_callback_registered = false;
static bool wake_pending = false;

/* The error of the last failed oms_worker_run_xact, in its err_cxt. */
static ErrorData *last_xact_error = NULL;

/*
 * When the earliest saga that is not due yet falls due (a retry's backoff,
 * a step timeout), as seen by the last batch; 0 when none is known.  The
 * worker wakes for it instead of waiting for the naptime.
 */
static TimestampTz next_saga_due = 0;

/*
 * After a partial batch that left due sagas behind (another runner or an
 * API call held them), how long to wait before looking again: 0 when none
 * were left, else HELD_RETRY_MIN_MS doubling up to the naptime while it
 * lasts.  Their holder may be another saga worker, whose commit wakes
 * nobody, so the naptime alone would idle this one for up to a second.
 */
static long held_retry_ms = 0;

/* Saga batches that keep failing are logged once per oms.log_min_interval. */
static OmsLogLimit batch_limit;

/* This worker's shared memory slot (for what is recorded outside a batch). */
static int	worker_slotno = -1;

/* This worker's process number: 0 for the main worker, else a saga worker. */
static int	worker_proc = 0;

/* What one saga batch is asked to do (worker_tick's argument). */
typedef struct BatchRequest
{
	int			batch_size;
	bool		want_next_due;	/* the main worker keeps the timers */
	bool		held;			/* out: due sagas were left, held by others */
} BatchRequest;

static void
worker_on_exit(int code, Datum arg)
{
	StringInfoData line;

	oms_log_begin(&line, "worker_stopped");
	oms_log_int(&line, "pid", MyProcPid);
	if (worker_proc > 0)
		oms_log_int(&line, "saga_worker", worker_proc);
	oms_log_int(&line, "exit_code", code);
	oms_log_emit(LOG, &line);
	oms_shmem_release_slot(DatumGetInt32(arg), worker_proc, MyProcPid);
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
	if (version == NULL || strcmp(waiting_for, version) == 0 || worker_proc > 0)
		return false;
	strlcpy(waiting_for, version, sizeof(waiting_for));
	snprintf(message, sizeof(message),
			 "waiting for ALTER EXTENSION oms UPDATE: the database has oms %s, the library is %s",
			 version, OMS_VERSION);
	oms_shmem_note_error(worker_slotno, message);
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
oms_worker_extension_ready(void)
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
 * The body of one saga batch, inside the transaction bracket.  Returns the
 * units of work oms._worker_tick reports; 0 when the extension is not
 * installed here, or is being dropped or altered right now.
 */
static int
worker_tick(void *arg)
{
	BatchRequest *request = (BatchRequest *) arg;
	int			batch_size = request->batch_size;
	Oid			argtypes[1] = {INT4OID};
	Datum		args[1];
	bool		isnull;
	Datum		result;
	int			ret;
	int			units;

	if (!oms_worker_extension_ready())
		return 0;

	args[0] = Int32GetDatum(batch_size);
	ret = SPI_execute_with_args(WORKER_TICK_QUERY, 1, argtypes, args, NULL, false, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("oms._worker_tick returned no row"),
				 errdetail("SPI returned code %d with %llu rows.",
						   ret, (unsigned long long) SPI_processed)));
	if (SPI_gettypeid(SPI_tuptable->tupdesc, 1) != INT4OID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("oms._worker_tick must return integer")));

	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	units = isnull ? 0 : DatumGetInt32(result);

	/*
	 * A partial batch ran everything that was due and not locked; ask when
	 * the next saga falls due.  A full batch needs no answer: the next
	 * batch starts at once.
	 */
	next_saga_due = 0;
	if (units < batch_size && request->want_next_due)
	{
		ret = SPI_execute(NEXT_DUE_QUERY, true, 1);
		if (ret == SPI_OK_SELECT && SPI_processed == 1 &&
			SPI_gettypeid(SPI_tuptable->tupdesc, 1) == TIMESTAMPTZOID)
		{
			result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
			if (!isnull)
				next_saga_due = DatumGetTimestampTz(result);
		}
	}
	request->held = false;
	if (units < batch_size)
	{
		ret = SPI_execute(DUE_NOW_QUERY, true, 1);
		if (ret == SPI_OK_SELECT && SPI_processed == 1 &&
			SPI_gettypeid(SPI_tuptable->tupdesc, 1) == BOOLOID)
		{
			result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
			request->held = !isnull && DatumGetBool(result);
		}
	}
	return units;
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
oms_worker_run_xact(int slotno, MemoryContext err_cxt, const char *activity,
					OmsXactBody body, void *arg, int *result, char **errmsg)
{
	return oms_worker_run_xact_ext(slotno, err_cxt, activity, body, arg, result,
								   errmsg, true);
}

/*
 * The error of the last oms_worker_run_xact that failed, copied into its
 * err_cxt: valid as long as that context is not reset.
 */
ErrorData *
oms_worker_last_error(void)
{
	return last_xact_error;
}

/*
 * oms_worker_run_xact, where the caller decides whether an error is logged
 * (log_error false: the caller logs its own line, rate-limited, using
 * oms_worker_last_error()).  The error is recorded in shared memory either
 * way.  The line logged here is event=worker_xact_failed with the
 * activity, at WARNING.
 */
bool
oms_worker_run_xact_ext(int slotno, MemoryContext err_cxt, const char *activity,
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

/*
 * Runs one saga batch in its own transaction.  Returns the units done (0
 * after an error, which is recorded and logged as worker_batch_failed, at
 * most once per oms.log_min_interval while batches keep failing; the first
 * batch that succeeds again logs worker_batch_recovered).
 */
/*
 * Whether the saga the last batch saw as next falls due by now.  Only a
 * time that was still ahead when the batch looked counts: a saga that was
 * due and yet not run is held by an API call (its order is locked), and
 * the commit of that call wakes the worker.
 */
static bool
saga_due_now(void)
{
	return next_saga_due != 0 && GetCurrentTimestamp() >= next_saga_due;
}

/* The longest sleep that still wakes the worker when the next saga is due. */
static long
saga_sleep_limit(long naptime)
{
	long		ms;

	if (next_saga_due == 0)
		return naptime;
	ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), next_saga_due);
	return Max(1, Min(naptime, ms + 1));
}

/*
 * After a batch: when it left due sagas that others held, look again after
 * held_retry_ms (doubling while it lasts), by making that the next time a
 * saga falls due.
 */
static void
note_held(bool held)
{
	TimestampTz retry_at;

	if (!held)
	{
		held_retry_ms = 0;
		return;
	}
	held_retry_ms = (held_retry_ms == 0) ? HELD_RETRY_MIN_MS
		: Min(held_retry_ms * 2, (long) oms_worker_naptime);
	retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), held_retry_ms);
	if (next_saga_due == 0 || retry_at < next_saga_due)
		next_saga_due = retry_at;
}

static int
run_batch(int slotno, MemoryContext loop_cxt)
{
	BatchRequest request;
	int			units;
	int			suppressed;
	StringInfoData line;

	request.batch_size = oms_worker_batch_size;
	request.want_next_due = (worker_proc == 0);
	request.held = false;
	if (!oms_worker_run_xact_ext(slotno, loop_cxt, WORKER_TICK_QUERY,
								 worker_tick, &request, &units, NULL, false))
	{
		suppressed = oms_log_limit(&batch_limit, GetCurrentTimestamp());
		if (suppressed >= 0)
		{
			oms_log_begin(&line, "worker_batch_failed");
			if (suppressed > 0)
				oms_log_int(&line, "suppressed", suppressed);
			oms_log_emit_error(WARNING, &line, oms_worker_last_error());
		}
		return 0;
	}
	suppressed = oms_log_limit_clear(&batch_limit);
	if (suppressed >= 0)
	{
		oms_log_begin(&line, "worker_batch_recovered");
		oms_log_int(&line, "suppressed", suppressed);
		oms_log_emit(LOG, &line);
	}
	note_held(request.held);
	return units;
}

/*
 * Maintenance (oms._maintenance_tick in src/sql/maintenance.sql) every
 * oms.maintenance_interval, in a transaction of its own: a timer checked
 * once per loop, so saga batches carry no extra query.  The first round
 * comes one interval after the worker starts.  The SQL side skips the
 * tasks pg_cron runs, so with every task scheduled there a round costs one
 * short query.  An error is logged and recorded like a batch's, and the
 * next round is still one interval away: a failing task cannot make the
 * worker spin.
 */
static int
maintenance_tick(void *arg)
{
	int			ret;

	if (!oms_worker_extension_ready())
		return 0;
	ret = SPI_execute("SELECT oms._maintenance_tick()", false, 0);
	if (ret != SPI_OK_SELECT)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not run oms._maintenance_tick"),
				 errdetail("SPI returned %s.", SPI_result_code_string(ret))));
	return 0;
}

static void
run_maintenance_if_due(int slotno, MemoryContext loop_cxt)
{
	static TimestampTz last_round = 0;
	TimestampTz now = GetCurrentTimestamp();
	int			ignored;

	if (oms_maintenance_interval <= 0)
		return;
	if (last_round == 0)
		last_round = now;
	if (!TimestampDifferenceExceeds(last_round, now,
									Min(oms_maintenance_interval, INT_MAX / 1000) * 1000))
		return;
	last_round = now;
	(void) oms_worker_run_xact(slotno, loop_cxt, "SELECT oms._maintenance_tick()",
							   maintenance_tick, NULL, &ignored, NULL);
}

/*
 * What every worker does before its loop: take its process slot (before
 * connecting, so a DROP DATABASE that starts now finds our pid and stops
 * us), connect, pin search_path and say so.  Exits quietly when the slot
 * is taken or marked by such a drop, or when a reload made this saga
 * worker one too many.
 */
static void
worker_start(int slotno, int proc, Oid dboid)
{
	StringInfoData line;

	worker_slotno = slotno;
	worker_proc = proc;
	oms_log_set_database(oms_shmem_slot_name(slotno));
	if (proc >= oms_saga_workers ||
		!oms_shmem_claim_slot(slotno, proc, dboid, MyProcPid, MyProc->pgprocno))
	{
		oms_log_begin(&line, "worker_not_started");
		if (proc > 0)
			oms_log_int(&line, "saga_worker", proc);
		oms_log_str(&line, "reason", proc >= oms_saga_workers
					? "oms.saga_workers is lower than this worker's number"
					: "another worker serves the database, or it is being dropped");
		oms_log_emit(LOG, &line);
		proc_exit(0);
	}
	before_shmem_exit(worker_on_exit, Int32GetDatum(slotno));

	/* By OID: a database re-created under the same name gets a new worker. */
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);

	/*
	 * The worker is a superuser.  Whatever search_path the database's owner
	 * set for the database (ALTER DATABASE ... SET), no name or operator this
	 * session resolves may come from a schema that others can write; the
	 * override source also wins over any later SET.
	 */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);

	oms_log_begin(&line, "worker_started");
	oms_log_int(&line, "pid", MyProcPid);
	if (proc > 0)
		oms_log_int(&line, "saga_worker", proc);
	oms_log_emit(LOG, &line);
}

/* Rereads the configuration after SIGHUP; true when it did. */
static bool
reload_if_asked(void)
{
	if (!ConfigReloadPending)
		return false;
	ConfigReloadPending = false;
	ProcessConfigFile(PGC_SIGHUP);
	return true;
}

/*
 * The loop of a saga worker (process 1 and up): saga batches only.  It
 * sleeps until a full batch of another process wakes it, or for the
 * naptime (less when its last batch left sagas that others held); a full
 * batch of its own wakes one more idle process and starts the next batch
 * at once.  Timers (retries, step timeouts) are the main worker's to
 * watch; the naptime covers a main worker that is down.
 */
static void
saga_worker_loop(int slotno, MemoryContext loop_cxt)
{
	for (;;)
	{
		int			units = 0;

		MemoryContextSwitchTo(loop_cxt);
		CHECK_FOR_INTERRUPTS();
		if (reload_if_asked() && worker_proc >= oms_saga_workers)
		{
			StringInfoData line;

			oms_log_begin(&line, "worker_retired");
			oms_log_int(&line, "saga_worker", worker_proc);
			oms_log_int(&line, "saga_workers", oms_saga_workers);
			oms_log_emit(LOG, &line);
			proc_exit(0);
		}

		if (oms_worker_enabled && !RecoveryInProgress())
			units = run_batch(slotno, loop_cxt);

		oms_shmem_note_loop(slotno, units);
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(loop_cxt);

		if (units >= oms_worker_batch_size)
		{
			oms_shmem_wake_saga_worker(slotno);
			continue;
		}

		/*
		 * Idle first, then sleep: a wake that comes in between sets the
		 * latch, and WaitLatch returns at once.
		 */
		oms_shmem_set_idle(slotno, true);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 saga_sleep_limit(oms_worker_naptime), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		oms_shmem_set_idle(slotno, false);
	}
}

/*
 * The loop of the main worker (process 0): saga batches, the relay, the
 * inbox and maintenance.
 */
static void
main_worker_loop(int slotno, MemoryContext loop_cxt)
{
	bool		run_sagas = true;
	TimestampTz last_sagas = 0;

	/*
	 * The relay's producer and the inbox's consumer are created later, when
	 * brokers are configured.
	 */
	oms_relay_init(slotno, oms_shmem_slot_name(slotno));
	oms_inbox_init(slotno, oms_shmem_slot_name(slotno));

	for (;;)
	{
		int			units = 0;
		bool		more = false;
		bool		inbox_more = false;
		int			applied = 0;
		int			woke;

		MemoryContextSwitchTo(loop_cxt);

		CHECK_FOR_INTERRUPTS();
		if (reload_if_asked())
		{
			/* Its content may have changed even where the setting did not. */
			oms_kafka_file_reloaded();
		}

		/*
		 * A standby has no work to do: sagas run, events are published and
		 * replies consumed on the primary only.  Sagas run when woken, after
		 * a full batch or applied replies and at least every naptime, not
		 * when only Kafka woke us.  The relay step follows and never waits
		 * for Kafka, then the inbox step, which must come after it: the
		 * relay empties the wake-up pipe the reply consumer shares.
		 */
		if (oms_worker_enabled && !RecoveryInProgress())
		{
			if (run_sagas || saga_due_now() ||
				TimestampDifferenceExceeds(last_sagas, GetCurrentTimestamp(), oms_worker_naptime))
			{
				units = run_batch(slotno, loop_cxt);
				more = (units >= oms_worker_batch_size);
				last_sagas = GetCurrentTimestamp();
			}
			oms_relay_run(slotno, loop_cxt);
			inbox_more = oms_inbox_run(slotno, loop_cxt, &applied);
			run_maintenance_if_due(slotno, loop_cxt);
		}
		else
		{
			oms_relay_idle(slotno, loop_cxt);
			oms_inbox_idle(slotno);
		}

		oms_shmem_note_loop(slotno, units);
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(loop_cxt);

		/*
		 * A full batch: more is waiting, so no sleep, and one more saga
		 * worker joins in.  Applied replies may have made saga steps due
		 * (their wake-up is our own latch, which we do not look at when we
		 * skip the sleep).
		 */
		if (more)
			oms_shmem_wake_saga_worker(slotno);
		run_sagas = more || applied > 0;
		if (more || inbox_more)
			continue;

		/*
		 * Sleep on the latch and on the Kafka clients (delivery reports,
		 * replies); a batch's deadline, an open breaker's cooldown or the
		 * inbox's retry may end the sleep before the naptime.
		 */
		oms_shmem_set_idle(slotno, true);
		woke = oms_relay_wait(Min(saga_sleep_limit(oms_worker_naptime),
								  Min(oms_relay_sleep_limit(oms_worker_naptime),
									  oms_inbox_sleep_limit(oms_worker_naptime))));
		oms_shmem_set_idle(slotno, false);
		if (woke & WL_LATCH_SET)
			run_sagas = true;
	}
}

/* bgw_main_arg of a worker: its database's slot and its process number. */
Datum
oms_worker_main_arg(int slotno, int proc)
{
	return Int32GetDatum(slotno * OMS_MAX_SAGA_WORKERS + proc);
}

/*
 * Entry point of every worker.  bgw_main_arg comes from
 * oms_worker_main_arg() and bgw_extra is the database OID.
 */
void
oms_worker_main(Datum main_arg)
{
	int			arg = DatumGetInt32(main_arg);
	int			slotno = arg / OMS_MAX_SAGA_WORKERS;
	int			proc = arg % OMS_MAX_SAGA_WORKERS;
	Oid			dboid;
	MemoryContext loop_cxt;

	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));

	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();

	worker_start(slotno, proc, dboid);

	loop_cxt = AllocSetContextCreate(TopMemoryContext,
									 "oms worker loop",
									 ALLOCSET_DEFAULT_SIZES);
	if (proc == 0)
		main_worker_loop(slotno, loop_cxt);
	else
		saga_worker_loop(slotno, loop_cxt);
}

/*
 * At commit, wake the worker of this database if the transaction created
 * work.  Must not fail: a commit callback that throws turns a committed
 * transaction into an error the client would misread.
 */
static void
wake_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_pending)
			{
				wake_pending = false;
				oms_shmem_wake_worker(MyDatabaseId);
			}
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_pending = false;
			break;
		case XACT_EVENT_PREPARE:
			/* The work commits later, maybe elsewhere: the naptime covers it. */
			wake_pending = false;
			break;
		default:
			break;
	}
}

/*
 * oms._notify_worker(): called by API functions that create work.  Many
 * calls in one transaction cost one flag each and a single wake at commit.
 */
Datum
oms_notify_worker(PG_FUNCTION_ARGS)
{
	if (!wake_callback_registered)
	{
		RegisterXactCallback(wake_xact_callback, NULL);
		wake_callback_registered = true;
	}
	wake_pending = true;
	PG_RETURN_VOID();
}
