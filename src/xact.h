/*-------------------------------------------------------------------------
 *
 * xact.h
 *	  xact.c: the transaction bracket every piece of the workers' work
 *	  runs in, and whether the extension is there to be called.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OMS_XACT_H
#define OMS_XACT_H

/* A piece of work run inside the bracket; returns how much it did. */
typedef int (*OmsXactBody) (void *arg);

extern void oms_xact_init(int slotno, int proc);
extern bool oms_xact_extension_ready(void);
extern bool oms_xact_run(int slotno, MemoryContext err_cxt, const char *activity,
						 OmsXactBody body, void *arg, int *result, char **errmsg);
extern ErrorData *oms_xact_last_error(void);
extern bool oms_xact_run_ext(int slotno, MemoryContext err_cxt, const char *activity,
							 OmsXactBody body, void *arg, int *result,
							 char **errmsg, bool log_error);

#endif							/* OMS_XACT_H */
