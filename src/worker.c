/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The oms worker: one per served database, running oms._worker_tick()
 *	  in batches; oms._notify_worker(), which wakes it when work is
 *	  committed; and oms_worker_status() and oms_saga_worker_status(),
 *	  which show its processes.
 *
 * The worker is a dynamic background worker started by the launcher with
 * its shared memory slot in bgw_main_arg and its database OID in
 * bgw_extra.  Each loop does work first and sleeps after, so a wake that
 * arrives while a batch runs is never lost: the latch stays set and the
 * next wait returns at once.  A batch that fills up means more work is
 * waiting and the next one starts without sleeping.
 *
 * What the work is belongs to SQL (oms._worker_tick in the extension
 * script); this file owns the process around it: signals, the loops, and
 * sleeping on the latch and the Kafka clients' wake-up pipe.  Every piece
 * of work runs in the transaction bracket of xact.c.  After the saga
 * batch, the main worker drives the outbox relay (relay.c), which publishes
 * a batch of events, and the inbox (inbox.c), which applies the payment
 * replies that arrived; neither calls back into this file.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "guc.h"
#include "inbox.h"
#include "kafka.h"
#include "kafka_config.h"
#include "log.h"
#include "relay.h"
#include "shmem.h"
#include "worker.h"
#include "xact.h"

PG_FUNCTION_INFO_V1(oms_notify_worker);
PG_FUNCTION_INFO_V1(oms_worker_status);
PG_FUNCTION_INFO_V1(oms_saga_worker_status);

#define WORKER_TICK_QUERY "SELECT oms._worker_tick($1)"
#define NEXT_DUE_QUERY "SELECT oms._next_saga_due()"
#define DUE_NOW_QUERY "SELECT oms._sagas_due_now()"

/* A worker that finds sagas held by others looks again after this, doubling. */
#define HELD_RETRY_MIN_MS 10

/* Backend-local state of oms._notify_worker(). */
static bool wake_callback_registered = false;
static bool wake_pending = false;

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

/* This worker's process number: 0 for the main worker, else a saga worker. */
static int	worker_proc = 0;

/*
 * What the main worker sleeps on: its latch (wakes, signals), postmaster
 * death and the Kafka clients' wake-up pipe (delivery reports, replies,
 * log lines; see kafka.c).
 */
static WaitEventSet *wait_set = NULL;

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

	if (!oms_xact_extension_ready())
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
	 * the next saga falls due.  A full batch needs no answer: the next batch
	 * starts at once.
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

