/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  shmem.c: the shared memory of oms, one slot per database in
 *	  oms.database_name, where the launcher, the workers, the DROP
 *	  DATABASE hook and committing backends meet; and the copies of it
 *	  that the status functions (worker.c, relay.c, inbox.c) report.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OMS_SHMEM_H
#define OMS_SHMEM_H

#include "datatype/timestamp.h"

#include "kafka.h"

/* Longest last-error text kept in shared memory, terminator included. */
#define OMS_ERROR_LEN 256

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

/* The relay's circuit breaker, as shown by oms_relay_status(). */
typedef enum OmsBreakerState
{
	OMS_BREAKER_CLOSED = 0,
	OMS_BREAKER_OPEN,
	OMS_BREAKER_HALF_OPEN
} OmsBreakerState;

/*
 * The outbox relay of a database (relay.c).  Counters run from server
 * start; the breaker and the errors are the current worker's.
 */
typedef struct OmsRelayShared
{
	int64		published;		/* events acknowledged */
	int64		failed;			/* failed publish attempts */
	int64		batches;		/* batches that produced something */
	OmsBreakerState breaker;
	TimestampTz breaker_opened_at;
	char		last_error[OMS_ERROR_LEN];
	TimestampTz last_error_at;
	TimestampTz last_publish_at;
	double		ack_latency_ms; /* mean of the last batch */
} OmsRelayShared;

/* What oms._apply_payment_reply made of a reply, as the inbox counts it. */
typedef enum OmsInboxOutcome
{
	OMS_INBOX_APPLIED = 0,
	OMS_INBOX_DUPLICATE,
	OMS_INBOX_LATE,
	OMS_INBOX_REJECTED,
	OMS_INBOX_OTHER				/* a word oms._apply_payment_reply should not
								 * return */
} OmsInboxOutcome;

/*
 * The reply consumer of a database (inbox.c).  Counters run from server
 * start; the state, lag and errors are the current worker's.
 */
typedef struct OmsInboxShared
{
	OmsKafkaState state;
	int64		applied;
	int64		duplicates;
	int64		late;
	int64		rejected;
	int64		other;			/* unexpected result words */
	int64		failures;		/* transactions that failed: retried */
	TimestampTz last_reply_at;
	int			partitions;		/* assigned to this worker */
	int64		lag;			/* -1 when unknown */
	TimestampTz lag_at;
	char		last_error[OMS_ERROR_LEN];
	TimestampTz last_error_at;
} OmsInboxShared;

/* The slots, the launcher and the workers' processes */
extern void oms_shmem_init(void);
extern int	oms_shmem_slot_count(void);
extern const char *oms_shmem_slot_name(int slotno);
extern int	oms_shmem_slot_by_name(const char *dbname);
extern void oms_shmem_set_launcher_pid(pid_t pid);
extern bool oms_shmem_claim_slot(int slotno, int proc, Oid dboid, pid_t pid, int pgprocno);
extern void oms_shmem_release_slot(int slotno, int proc, pid_t pid);
extern pid_t oms_shmem_worker_pid(int slotno, int proc);
extern bool oms_shmem_any_worker(int slotno);
extern void oms_shmem_note_loop(int slotno, int units);
extern void oms_shmem_note_error(int slotno, const char *message);
extern void oms_shmem_set_idle(int slotno, bool idle);
extern void oms_shmem_mark_drop(int slotno, Oid dboid, TimestampTz until);
extern void oms_shmem_clear_drop(int slotno, Oid dboid);
extern bool oms_shmem_drop_in_progress(int slotno, Oid dboid, TimestampTz now);
extern void oms_shmem_wake_worker(Oid dboid);
extern void oms_shmem_wake_saga_worker(int slotno);

/* The relay's figures */
extern void oms_shmem_relay_reset(int slotno);
extern void oms_shmem_relay_note_batch(int slotno, int64 published, int64 failed,
									   double ack_latency_ms, TimestampTz now);
extern void oms_shmem_relay_set_breaker(int slotno, OmsBreakerState state,
										TimestampTz opened_at);
extern void oms_shmem_relay_note_error(int slotno, const char *message);

/* The reply consumer's figures */
extern void oms_shmem_inbox_reset(int slotno);
extern void oms_shmem_inbox_set_state(int slotno, OmsKafkaState state);
extern void oms_shmem_inbox_note_reply(int slotno, OmsInboxOutcome outcome, TimestampTz now);
extern void oms_shmem_inbox_note_failure(int slotno, const char *message);
extern void oms_shmem_inbox_note_error(int slotno, const char *message);
extern void oms_shmem_inbox_set_lag(int slotno, int partitions, int64 lag, TimestampTz now);

/*
 * For the status functions: copies taken under the lock, so that a row is
 * built, and may fail, after it is released.
 */
extern int	oms_shmem_status_slot_count(void);
extern int	oms_shmem_status_my_slot(void);
extern void oms_shmem_copy_procs(int slotno, OmsProcSlot *procs);
extern void oms_shmem_copy_relay(int slotno, OmsRelayShared *relay, bool *worker_running);
extern void oms_shmem_copy_inbox(int slotno, OmsInboxShared *inbox, bool *worker_running);

#endif							/* OMS_SHMEM_H */
