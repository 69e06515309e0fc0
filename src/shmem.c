/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The shared memory of oms: one slot per database in oms.database_name,
 *	  and oms_worker_status(), oms._relay_shmem_status() and
 *	  oms._inbox_shmem_status(), which report them.
 *
 * The launcher, the workers, the DROP DATABASE hook and every committing
 * backend that woke a worker meet here.  The struct is small and each
 * access copies a few fields, so one spinlock protects all of it; nothing
 * that can fail or sleep runs while it is held.
 *
 * The database names are filled in by the postmaster from the setting and
 * never change afterwards (oms.database_name needs a restart), so they are
 * read without the lock.  A crash restart re-creates the whole struct,
 * which is what makes a recorded pid trustworthy: a worker clears its pid
 * on every exit that runs exit callbacks, and an exit that does not makes
 * the postmaster reinitialise shared memory.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "oms.h"

/*
 * One process serving a database: process 0 is the main worker (sagas,
 * relay, inbox, maintenance), the others are saga workers (sagas only).
 */
typedef struct OmsProcSlot
{
	pid_t		pid;			/* 0 when no process runs */
	int			pgprocno;		/* its PGPROC, for its latch */
	bool		idle;			/* asleep with nothing due: wake it for sagas */
	TimestampTz last_loop;
	int64		loops;
	int64		units;
	char		last_error[OMS_ERROR_LEN];
	TimestampTz last_error_at;
} OmsProcSlot;

typedef struct OmsWorkerSlot
{
	char		dbname[NAMEDATALEN];	/* fixed at startup */
	Oid			dboid;			/* set by the main worker once connected */
	OmsProcSlot procs[OMS_MAX_SAGA_WORKERS];

	/*
	 * DROP DATABASE of drop_oid is under way until drop_until: the launcher
	 * must not start a worker that would block it.  Keyed by OID so that a
	 * database re-created under the same name is served at once.
	 */
	Oid			drop_oid;
	TimestampTz drop_until;

	/*
	 * The outbox relay of this database (src/relay.c).  Counters run from
	 * server start; the breaker and the errors are the current worker's.
	 */
	int64		relay_published;	/* events acknowledged */
	int64		relay_failed;	/* failed publish attempts */
	int64		relay_batches;	/* batches that produced something */
	OmsBreakerState relay_breaker;
	TimestampTz relay_breaker_opened_at;
	char		relay_last_error[OMS_ERROR_LEN];
	TimestampTz relay_last_error_at;
	TimestampTz relay_last_publish_at;
	double		relay_ack_latency_ms;	/* mean of the last batch */

	/*
	 * The reply consumer of this database (src/inbox.c).  Counters run from
	 * server start; the state, lag and errors are the current worker's.
	 */
	OmsKafkaState inbox_state;
	int64		inbox_applied;
	int64		inbox_duplicates;
	int64		inbox_late;
	int64		inbox_rejected;
	int64		inbox_other;	/* unexpected result words */
	int64		inbox_failures; /* transactions that failed: retried */
	TimestampTz inbox_last_reply_at;
	int			inbox_partitions;	/* assigned to this worker */
	int64		inbox_lag;		/* -1 when unknown */
	TimestampTz inbox_lag_at;
	char		inbox_last_error[OMS_ERROR_LEN];
	TimestampTz inbox_last_error_at;
} OmsWorkerSlot;

typedef struct OmsShared
{
	slock_t		mutex;
	pid_t		launcher_pid;
	int			nslots;
	OmsWorkerSlot slots[OMS_MAX_DATABASES];
} OmsShared;

static OmsShared *oms_shared = NULL;

/* The process number this backend claimed (oms_shmem_claim_slot); 0 otherwise. */
static int	my_proc = 0;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

