/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The oms launcher: keeps the workers of each database named by
 *	  oms.database_name running (the main worker and oms.saga_workers - 1
 *	  saga workers), and stops them when their database is dropped.
 *
 * The launcher is a static background worker connected to no database, so
 * it can read only shared catalogs, which is all it needs: pg_database says
 * which of the listed databases exist.  Workers are dynamic background
 * workers that are never restarted by the postmaster; the launcher starts
 * them again instead, at most once per restart interval, so a worker that
 * fails at once does not spin.  A database that does not exist is logged
 * once, when it goes missing, not on every look.
 *
 * A connected worker would make DROP DATABASE fail after waiting five
 * seconds ("being accessed by other users"), so a ProcessUtility hook stops
 * it first and keeps the launcher from starting it again while the drop
 * runs.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "guc.h"
#include "launcher.h"
#include "log.h"
#include "shmem.h"
#include "worker.h"

/* Seconds the postmaster waits before restarting a launcher that died. */
#define OMS_LAUNCHER_RESTART_SECS 5

/* A worker is started again at most this often, whatever the naptime. */
#define OMS_MIN_RESTART_MS 1000

/* How long DROP DATABASE keeps the launcher away, and waits for the worker. */
#define OMS_DROP_MARK_MS 10000
#define OMS_DROP_WAIT_MS 5000
#define OMS_DROP_POLL_MS 10

/* What the launcher found in pg_database for one listed name. */
typedef struct DatabaseLook
{
	bool		exists;
	bool		connectable;
	Oid			oid;
} DatabaseLook;

/* Launcher-local memory per process of a database: nothing here is shared. */
typedef struct LauncherProc
{
	BackgroundWorkerHandle *handle; /* last worker registered, or NULL */
	TimestampTz last_start;		/* when it was registered, 0 if never */
	bool		full_logged;	/* "no free worker slot" already said */
} LauncherProc;

/* Launcher-local memory per database slot. */
typedef struct LauncherSlot
{
	LauncherProc procs[OMS_MAX_SAGA_WORKERS];
	bool		missing_logged; /* "does not exist" already said */
	bool		closed_logged;	/* "does not allow connections" already said */
} LauncherSlot;

static LauncherSlot launcher_slots[OMS_MAX_DATABASES];

static ProcessUtility_hook_type prev_ProcessUtility = NULL;

/* Registers the launcher; _PG_init calls this during preload only. */
void
oms_register_launcher(void)
{
	BackgroundWorker worker;
	char	   *raw;
	List	   *names = NIL;
	bool		empty;

	/* An empty oms.database_name means: no background processes at all. */
	raw = pstrdup(oms_database_name ? oms_database_name : "");
	empty = !oms_split_database_names(raw, &names) || names == NIL;
	list_free(names);
	pfree(raw);
	if (empty)
		return;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = OMS_LAUNCHER_RESTART_SECS;
	strlcpy(worker.bgw_library_name, "oms", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "oms_launcher_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "oms launcher", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "oms launcher", BGW_MAXLEN);
	worker.bgw_main_arg = (Datum) 0;
	worker.bgw_notify_pid = 0;

	RegisterBackgroundWorker(&worker);
}

/*
 * One pass over pg_database for all listed names.  The launcher has no
 * database, so this is a plain scan of the shared catalog, as the
 * autovacuum launcher does it.
 */
static void
look_up_databases(DatabaseLook *looks, int nslots)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	memset(looks, 0, sizeof(DatabaseLook) * nslots);

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	pgstat_report_activity(STATE_RUNNING, "looking up oms databases");

	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);
		int			slotno = oms_shmem_slot_by_name(NameStr(db->datname));

		if (slotno < 0)
			continue;
		looks[slotno].exists = true;
		looks[slotno].oid = db->oid;

		/*
		 * An interrupted DROP DATABASE leaves an invalid, unconnectable
		 * entry.
		 */
		looks[slotno].connectable = db->datallowconn && !database_is_invalid_form(db);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);

	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* Is this process of this slot running or about to run? */
static bool
worker_alive(int slotno, int proc)
{
	LauncherProc *lp = &launcher_slots[slotno].procs[proc];
	pid_t		pid;

	if (oms_shmem_worker_pid(slotno, proc) != 0)
		return true;
	if (lp->handle != NULL)
	{
		BgwHandleStatus status = GetBackgroundWorkerPid(lp->handle, &pid);

		/* STARTED with no pid in shmem: it has yet to claim its slot. */
		if (status == BGWH_NOT_YET_STARTED || status == BGWH_STARTED)
			return true;
	}
	return false;
}

/*
 * The launcher serves no database of its own: each line names the one it
 * is about.
 */
static void
launcher_log_begin(StringInfo line, const char *event, const char *dbname)
{
	oms_log_begin(line, event);
	oms_log_str(line, "database", dbname);
}

