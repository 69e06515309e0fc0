/*-------------------------------------------------------------------------
 *
 * oms.h
 *	  Declarations shared between the C files of the oms extension.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OMS_H
#define OMS_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"

/* guc.c: settings under the reserved "oms." prefix */
extern int	oms_idempotency_ttl;
extern bool oms_restoring;
extern int	oms_max_order_items;
extern int	oms_max_item_quantity;
extern char *oms_database_name;
extern bool oms_worker_enabled;
extern int	oms_worker_naptime;
extern int	oms_worker_batch_size;

extern void oms_define_gucs(void);
extern bool oms_split_database_names(char *rawstring, List **names);

/* Most databases oms.database_name may list: one shared memory slot each. */
#define OMS_MAX_DATABASES 16

/* Longest last-error text kept per worker, terminator included. */
#define OMS_ERROR_LEN 256

/* shmem.c: the state the launcher, the workers and backends share */
extern void oms_shmem_init(void);
extern int	oms_shmem_slot_count(void);
extern const char *oms_shmem_slot_name(int slotno);
extern int	oms_shmem_slot_by_name(const char *dbname);
extern void oms_shmem_set_launcher_pid(pid_t pid);
extern bool oms_shmem_claim_slot(int slotno, Oid dboid, pid_t pid, int pgprocno);
extern void oms_shmem_release_slot(int slotno, pid_t pid);
extern pid_t oms_shmem_worker_pid(int slotno);
extern void oms_shmem_note_loop(int slotno, int units);
extern void oms_shmem_note_error(int slotno, const char *message);
extern void oms_shmem_mark_drop(int slotno, Oid dboid, TimestampTz until);
extern void oms_shmem_clear_drop(int slotno, Oid dboid);
extern bool oms_shmem_drop_in_progress(int slotno, Oid dboid, TimestampTz now);
extern void oms_shmem_wake_worker(Oid dboid);

/* launcher.c: starts one worker per database, stops it for DROP DATABASE */
extern void oms_register_launcher(void);
extern void oms_install_utility_hook(void);
extern PGDLLEXPORT void oms_launcher_main(Datum main_arg);

/* worker.c: the per-database loop */
extern PGDLLEXPORT void oms_worker_main(Datum main_arg);

#endif							/* OMS_H */