PG_FUNCTION_INFO_V1(oms_worker_status);
PG_FUNCTION_INFO_V1(oms_relay_shmem_status);
PG_FUNCTION_INFO_V1(oms_inbox_shmem_status);
PG_FUNCTION_INFO_V1(oms_saga_worker_status);

static void
oms_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();

	RequestAddinShmemSpace(MAXALIGN(sizeof(OmsShared)));
}

static void
oms_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	oms_shared = ShmemInitStruct("oms", sizeof(OmsShared), &found);
	if (!found)
	{
		char	   *raw;
		List	   *names = NIL;
		ListCell   *lc;

		memset(oms_shared, 0, sizeof(OmsShared));
		SpinLockInit(&oms_shared->mutex);

		/* The check hook has already rejected anything that would not fit. */
		raw = pstrdup(oms_database_name ? oms_database_name : "");
		if (!oms_split_database_names(raw, &names))
			names = NIL;
		foreach(lc, names)
		{
			OmsWorkerSlot *slot;

			if (oms_shared->nslots >= OMS_MAX_DATABASES)
				break;
			slot = &oms_shared->slots[oms_shared->nslots++];
			strlcpy(slot->dbname, lfirst(lc), NAMEDATALEN);
			slot->dboid = InvalidOid;
			for (int p = 0; p < OMS_MAX_SAGA_WORKERS; p++)
				slot->procs[p].pgprocno = -1;
		}
		list_free(names);
		pfree(raw);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Called from _PG_init while shared_preload_libraries is processed. */
void
oms_shmem_init(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = oms_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = oms_shmem_startup;
}

static OmsWorkerSlot *
get_slot(int slotno)
{
	if (oms_shared == NULL || slotno < 0 || slotno >= oms_shared->nslots)
		elog(ERROR, "oms worker slot %d does not exist", slotno);
	return &oms_shared->slots[slotno];
}

int
oms_shmem_slot_count(void)
{
	return oms_shared ? oms_shared->nslots : 0;
}

const char *
oms_shmem_slot_name(int slotno)
{
	return get_slot(slotno)->dbname;
}

/* Returns the slot serving "dbname", or -1. */
int
oms_shmem_slot_by_name(const char *dbname)
{
	for (int i = 0; i < oms_shmem_slot_count(); i++)
	{
		if (strcmp(oms_shared->slots[i].dbname, dbname) == 0)
			return i;
	}
	return -1;
}

void
oms_shmem_set_launcher_pid(pid_t pid)
{
	if (oms_shared == NULL)
		return;
	SpinLockAcquire(&oms_shared->mutex);
	oms_shared->launcher_pid = pid;
	SpinLockRelease(&oms_shared->mutex);
}

/*
 * A starting worker takes its process slot.  Refused when another process
 * holds it (two launchers' registrations can overlap after a launcher
 * restart) or when DROP DATABASE of this database is under way; the check
 * and the claim happen under one lock, so the DROP hook either sees our pid
 * or we see its marker.
 */
bool
oms_shmem_claim_slot(int slotno, int proc, Oid dboid, pid_t pid, int pgprocno)
{
	OmsWorkerSlot *slot = get_slot(slotno);
	OmsProcSlot *ps;

	/* cppcheck-suppress shadowFunction ; SQL now() is not called here */
	TimestampTz now = GetCurrentTimestamp();
	bool		claimed = false;

	if (proc < 0 || proc >= OMS_MAX_SAGA_WORKERS)
		elog(ERROR, "oms worker process %d does not exist", proc);
	ps = &slot->procs[proc];
	SpinLockAcquire(&oms_shared->mutex);
	if (ps->pid == 0 &&
		!(slot->drop_oid == dboid && now < slot->drop_until))
	{
		ps->pid = pid;
		ps->pgprocno = pgprocno;
		ps->idle = false;
		ps->last_loop = now;
		slot->dboid = dboid;
		claimed = true;
	}
	SpinLockRelease(&oms_shared->mutex);
	if (claimed)
		my_proc = proc;
	return claimed;
}

/* Exit callback of a worker: the slot is free only if we still hold it. */
void
oms_shmem_release_slot(int slotno, int proc, pid_t pid)
{
	OmsProcSlot *ps = &get_slot(slotno)->procs[proc];

	SpinLockAcquire(&oms_shared->mutex);
	if (ps->pid == pid)
	{
		ps->pid = 0;
		ps->pgprocno = -1;
		ps->idle = false;
	}
	SpinLockRelease(&oms_shared->mutex);
}

pid_t
oms_shmem_worker_pid(int slotno, int proc)
{
	OmsProcSlot *ps = &get_slot(slotno)->procs[proc];
	pid_t		pid;

	SpinLockAcquire(&oms_shared->mutex);
	pid = ps->pid;
	SpinLockRelease(&oms_shared->mutex);
	return pid;
}

/* Does any process of this database's slot run? */
bool
oms_shmem_any_worker(int slotno)
{
	OmsWorkerSlot *slot = get_slot(slotno);
	bool		any = false;

	SpinLockAcquire(&oms_shared->mutex);
	for (int p = 0; p < OMS_MAX_SAGA_WORKERS; p++)
		any = any || slot->procs[p].pid != 0;
	SpinLockRelease(&oms_shared->mutex);
	return any;
}

/*
 * A worker says it is about to sleep (idle) or awake.  Only an idle saga
 * worker is woken by a full batch elsewhere: waking a busy one is useless.
 */
void
oms_shmem_set_idle(int slotno, bool idle)
{
	OmsProcSlot *ps = &get_slot(slotno)->procs[my_proc];

	SpinLockAcquire(&oms_shared->mutex);
	ps->idle = idle;
	SpinLockRelease(&oms_shared->mutex);
}

void
oms_shmem_note_loop(int slotno, int units)
{
	OmsProcSlot *ps = &get_slot(slotno)->procs[my_proc];

	/* cppcheck-suppress shadowFunction ; SQL now() is not called here */
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&oms_shared->mutex);
	ps->last_loop = now;
	ps->loops++;
	ps->units += units;
	SpinLockRelease(&oms_shared->mutex);
}