/*
 * Runs one saga batch in its own transaction.  Returns the units done (0
 * after an error, which is recorded and logged as worker_batch_failed, at
 * most once per oms.log_min_interval while batches keep failing; the first
 * batch that succeeds again logs worker_batch_recovered).
 */
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
	if (!oms_xact_run_ext(slotno, loop_cxt, WORKER_TICK_QUERY,
						  worker_tick, &request, &units, NULL, false))
	{
		suppressed = oms_log_limit(&batch_limit, GetCurrentTimestamp());
		if (suppressed >= 0)
		{
			oms_log_begin(&line, "worker_batch_failed");
			if (suppressed > 0)
				oms_log_int(&line, "suppressed", suppressed);
			oms_log_emit_error(WARNING, &line, oms_xact_last_error());
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

	if (!oms_xact_extension_ready())
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

	/* cppcheck-suppress shadowFunction ; SQL now() is not called here */
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
	(void) oms_xact_run(slotno, loop_cxt, "SELECT oms._maintenance_tick()",
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

	worker_proc = proc;
	oms_xact_init(slotno, proc);
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
 * The main worker's sleep: until its latch is set, a Kafka client queues
 * something, or timeout ms pass.  Returns what happened (WL_* bits).
 */
static int
main_worker_wait(long timeout)
{
	WaitEvent	events[3];
	int			n;
	int			happened = 0;

	n = WaitEventSetWait(wait_set, timeout, events, lengthof(events), PG_WAIT_EXTENSION);
	if (n == 0)
		return WL_TIMEOUT;
	for (int i = 0; i < n; i++)
		happened |= events[i].events;
	if (happened & WL_LATCH_SET)
		ResetLatch(MyLatch);
	return happened;
}

/* What one round of the main worker did (main_worker_round). */
typedef struct MainRound
{
	int			units;			/* saga steps run */
	bool		more_sagas;		/* the saga batch was full */
	bool		more_replies;	/* the inbox left replies for the next round */
	int			applied;		/* payment replies applied */
} MainRound;

/* The main worker's setup: the Kafka clients' side and its wait set. */
static void
main_worker_init(int slotno)
{
	/*
	 * The relay's producer and the inbox's consumer are created later, when
	 * brokers are configured.
	 */
	oms_kafka_init(oms_shmem_slot_name(slotno));
	oms_relay_init(slotno, oms_shmem_slot_name(slotno));
	oms_inbox_init(slotno, oms_shmem_slot_name(slotno));
	wait_set = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wait_set, WL_SOCKET_READABLE, oms_kafka_event_fd(), NULL, NULL);
}

/*
 * One round of the main worker's work.  A standby has no work to do:
 * sagas run, events are published and replies consumed on the primary
 * only.  Sagas run when asked (woken, after a full batch or applied
 * replies) or due, and at least every naptime, not when only Kafka woke
 * us.  The relay and inbox steps never wait for Kafka.
 */
static MainRound
main_worker_round(int slotno, MemoryContext loop_cxt, bool run_sagas)
{
	static TimestampTz last_sagas = 0;
	MainRound	round = {0};

	/*
	 * Empty the Kafka wake-up pipe before the relay and the inbox look at
	 * their queues: whatever arrives after this writes to it again, so the
	 * sleep cannot miss it, whichever of the two runs first.
	 */
	oms_kafka_clear_wakeups();

	if (!oms_worker_enabled || RecoveryInProgress())
	{
		oms_relay_idle(slotno, loop_cxt);
		oms_inbox_idle(slotno);
		return round;
	}
	if (run_sagas || saga_due_now() ||
		TimestampDifferenceExceeds(last_sagas, GetCurrentTimestamp(), oms_worker_naptime))
	{
		round.units = run_batch(slotno, loop_cxt);
		round.more_sagas = (round.units >= oms_worker_batch_size);
		last_sagas = GetCurrentTimestamp();
	}
	oms_relay_run(slotno, loop_cxt);
	round.more_replies = oms_inbox_run(slotno, loop_cxt, &round.applied);
	run_maintenance_if_due(slotno, loop_cxt);
	return round;
}

/*
 * The loop of the main worker (process 0): saga batches, the relay, the
 * inbox and maintenance.
 */
static void
main_worker_loop(int slotno, MemoryContext loop_cxt)
{
	bool		run_sagas = true;

	main_worker_init(slotno);
	for (;;)
	{
		MainRound	round;
		int			woke;

		MemoryContextSwitchTo(loop_cxt);
		CHECK_FOR_INTERRUPTS();
		if (reload_if_asked())
		{
			/* Its content may have changed even where the setting did not. */
			oms_kafka_file_reloaded();
		}

		round = main_worker_round(slotno, loop_cxt, run_sagas);

		oms_shmem_note_loop(slotno, round.units);
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(loop_cxt);

		/*
		 * A full batch: more is waiting, so no sleep, and one more saga
		 * worker joins in.  Applied replies may have made saga steps due
		 * (their wake-up is our own latch, which we do not look at when we
		 * skip the sleep).
		 */
		if (round.more_sagas)
			oms_shmem_wake_saga_worker(slotno);
		run_sagas = round.more_sagas || round.applied > 0;
		if (round.more_sagas || round.more_replies)
			continue;

		/*
		 * Sleep on the latch and on the Kafka clients (delivery reports,
		 * replies); a batch's deadline, an open breaker's cooldown or the
		 * inbox's retry may end the sleep before the naptime.
		 */
		oms_shmem_set_idle(slotno, true);
		woke = main_worker_wait(Min(saga_sleep_limit(oms_worker_naptime),
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

/* Fills values[0..6] (pid to last_error_at) from one process slot. */
static void
proc_values(OmsProcSlot *ps, Datum *values, bool *nulls)
{
	values[0] = Int32GetDatum((int32) ps->pid);
	nulls[0] = (ps->pid == 0);
	values[1] = BoolGetDatum(ps->pid != 0);
	values[2] = TimestampTzGetDatum(ps->last_loop);
	nulls[2] = (ps->last_loop == 0);
	values[3] = Int64GetDatum(ps->loops);
	values[4] = Int64GetDatum(ps->units);
	if (ps->last_error_at != 0)
	{
		values[5] = CStringGetTextDatum(ps->last_error);
		values[6] = TimestampTzGetDatum(ps->last_error_at);
	}
	else
	{
		nulls[5] = true;
		nulls[6] = true;
	}
}

/*
 * oms_worker_status(): one row per database in oms.database_name, about
 * its main worker, with how many of its saga workers are wanted and run.
 */
Datum
oms_worker_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			nslots;

	InitMaterializedSRF(fcinfo, 0);
	nslots = oms_shmem_status_slot_count();

	for (int i = 0; i < nslots; i++)
	{
		OmsProcSlot procs[OMS_MAX_SAGA_WORKERS];
		Datum		values[10];
		bool		nulls[10];
		NameData	dbname;
		int			alive = 0;

		oms_shmem_copy_procs(i, procs);
		memset(nulls, 0, sizeof(nulls));
		namestrcpy(&dbname, oms_shmem_slot_name(i));
		for (int p = 0; p < OMS_MAX_SAGA_WORKERS; p++)
			alive += (procs[p].pid != 0);

		values[0] = NameGetDatum(&dbname);
		proc_values(&procs[0], &values[1], &nulls[1]);
		values[8] = Int32GetDatum(oms_saga_workers);
		values[9] = Int32GetDatum(alive);

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}

	return (Datum) 0;
}

/*
 * oms_saga_worker_status(): one row per process that serves, or should
 * serve, a database: the oms.saga_workers wanted, and any still running
 * beyond them (a reload lowered the setting and it has yet to stop).
 */
Datum
oms_saga_worker_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			nslots;

	InitMaterializedSRF(fcinfo, 0);
	nslots = oms_shmem_status_slot_count();

	for (int i = 0; i < nslots; i++)
	{
		OmsProcSlot procs[OMS_MAX_SAGA_WORKERS];
		NameData	dbname;

		oms_shmem_copy_procs(i, procs);
		namestrcpy(&dbname, oms_shmem_slot_name(i));
		for (int p = 0; p < OMS_MAX_SAGA_WORKERS; p++)
		{
			OmsProcSlot *ps = &procs[p];
			Datum		values[11];
			bool		nulls[11];

			if (p >= oms_saga_workers && ps->pid == 0)
				continue;
			memset(nulls, 0, sizeof(nulls));
			values[0] = NameGetDatum(&dbname);
			values[1] = Int32GetDatum(p);
			values[2] = CStringGetTextDatum(p == 0 ? "main" : "saga");
			proc_values(ps, &values[3], &nulls[3]);
			/* values[3..9]: pid .. last_error_at; idle last */
			values[10] = BoolGetDatum(ps->pid != 0 && ps->idle);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}

	return (Datum) 0;
}
