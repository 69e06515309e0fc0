/*-------------------------------------------------------------------------
 *
 * log.h
 *	  log.c: structured log lines ("oms: event=... database=...
 *	  key=value") and their rate limit; docs/architecture.md lists the
 *	  events.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OMS_LOG_H
#define OMS_LOG_H

#include "datatype/timestamp.h"
#include "lib/stringinfo.h"

/* One kind of problem whose lines are rate limited (oms_log_limit). */
typedef struct OmsLogLimit
{
	bool		active;			/* the problem is ongoing */
	TimestampTz logged_at;		/* when its last line was logged */
	int			suppressed;		/* lines not logged since */
} OmsLogLimit;

extern void oms_log_set_database(const char *dbname);
extern void oms_log_begin(StringInfo buf, const char *event);
extern void oms_log_str(StringInfo buf, const char *key, const char *value);
extern void oms_log_int(StringInfo buf, const char *key, int64 value);
extern void oms_log_emit(int elevel, StringInfo buf);
extern void oms_log_emit_error(int elevel, StringInfo buf, ErrorData *edata);
extern int	oms_log_limit(OmsLogLimit *limit, TimestampTz now);
extern int	oms_log_limit_clear(OmsLogLimit *limit);

#endif							/* OMS_LOG_H */