/*
 * Stores an error message and its time into fields of a slot, and counts a
 * failure when asked.  The message is truncated before the lock; only a
 * fixed-size copy happens under it.
 */
static void
store_error(char *dst, TimestampTz *at, int64 *failures, const char *message)
{
	/* cppcheck-suppress shadowFunction ; SQL now() is not called here */
	TimestampTz now = GetCurrentTimestamp();
	char		copy[OMS_ERROR_LEN];

	strlcpy(copy, message ? message : "(no message)", sizeof(copy));

	SpinLockAcquire(&oms_shared->mutex);
	memcpy(dst, copy, sizeof(copy));
	*at = now;
	if (failures)
		(*failures)++;
	SpinLockRelease(&oms_shared->mutex);
}

void
oms_shmem_note_error(int slotno, const char *message)
{
	OmsProcSlot *ps = &get_slot(slotno)->procs[my_proc];

	store_error(ps->last_error, &ps->last_error_at, NULL, message);
}

/* A starting worker's relay: breaker closed, as no batch has failed yet. */
void
oms_shmem_relay_reset(int slotno)
{
	OmsWorkerSlot *slot = get_slot(slotno);

	SpinLockAcquire(&oms_shared->mutex);
	slot->relay_breaker = OMS_BREAKER_CLOSED;
	slot->relay_breaker_opened_at = 0;
	SpinLockRelease(&oms_shared->mutex);
}

