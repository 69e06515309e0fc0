/*-------------------------------------------------------------------------
 *
 * trace.h
 *	  trace.c: the check of a W3C traceparent value.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OMS_TRACE_H
#define OMS_TRACE_H

extern const char *oms_traceparent_problem(const char *value);

#endif							/* OMS_TRACE_H */
