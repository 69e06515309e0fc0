/*-------------------------------------------------------------------------
 *
 * inbox.h
 *	  inbox.c: the reply consumer's step in each loop of the main worker.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OMS_INBOX_H
#define OMS_INBOX_H

extern void oms_inbox_init(int slotno, const char *dbname);
extern bool oms_inbox_run(int slotno, MemoryContext loop_cxt, int *applied);
extern void oms_inbox_idle(int slotno);
extern long oms_inbox_sleep_limit(long naptime);

#endif							/* OMS_INBOX_H */