/* A settled batch: acknowledged events, failed attempts, mean ack latency. */
void
oms_shmem_relay_note_batch(int slotno, int64 published, int64 failed,
						   double ack_latency_ms, TimestampTz now)
{
	OmsWorkerSlot *slot = get_slot(slotno);

	SpinLockAcquire(&oms_shared->mutex);
	slot->relay_batches++;
	slot->relay_published += published;
	slot->relay_failed += failed;
	if (published > 0)
	{
		slot->relay_last_publish_at = now;
		slot->relay_ack_latency_ms = ack_latency_ms;
	}
	SpinLockRelease(&oms_shared->mutex);
}

void
oms_shmem_relay_set_breaker(int slotno, OmsBreakerState state, TimestampTz opened_at)
{
	OmsWorkerSlot *slot = get_slot(slotno);

	SpinLockAcquire(&oms_shared->mutex);
	slot->relay_breaker = state;
	slot->relay_breaker_opened_at = opened_at;
	SpinLockRelease(&oms_shared->mutex);
}

void
oms_shmem_relay_note_error(int slotno, const char *message)
{
	OmsWorkerSlot *slot = get_slot(slotno);

	store_error(slot->relay_last_error, &slot->relay_last_error_at, NULL, message);
}

/* A starting worker's inbox: no consumer yet, nothing assigned. */
void
oms_shmem_inbox_reset(int slotno)
{
	OmsWorkerSlot *slot = get_slot(slotno);

	SpinLockAcquire(&oms_shared->mutex);
	slot->inbox_state = OMS_KAFKA_OFF;
	slot->inbox_partitions = 0;
	slot->inbox_lag = -1;
	slot->inbox_lag_at = 0;
	SpinLockRelease(&oms_shared->mutex);
}

void
oms_shmem_inbox_set_state(int slotno, OmsKafkaState state)
{
	OmsWorkerSlot *slot = get_slot(slotno);

	SpinLockAcquire(&oms_shared->mutex);
	slot->inbox_state = state;
	if (state != OMS_KAFKA_READY)
	{
		slot->inbox_partitions = 0;
		slot->inbox_lag = -1;
		slot->inbox_lag_at = 0;
	}
	SpinLockRelease(&oms_shared->mutex);
}

/* One reply applied (committed) with the outcome oms._apply_payment_reply gave. */
void
oms_shmem_inbox_note_reply(int slotno, OmsInboxOutcome outcome, TimestampTz now)
{
	OmsWorkerSlot *slot = get_slot(slotno);

	SpinLockAcquire(&oms_shared->mutex);
	switch (outcome)
	{
		case OMS_INBOX_APPLIED:
			slot->inbox_applied++;
			break;
		case OMS_INBOX_DUPLICATE:
			slot->inbox_duplicates++;
			break;
		case OMS_INBOX_LATE:
			slot->inbox_late++;
			break;
		case OMS_INBOX_REJECTED:
			slot->inbox_rejected++;
			break;
		case OMS_INBOX_OTHER:
			slot->inbox_other++;
			break;
	}
	slot->inbox_last_reply_at = now;
	SpinLockRelease(&oms_shared->mutex);
}

/* A reply's transaction failed; it will be delivered again. */
void
oms_shmem_inbox_note_failure(int slotno, const char *message)
{
	OmsWorkerSlot *slot = get_slot(slotno);

	store_error(slot->inbox_last_error, &slot->inbox_last_error_at, &slot->inbox_failures, message);
}

/* A consumer-side error: Kafka client, offsets, refused settings. */
void
oms_shmem_inbox_note_error(int slotno, const char *message)
{
	OmsWorkerSlot *slot = get_slot(slotno);

	store_error(slot->inbox_last_error, &slot->inbox_last_error_at, NULL, message);
}

void
oms_shmem_inbox_set_lag(int slotno, int partitions, int64 lag, TimestampTz now)
{
	OmsWorkerSlot *slot = get_slot(slotno);

	SpinLockAcquire(&oms_shared->mutex);
	slot->inbox_partitions = partitions;
	slot->inbox_lag = lag;
	slot->inbox_lag_at = now;
	SpinLockRelease(&oms_shared->mutex);
}