static bool
start_worker(int slotno, int proc, Oid dboid)
{
	LauncherProc *ls = &launcher_slots[slotno].procs[proc];
	const char *dbname = oms_shmem_slot_name(slotno);
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	MemoryContext oldcxt;
	bool		ok;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(worker.bgw_library_name, "oms", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "oms_worker_main", BGW_MAXLEN);
	if (proc == 0)
	{
		snprintf(worker.bgw_name, BGW_MAXLEN, "oms worker %s", dbname);
		strlcpy(worker.bgw_type, "oms worker", BGW_MAXLEN);
	}
	else
	{
		snprintf(worker.bgw_name, BGW_MAXLEN, "oms saga worker %d %s", proc, dbname);
		strlcpy(worker.bgw_type, "oms saga worker", BGW_MAXLEN);
	}
	worker.bgw_main_arg = oms_worker_main_arg(slotno, proc);
	/* The OID, not the name: a database re-created meanwhile is not ours. */
	memcpy(worker.bgw_extra, &dboid, sizeof(Oid));
	/* The postmaster signals us when the worker starts or stops. */
	worker.bgw_notify_pid = MyProcPid;

	/* The handle outlives this loop. */
	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	ok = RegisterDynamicBackgroundWorker(&worker, &handle);
	MemoryContextSwitchTo(oldcxt);

	ls->last_start = GetCurrentTimestamp();
	if (!ok)
	{
		if (!ls->full_logged)
		{
			StringInfoData line;

			launcher_log_begin(&line, "worker_start_failed", dbname);
			if (proc > 0)
				oms_log_int(&line, "saga_worker", proc);
			oms_log_str(&line, "reason", "no background worker slot is free");
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg_internal("%s", line.data),
					 errdetail("Could not start the oms worker: no background worker slot is free."),
					 errhint("Increase max_worker_processes.")));
			pfree(line.data);
		}
		ls->full_logged = true;
		return false;
	}
	ls->full_logged = false;
	if (ls->handle != NULL)
		pfree(ls->handle);
	ls->handle = handle;
	return true;
}

/*
 * Starts process "proc" of a database unless it runs or was started less
 * than a restart interval ago; returns how long the launcher may sleep
 * before it should look again.
 */
static long
start_if_missing(int slotno, int proc, Oid dboid, TimestampTz now, long restart_ms)
{
	LauncherProc *lp = &launcher_slots[slotno].procs[proc];

	if (worker_alive(slotno, proc))
		return LONG_MAX;
	if (lp->last_start != 0)
	{
		TimestampTz next = TimestampTzPlusMilliseconds(lp->last_start, restart_ms);

		if (now < next)
			return Max((long) ((next - now + 999) / 1000), 1);
	}
	(void) start_worker(slotno, proc, dboid);
	return LONG_MAX;
}

/*
 * Looks at every listed database once, starts the workers that are
 * missing, and returns how long the launcher may sleep: the naptime, or
 * less when a restart interval runs out sooner.
 */
static long
launcher_pass(void)
{
	int			nslots = oms_shmem_slot_count();
	DatabaseLook looks[OMS_MAX_DATABASES];
	long		restart_ms = Max(oms_worker_naptime, OMS_MIN_RESTART_MS);
	long		sleep_ms = oms_worker_naptime;
	TimestampTz now;

	look_up_databases(looks, nslots);
	now = GetCurrentTimestamp();

	for (int i = 0; i < nslots; i++)
	{
		LauncherSlot *ls = &launcher_slots[i];
		const char *dbname = oms_shmem_slot_name(i);

		if (!looks[i].exists)
		{
			if (!ls->missing_logged)
			{
				StringInfoData line;

				launcher_log_begin(&line, "database_missing", dbname);
				ereport(LOG,
						(errmsg_internal("%s", line.data),
						 errdetail("The database does not exist; the oms worker for it starts when the database is created."),
						 errhint("Check oms.database_name.")));
				pfree(line.data);
			}
			ls->missing_logged = true;
			continue;
		}
		ls->missing_logged = false;

		/* Quiet while our DROP DATABASE hook runs: the drop closes it first. */
		if (oms_shmem_drop_in_progress(i, looks[i].oid, now))
			continue;

		if (!looks[i].connectable)
		{
			if (!ls->closed_logged)
			{
				StringInfoData line;

				launcher_log_begin(&line, "database_not_connectable", dbname);
				ereport(LOG,
						(errmsg_internal("%s", line.data),
						 errdetail("The database does not allow connections; the oms worker for it starts when connections are allowed.")));
				pfree(line.data);
			}
			ls->closed_logged = true;
			continue;
		}
		ls->closed_logged = false;

		for (int p = 0; p < oms_saga_workers; p++)
			sleep_ms = Min(sleep_ms, start_if_missing(i, p, looks[i].oid, now, restart_ms));
	}

	return sleep_ms;
}

static void
launcher_on_exit(int code, Datum arg)
{
	oms_shmem_set_launcher_pid(0);
}

