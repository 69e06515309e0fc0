/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The shared memory of oms: one slot per database in oms.database_name,
 *	  with its worker processes, its relay's and its reply consumer's
 *	  figures, and the copies of them that the status functions report
 *	  (worker.c, relay.c, inbox.c).
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

#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"

#include "oms.h"
#include "guc.h"
#include "shmem.h"

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

	OmsRelayShared relay;		/* src/relay.c */
	OmsInboxShared inbox;		/* src/inbox.c */
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
	slot->relay.breaker = OMS_BREAKER_CLOSED;
	slot->relay.breaker_opened_at = 0;
	SpinLockRelease(&oms_shared->mutex);
}

/* A settled batch: acknowledged events, failed attempts, mean ack latency. */
void
oms_shmem_relay_note_batch(int slotno, int64 published, int64 failed,
						   double ack_latency_ms, TimestampTz now)
{
	OmsWorkerSlot *slot = get_slot(slotno);

	SpinLockAcquire(&oms_shared->mutex);
	slot->relay.batches++;
	slot->relay.published += published;
	slot->relay.failed += failed;
	if (published > 0)
	{
		slot->relay.last_publish_at = now;
		slot->relay.ack_latency_ms = ack_latency_ms;
	}
	SpinLockRelease(&oms_shared->mutex);
}

void
oms_shmem_relay_set_breaker(int slotno, OmsBreakerState state, TimestampTz opened_at)
{
	OmsWorkerSlot *slot = get_slot(slotno);

	SpinLockAcquire(&oms_shared->mutex);
	slot->relay.breaker = state;
	slot->relay.breaker_opened_at = opened_at;
	SpinLockRelease(&oms_shared->mutex);
}

void
oms_shmem_relay_note_error(int slotno, const char *message)
{
	OmsWorkerSlot *slot = get_slot(slotno);

	store_error(slot->relay.last_error, &slot->relay.last_error_at, NULL, message);
}

/* A starting worker's inbox: no consumer yet, nothing assigned. */
void
oms_shmem_inbox_reset(int slotno)
{
	OmsWorkerSlot *slot = get_slot(slotno);

	SpinLockAcquire(&oms_shared->mutex);
	slot->inbox.state = OMS_KAFKA_OFF;
	slot->inbox.partitions = 0;
	slot->inbox.lag = -1;
	slot->inbox.lag_at = 0;
	SpinLockRelease(&oms_shared->mutex);
}

void
oms_shmem_inbox_set_state(int slotno, OmsKafkaState state)
{
	OmsWorkerSlot *slot = get_slot(slotno);

	SpinLockAcquire(&oms_shared->mutex);
	slot->inbox.state = state;
	if (state != OMS_KAFKA_READY)
	{
		slot->inbox.partitions = 0;
		slot->inbox.lag = -1;
		slot->inbox.lag_at = 0;
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
			slot->inbox.applied++;
			break;
		case OMS_INBOX_DUPLICATE:
			slot->inbox.duplicates++;
			break;
		case OMS_INBOX_LATE:
			slot->inbox.late++;
			break;
		case OMS_INBOX_REJECTED:
			slot->inbox.rejected++;
			break;
		case OMS_INBOX_OTHER:
			slot->inbox.other++;
			break;
	}
	slot->inbox.last_reply_at = now;
	SpinLockRelease(&oms_shared->mutex);
}

/* A reply's transaction failed; it will be delivered again. */
void
oms_shmem_inbox_note_failure(int slotno, const char *message)
{
	OmsWorkerSlot *slot = get_slot(slotno);

	store_error(slot->inbox.last_error, &slot->inbox.last_error_at, &slot->inbox.failures, message);
}

/* A consumer-side error: Kafka client, offsets, refused settings. */
void
oms_shmem_inbox_note_error(int slotno, const char *message)
{
	OmsWorkerSlot *slot = get_slot(slotno);

	store_error(slot->inbox.last_error, &slot->inbox.last_error_at, NULL, message);
}

void
oms_shmem_inbox_set_lag(int slotno, int partitions, int64 lag, TimestampTz now)
{
	OmsWorkerSlot *slot = get_slot(slotno);

	SpinLockAcquire(&oms_shared->mutex);
	slot->inbox.partitions = partitions;
	slot->inbox.lag = lag;
	slot->inbox.lag_at = now;
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

/* Refuses to report on shared memory that was never set up. */
static void
require_shared(void)
{
	if (oms_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("oms shared memory is not initialized"),
				 errhint(OMS_PRELOAD_HINT)));
}

/* How many slots a status function reports on. */
int
oms_shmem_status_slot_count(void)
{
	require_shared();
	return oms_shared->nslots;
}

/* The slot serving the current database, or -1 when none does. */
int
oms_shmem_status_my_slot(void)
{
	char	   *dbname;

	require_shared();
	dbname = get_database_name(MyDatabaseId);
	return dbname ? oms_shmem_slot_by_name(dbname) : -1;
}

/* Copies the OMS_MAX_SAGA_WORKERS process slots of a database. */
void
oms_shmem_copy_procs(int slotno, OmsProcSlot *procs)
{
	OmsWorkerSlot *slot = get_slot(slotno);

	SpinLockAcquire(&oms_shared->mutex);
	memcpy(procs, slot->procs, sizeof(slot->procs));
	SpinLockRelease(&oms_shared->mutex);
}

/* Copies a database's relay figures, and whether its main worker runs. */
void
oms_shmem_copy_relay(int slotno, OmsRelayShared *relay, bool *worker_running)
{
	OmsWorkerSlot *slot = get_slot(slotno);

	SpinLockAcquire(&oms_shared->mutex);
	memcpy(relay, &slot->relay, sizeof(OmsRelayShared));
	*worker_running = (slot->procs[0].pid != 0);
	SpinLockRelease(&oms_shared->mutex);
}

/* Copies a database's reply consumer figures, and whether its main worker runs. */
void
oms_shmem_copy_inbox(int slotno, OmsInboxShared *inbox, bool *worker_running)
{
	OmsWorkerSlot *slot = get_slot(slotno);

	SpinLockAcquire(&oms_shared->mutex);
	memcpy(inbox, &slot->inbox, sizeof(OmsInboxShared));
	*worker_running = (slot->procs[0].pid != 0);
	SpinLockRelease(&oms_shared->mutex);
}