void
oms_shmem_mark_drop(int slotno, Oid dboid, TimestampTz until)
{
	OmsWorkerSlot *slot = get_slot(slotno);

	SpinLockAcquire(&oms_shared->mutex);
	slot->drop_oid = dboid;
	slot->drop_until = until;
	SpinLockRelease(&oms_shared->mutex);
}

/* Called when the DROP failed: the database stays and wants its worker back. */
void
oms_shmem_clear_drop(int slotno, Oid dboid)
{
	OmsWorkerSlot *slot = get_slot(slotno);

	SpinLockAcquire(&oms_shared->mutex);
	if (slot->drop_oid == dboid)
	{
		slot->drop_oid = InvalidOid;
		slot->drop_until = 0;
	}
	SpinLockRelease(&oms_shared->mutex);
}

bool
oms_shmem_drop_in_progress(int slotno, Oid dboid, TimestampTz now)
{
	OmsWorkerSlot *slot = get_slot(slotno);
	bool		dropping;

	SpinLockAcquire(&oms_shared->mutex);
	dropping = (slot->drop_oid == dboid && now < slot->drop_until);
	SpinLockRelease(&oms_shared->mutex);
	return dropping;
}

/* Sets the latch of a PGPROC found under the lock; see oms_shmem_wake_worker. */
static void
set_proc_latch(int pgprocno)
{
	/*
	 * Setting the latch outside the lock is safe: if the worker exited in
	 * between, the PGPROC's latch is reset by whoever owns it next, and a
	 * spurious wake costs that process one loop.
	 */
	if (pgprocno >= 0 && pgprocno < (int) ProcGlobal->allProcCount)
		SetLatch(&ProcGlobal->allProcs[pgprocno].procLatch);
}

/*
 * Sets the latch of the main worker serving "dboid" (it runs the relay as
 * well as sagas), or of another of its processes while the main one is
 * down.  Runs in a commit callback, so it must not fail: no allocation, no
 * error, one short spinlock section.  One process is woken, not all: the
 * others join when batches fill up (oms_shmem_wake_saga_worker).
 */
void
oms_shmem_wake_worker(Oid dboid)
{
	int			pgprocno = -1;

	if (oms_shared == NULL || !OidIsValid(dboid))
		return;

	SpinLockAcquire(&oms_shared->mutex);
	for (int i = 0; i < oms_shared->nslots && pgprocno < 0; i++)
	{
		OmsWorkerSlot *slot = &oms_shared->slots[i];

		if (slot->dboid != dboid)
			continue;
		for (int p = 0; p < OMS_MAX_SAGA_WORKERS; p++)
		{
			if (slot->procs[p].pid != 0)
			{
				pgprocno = slot->procs[p].pgprocno;
				break;
			}
		}
	}
	SpinLockRelease(&oms_shared->mutex);

	set_proc_latch(pgprocno);
}

/*
 * A batch came back full: more sagas are due than one process runs in a
 * batch.  Wake one idle process of the same database (not ourselves), and
 * mark it busy so the next full batch wakes another.  None idle means all
 * are at work already.
 */
void
oms_shmem_wake_saga_worker(int slotno)
{
	OmsWorkerSlot *slot = get_slot(slotno);
	int			pgprocno = -1;

	SpinLockAcquire(&oms_shared->mutex);
	for (int p = 0; p < OMS_MAX_SAGA_WORKERS; p++)
	{
		OmsProcSlot *ps = &slot->procs[p];

		if (p != my_proc && ps->pid != 0 && ps->idle)
		{
			ps->idle = false;
			pgprocno = ps->pgprocno;
			break;
		}
	}
	SpinLockRelease(&oms_shared->mutex);

	set_proc_latch(pgprocno);
}