void
oms_launcher_main(Datum main_arg)
{
	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();

	/* No database: only shared catalogs are needed. */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	oms_shmem_set_launcher_pid(MyProcPid);
	before_shmem_exit(launcher_on_exit, (Datum) 0);
	{
		StringInfoData line;

		oms_log_begin(&line, "launcher_started");
		oms_log_int(&line, "pid", MyProcPid);
		oms_log_int(&line, "databases", oms_shmem_slot_count());
		oms_log_emit(LOG, &line);
	}

	for (;;)
	{
		long		sleep_ms;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		sleep_ms = launcher_pass();

		/* Workers starting or stopping set our latch (bgw_notify_pid). */
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sleep_ms,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * DROP DATABASE (or a rename, or a copy as template) of a database our
 * workers are connected to: tell the launcher to stay away, stop every
 * worker of the database and wait (briefly) until they are gone, so the drop neither waits nor fails because of us.  Only for a
 * drop that can succeed: a user who may not drop the database must not be
 * able to stop its worker this way.
 */
static int
stop_worker_for_drop(const char *dbname, bool as_template, Oid *dboid_out)
{
	int			slotno = oms_shmem_slot_by_name(dbname);
	Oid			dboid;
	pid_t		pid;

	if (slotno < 0)
		return -1;
	dboid = get_database_oid(dbname, true);
	if (!OidIsValid(dboid) || dboid == MyDatabaseId)
		return -1;
	if (as_template ? !have_createdb_privilege() : !pg_database_ownercheck(dboid, GetUserId()))
		return -1;

	oms_shmem_mark_drop(slotno, dboid,
						TimestampTzPlusMilliseconds(GetCurrentTimestamp(), OMS_DROP_MARK_MS));
	*dboid_out = dboid;

	for (int p = 0; p < OMS_MAX_SAGA_WORKERS; p++)
	{
		pid = oms_shmem_worker_pid(slotno, p);
		if (pid != 0 && kill(pid, SIGTERM) != 0 && errno != ESRCH)
			ereport(WARNING,
					(errmsg("could not signal the oms worker of database \"%s\" (pid %d): %m",
							dbname, (int) pid)));
	}

	for (int waited = 0; waited < OMS_DROP_WAIT_MS; waited += OMS_DROP_POLL_MS)
	{
		if (!oms_shmem_any_worker(slotno))
			break;
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 OMS_DROP_POLL_MS,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	return slotno;
}

/* The TEMPLATE option of CREATE DATABASE, or NULL. */
static const char *
template_of(List *options)
{
	ListCell   *lc;

	foreach(lc, options)
	{
		DefElem    *def = lfirst_node(DefElem, lc);

		if (strcmp(def->defname, "template") == 0 && def->arg != NULL)
			return defGetString(def);
	}
	return NULL;
}

static void
oms_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
				   bool readOnlyTree, ProcessUtilityContext context,
				   ParamListInfo params, QueryEnvironment *queryEnv,
				   DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	int			found_slot = -1;
	Oid			found_oid = InvalidOid;
	volatile int slotno;
	volatile Oid dboid;

	const char *dbname = NULL;
	volatile bool as_template = false;

	/*
	 * DROP DATABASE, ALTER DATABASE ... RENAME and CREATE DATABASE ...
	 * TEMPLATE all need the database to themselves.  Where the command is
	 * bound to be refused (transaction block, function), leave the worker
	 * alone and let the standard code say so.
	 */
	if (context == PROCESS_UTILITY_TOPLEVEL && !IsTransactionBlock() && !IsSubTransaction())
	{
		if (IsA(parsetree, DropdbStmt))
			dbname = ((DropdbStmt *) parsetree)->dbname;
		else if (IsA(parsetree, RenameStmt) &&
				 ((RenameStmt *) parsetree)->renameType == OBJECT_DATABASE)
			dbname = ((RenameStmt *) parsetree)->subname;
		else if (IsA(parsetree, CreatedbStmt))
		{
			dbname = template_of(((CreatedbStmt *) parsetree)->options);
			as_template = true;
		}
	}
	if (dbname != NULL)
		found_slot = stop_worker_for_drop(dbname, as_template, &found_oid);
	/* Copies that survive the longjmp of an error in the command. */
	slotno = found_slot;
	dboid = found_oid;

	if (slotno < 0)
	{
		if (prev_ProcessUtility)
			prev_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
									params, queryEnv, dest, qc);
		return;
	}

	PG_TRY();
	{
		if (prev_ProcessUtility)
			prev_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
									params, queryEnv, dest, qc);
		/* A template was only copied: its worker comes back at once. */
		if (as_template)
			oms_shmem_clear_drop(slotno, dboid);
	}
	PG_CATCH();
	{
		/* The database stays: let the launcher bring its worker back now. */
		oms_shmem_clear_drop(slotno, dboid);
		PG_RE_THROW();
	}
	PG_END_TRY();
}

void
oms_install_utility_hook(void)
{
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = oms_ProcessUtility;
}
