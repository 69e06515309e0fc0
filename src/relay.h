/*-------------------------------------------------------------------------
 *
 * relay.h
 *	  relay.c: the outbox relay, one batch per loop of the main worker.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OMS_RELAY_H
#define OMS_RELAY_H

extern void oms_relay_init(int slotno, const char *dbname);
extern void oms_relay_run(int slotno, MemoryContext loop_cxt);
extern void oms_relay_idle(int slotno, MemoryContext loop_cxt);
extern long oms_relay_sleep_limit(long naptime);

#endif							/* OMS_RELAY_H */