/* Copies every slot under the lock; returns how many there are. */
static int
copy_slots(OmsWorkerSlot *copy)
{
	int			nslots;

	if (oms_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("oms shared memory is not initialized"),
				 errhint("Add oms to shared_preload_libraries in postgresql.conf and restart the server.")));

	SpinLockAcquire(&oms_shared->mutex);
	nslots = oms_shared->nslots;
	memcpy(copy, oms_shared->slots, sizeof(OmsWorkerSlot) * nslots);
	SpinLockRelease(&oms_shared->mutex);
	return nslots;
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
 * its main worker, with how many of its saga workers are wanted and run;
 * copied from shared memory under the lock, returned after it is released.
 */
Datum
oms_worker_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	OmsWorkerSlot copy[OMS_MAX_DATABASES];
	int			nslots;

	InitMaterializedSRF(fcinfo, 0);
	nslots = copy_slots(copy);

	for (int i = 0; i < nslots; i++)
	{
		OmsWorkerSlot *slot = &copy[i];
		Datum		values[10];
		bool		nulls[10];
		NameData	dbname;
		int			alive = 0;

		memset(nulls, 0, sizeof(nulls));
		namestrcpy(&dbname, slot->dbname);
		for (int p = 0; p < OMS_MAX_SAGA_WORKERS; p++)
			alive += (slot->procs[p].pid != 0);

		values[0] = NameGetDatum(&dbname);
		proc_values(&slot->procs[0], &values[1], &nulls[1]);
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
	OmsWorkerSlot copy[OMS_MAX_DATABASES];
	int			nslots;

	InitMaterializedSRF(fcinfo, 0);
	nslots = copy_slots(copy);

	for (int i = 0; i < nslots; i++)
	{
		NameData	dbname;

		namestrcpy(&dbname, copy[i].dbname);
		for (int p = 0; p < OMS_MAX_SAGA_WORKERS; p++)
		{
			OmsProcSlot *ps = &copy[i].procs[p];
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

/*
 * oms._relay_shmem_status(): the relay counters of the current database's
 * slot, one row; no row when oms.database_name does not list it.
 */
Datum
oms_relay_shmem_status(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	OmsWorkerSlot copy;
	char	   *dbname;
	int			slotno;
	Datum		values[10];
	bool		nulls[10];
	static const char *const breaker_names[] = {"closed", "open", "half_open"};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	if (oms_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("oms shared memory is not initialized"),
				 errhint("Add oms to shared_preload_libraries in postgresql.conf and restart the server.")));

	dbname = get_database_name(MyDatabaseId);
	slotno = dbname ? oms_shmem_slot_by_name(dbname) : -1;
	if (slotno < 0)
		PG_RETURN_NULL();

	SpinLockAcquire(&oms_shared->mutex);
	memcpy(&copy, &oms_shared->slots[slotno], sizeof(OmsWorkerSlot));
	SpinLockRelease(&oms_shared->mutex);

	memset(nulls, 0, sizeof(nulls));
	values[0] = BoolGetDatum(copy.procs[0].pid != 0);
	values[1] = Int64GetDatum(copy.relay_published);
	values[2] = Int64GetDatum(copy.relay_failed);
	values[3] = Int64GetDatum(copy.relay_batches);
	values[4] = CStringGetTextDatum(breaker_names[copy.relay_breaker]);
	values[5] = TimestampTzGetDatum(copy.relay_breaker_opened_at);
	nulls[5] = (copy.relay_breaker == OMS_BREAKER_CLOSED || copy.relay_breaker_opened_at == 0);
	if (copy.relay_last_error_at != 0)
	{
		values[6] = CStringGetTextDatum(copy.relay_last_error);
		values[7] = TimestampTzGetDatum(copy.relay_last_error_at);
	}
	else
	{
		nulls[6] = true;
		nulls[7] = true;
	}
	values[8] = TimestampTzGetDatum(copy.relay_last_publish_at);
	nulls[8] = (copy.relay_last_publish_at == 0);
	values[9] = Float8GetDatum(copy.relay_ack_latency_ms);
	nulls[9] = (copy.relay_last_publish_at == 0);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* Appends "key": value-as-JSON-timestamp-or-null to a JSON object under construction. */
static void
json_add_timestamp(StringInfo buf, const char *key, TimestampTz ts)
{
	appendStringInfo(buf, ", \"%s\": ", key);
	if (ts == 0)
		appendStringInfoString(buf, "null");
	else
	{
		char		tsbuf[MAXDATELEN + 1];

		appendStringInfo(buf, "\"%s\"",
						 JsonEncodeDateTime(tsbuf, TimestampTzGetDatum(ts), TIMESTAMPTZOID, NULL));
	}
}

/*
 * oms._inbox_shmem_status(): the reply consumer of the current database's
 * slot as jsonb; null when oms.database_name does not list the database.
 */
Datum
oms_inbox_shmem_status(PG_FUNCTION_ARGS)
{
	OmsWorkerSlot copy;
	char	   *dbname;
	int			slotno;
	StringInfoData buf;
	static const char *const state_names[] = {"off", "running", "bad_config"};

	if (oms_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("oms shared memory is not initialized"),
				 errhint("Add oms to shared_preload_libraries in postgresql.conf and restart the server.")));

	dbname = get_database_name(MyDatabaseId);
	slotno = dbname ? oms_shmem_slot_by_name(dbname) : -1;
	if (slotno < 0)
		PG_RETURN_NULL();

	SpinLockAcquire(&oms_shared->mutex);
	memcpy(&copy, &oms_shared->slots[slotno], sizeof(OmsWorkerSlot));
	SpinLockRelease(&oms_shared->mutex);

	/*
	 * A consumer belongs to a running worker; a stopped one leaves stale
	 * state.
	 */
	if (copy.procs[0].pid == 0)
		copy.inbox_state = OMS_KAFKA_OFF;

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"worker_running\": %s", copy.procs[0].pid != 0 ? "true" : "false");
	appendStringInfo(&buf, ", \"consumer\": \"%s\"", state_names[copy.inbox_state]);
	appendStringInfo(&buf, ", \"applied\": " INT64_FORMAT, copy.inbox_applied);
	appendStringInfo(&buf, ", \"duplicates\": " INT64_FORMAT, copy.inbox_duplicates);
	appendStringInfo(&buf, ", \"late\": " INT64_FORMAT, copy.inbox_late);
	appendStringInfo(&buf, ", \"rejected\": " INT64_FORMAT, copy.inbox_rejected);
	appendStringInfo(&buf, ", \"other\": " INT64_FORMAT, copy.inbox_other);
	appendStringInfo(&buf, ", \"failures\": " INT64_FORMAT, copy.inbox_failures);
	json_add_timestamp(&buf, "last_reply_at", copy.inbox_last_reply_at);
	if (copy.inbox_state == OMS_KAFKA_READY)
		appendStringInfo(&buf, ", \"partitions\": %d", copy.inbox_partitions);
	else
		appendStringInfoString(&buf, ", \"partitions\": null");
	if (copy.inbox_state == OMS_KAFKA_READY && copy.inbox_lag >= 0)
		appendStringInfo(&buf, ", \"lag\": " INT64_FORMAT, copy.inbox_lag);
	else
		appendStringInfoString(&buf, ", \"lag\": null");
	json_add_timestamp(&buf, "lag_at", copy.inbox_state == OMS_KAFKA_READY ? copy.inbox_lag_at : 0);
	appendStringInfoString(&buf, ", \"last_error\": ");
	if (copy.inbox_last_error_at != 0)
		escape_json(&buf, copy.inbox_last_error);
	else
		appendStringInfoString(&buf, "null");
	json_add_timestamp(&buf, "last_error_at", copy.inbox_last_error_at);
	appendStringInfoChar(&buf, '}');

	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}
