/*-------------------------------------------------------------------------
 *
 * guc_ops.c
 *	  The oms.* settings of operations: tracing, health thresholds,
 *	  maintenance and retention, and worker log rate limiting.
 *
 * SQL reads most of them with current_setting(), so durations carry GUC
 * units and read as intervals.  docs/configuration.md describes each.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "utils/guc.h"

#include "oms.h"

/* The caller's W3C trace context; empty when the caller sends none. */
char	   *oms_traceparent = NULL;

/* Health thresholds, read by oms_health(). */
static int	oms_health_worker_timeout = 30 * 1000;
static int	oms_health_outbox_lag = 60 * 1000;
static int	oms_health_saga_lag = 60 * 1000;
static int	oms_health_inbox_lag = 1000;
static int	oms_health_dead_letters = 1;

/* Maintenance and retention, read by the maintenance tasks. */
static int	oms_pending_order_ttl = 24 * 60 * 60;
static int	oms_timeline_retention = 0;
static int	oms_inbox_retention = 7 * 24 * 60 * 60;
static int	oms_saga_stuck_after = 60 * 1000;
int			oms_maintenance_interval = 60;

/* Shortest interval between two log lines about the same ongoing problem. */
int			oms_log_min_interval = 10 * 1000;

static bool
is_lower_hex(const char *s, int len)
{
	for (int i = 0; i < len; i++)
	{
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	}
	return true;
}

static bool
is_all_zero(const char *s, int len)
{
	for (int i = 0; i < len; i++)
	{
		if (s[i] != '0')
			return false;
	}
	return true;
}

/*
 * Validates a traceparent as the W3C Trace Context recommendation defines
 * it: version-traceid-parentid-flags in lowercase hex.  Version 00 has
 * exactly these four fields; a later version may append more after a dash,
 * which a version-00 reader must ignore.  Version ff and all-zero ids are
 * invalid.  Returns the reason, or NULL when the value is valid.
 */
const char *
oms_traceparent_problem(const char *value)
{
	size_t		len = strlen(value);

	if (len < 55)
		return "A traceparent has 55 characters: version-traceid-parentid-flags.";
	if (value[2] != '-' || value[35] != '-' || value[52] != '-')
		return "The fields of a traceparent are separated by dashes: 2, 32, 16 and 2 hex digits.";
	if (!is_lower_hex(value, 2) || !is_lower_hex(value + 3, 32) ||
		!is_lower_hex(value + 36, 16) || !is_lower_hex(value + 53, 2))
		return "A traceparent holds lowercase hex digits only.";
	if (strncmp(value, "ff", 2) == 0)
		return "Version ff is invalid.";
	if (strncmp(value, "00", 2) == 0 && len != 55)
		return "A version 00 traceparent has exactly 55 characters.";
	if (len > 55 && value[55] != '-')
		return "Fields after the flags must follow a dash.";
	if (is_all_zero(value + 3, 32))
		return "The trace id must not be all zeros.";
	if (is_all_zero(value + 36, 16))
		return "The parent id must not be all zeros.";
	return NULL;
}

static bool
check_traceparent(char **newval, void **extra, GucSource source)
{
	const char *problem;

	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	problem = oms_traceparent_problem(*newval);
	if (problem == NULL)
		return true;
	GUC_check_errcode(ERRCODE_INVALID_PARAMETER_VALUE);
	GUC_check_errdetail("%s", problem);
	return false;
}

static void
define_health_gucs(void)
{
	DefineCustomIntVariable("oms.health_worker_timeout",
							"Age of a worker's last loop after which oms_health() reports it down.",
							NULL,
							&oms_health_worker_timeout,
							30 * 1000, 1, INT_MAX,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("oms.health_outbox_lag",
							"Age of the oldest unpublished outbox event above which oms_health() reports degraded.",
							NULL,
							&oms_health_outbox_lag,
							60 * 1000, 1, INT_MAX,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("oms.health_saga_lag",
							"How long a saga step may be overdue before oms_health() reports degraded.",
							NULL,
							&oms_health_saga_lag,
							60 * 1000, 1, INT_MAX,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("oms.health_inbox_lag",
							"Payment replies waiting in Kafka above which oms_health() reports degraded.",
							NULL,
							&oms_health_inbox_lag,
							1000, 1, INT_MAX,
							PGC_SUSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("oms.health_dead_letters",
							"Open replayable dead letters (compensation_stuck, publish) at or above which oms_health() reports degraded; 0 never does.",
							NULL,
							&oms_health_dead_letters,
							1, 0, INT_MAX,
							PGC_SUSET, 0,
							NULL, NULL, NULL);
}

static void
define_maintenance_gucs(void)
{
	DefineCustomIntVariable("oms.pending_order_ttl",
							"How long an order may stay pending before maintenance cancels it as abandoned; 0 never does.",
							NULL,
							&oms_pending_order_ttl,
							24 * 60 * 60, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("oms.timeline_retention",
							"How long timeline entries of finished orders are kept; 0 keeps them forever.",
							NULL,
							&oms_timeline_retention,
							0, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("oms.inbox_retention",
							"How long applied payment replies are remembered for deduplication; 0 keeps them forever.",
							NULL,
							&oms_inbox_retention,
							7 * 24 * 60 * 60, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("oms.saga_stuck_after",
							"How long a saga step may be overdue before maintenance drives it itself.",
							NULL,
							&oms_saga_stuck_after,
							60 * 1000, 1, INT_MAX,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("oms.maintenance_interval",
							"How often the worker runs maintenance when pg_cron does not; 0 never does.",
							NULL,
							&oms_maintenance_interval,
							60, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
}

void
oms_define_ops_gucs(void)
{
	DefineCustomStringVariable("oms.traceparent",
							   "W3C trace context of the calling request.",
							   "Stored on the timeline entries and carried as the traceparent "
							   "header of the events the call causes.  Set it with SET LOCAL.",
							   &oms_traceparent,
							   "",
							   PGC_USERSET,
							   GUC_NOT_IN_SAMPLE,
							   check_traceparent, NULL, NULL);
	define_health_gucs();
	define_maintenance_gucs();
	DefineCustomIntVariable("oms.log_min_interval",
							"Shortest interval between two worker log lines about the same ongoing problem.",
							"Repeats in between are counted and reported with the next line.",
							&oms_log_min_interval,
							10 * 1000, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
}
