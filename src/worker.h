/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  worker.c: the per-database worker processes (the main worker, which
 *	  drives the relay and the inbox, and the saga workers), as the
 *	  launcher starts them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OMS_WORKER_H
#define OMS_WORKER_H

extern PGDLLEXPORT void oms_worker_main(Datum main_arg);
extern Datum oms_worker_main_arg(int slotno, int proc);

#endif							/* OMS_WORKER_H */
