/*-------------------------------------------------------------------------
 *
 * log.c
 *	  Structured log lines of the oms worker and saga engine, their rate
 *	  limit, and the trace context check used by the tables.
 *
 * Every notable event is one line of stable key=value fields:
 *
 *	  oms: event=saga_step_failed database=shop saga_id=... step=pay attempt=2
 *		   sqlstate=OM010 retry_in_ms=2000 message="payment failed: ..."
 *
 * "event" and "database" come first, the other fields in the order the
 * caller gives them; a field without a value is left out.  A value with a
 * space, a quote, an equals sign, a backslash or a control character, or
 * an empty one, is quoted with double quotes, inside which \" \\ \n \r \t
 * and \xHH escape.  docs/architecture.md lists the events and fields: they
 * are an interface for log processors and alert rules.
 *
 * The lines go to the server log only.  Sessions that drive sagas with
 * oms_run_sagas() do not receive them as warnings: whoever ran the saga
 * sees its outcome in the data, and the line is for the operator.
 *
 * An ongoing problem (brokers down, a batch that keeps failing) would log
 * the same line every loop.  An OmsLogLimit lets the first line through,
 * counts repeats for oms.log_min_interval, and the next line that is let
 * through reports them as suppressed=N; the end of the problem is logged
 * once, with the repeats not yet reported.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "guc.h"
#include "log.h"

PG_FUNCTION_INFO_V1(oms_log_sql);

/* Longest value written, in bytes; longer ones are cut (error messages). */
#define LOG_VALUE_MAX 1000

/* The database named in every line; set by the worker, else looked up. */
static char log_dbname[NAMEDATALEN];

void
oms_log_set_database(const char *dbname)
{
	strlcpy(log_dbname, dbname, sizeof(log_dbname));
}

static bool
needs_quotes(const char *value)
{
	if (value[0] == '\0')
		return true;
	for (const unsigned char *p = (const unsigned char *) value; *p; p++)
	{
		if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7f)
			return true;
	}
	return false;
}

/* Appends " key=value", quoting the value when it needs it. */
void
oms_log_str(StringInfo buf, const char *key, const char *value)
{
	int			len;

	if (value == NULL)
		return;
	len = strlen(value);
	if (len > LOG_VALUE_MAX)
		len = pg_mbcliplen(value, len, LOG_VALUE_MAX);

	appendStringInfo(buf, " %s=", key);
	if (!needs_quotes(value))
	{
		appendBinaryStringInfo(buf, value, len);
		return;
	}
	appendStringInfoChar(buf, '"');
	for (int i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) value[i];

		switch (c)
		{
			case '"':
				appendStringInfoString(buf, "\\\"");
				break;
			case '\\':
				appendStringInfoString(buf, "\\\\");
				break;
			case '\n':
				appendStringInfoString(buf, "\\n");
				break;
			case '\r':
				appendStringInfoString(buf, "\\r");
				break;
			case '\t':
				appendStringInfoString(buf, "\\t");
				break;
			default:
				if (c < ' ' || c == 0x7f)
					appendStringInfo(buf, "\\x%02x", c);
				else
					appendStringInfoChar(buf, (char) c);
				break;
		}
	}
	appendStringInfoChar(buf, '"');
}

void
oms_log_int(StringInfo buf, const char *key, int64 value)
{
	appendStringInfo(buf, " %s=" INT64_FORMAT, key, value);
}

/*
 * Starts a line for "event" in "buf" (initialized here).  Outside the
 * worker, the database name is looked up once, which needs a transaction.
 */
void
oms_log_begin(StringInfo buf, const char *event)
{
	if (log_dbname[0] == '\0' && IsTransactionState() && OidIsValid(MyDatabaseId))
	{
		char	   *name = get_database_name(MyDatabaseId);

		if (name)
			strlcpy(log_dbname, name, sizeof(log_dbname));
	}
	initStringInfo(buf);
	appendStringInfoString(buf, "oms:");
	oms_log_str(buf, "event", event);
	oms_log_str(buf, "database", log_dbname[0] ? log_dbname : NULL);
}

/*
 * Writes the line to the server log at elevel (LOG or WARNING) and frees
 * it.  The PL/pgSQL call stack is left out: the fields say what happened.
 */
void
oms_log_emit(int elevel, StringInfo buf)
{
	if (elevel == LOG)
		ereport(LOG_SERVER_ONLY,
				(errmsg_internal("%s", buf->data),
				 errhidestmt(true),
				 errhidecontext(true)));
	else
	{
		/*
		 * A warning for the server log only: the client's threshold is raised
		 * around it, and put back even if the report fails.
		 */
		int			save_client_min_messages = client_min_messages;

		client_min_messages = ERROR;
		PG_TRY();
		{
			ereport(elevel,
					(errmsg_internal("%s", buf->data),
					 errhidestmt(true),
					 errhidecontext(true)));
		}
		PG_FINALLY();
		{
			client_min_messages = save_client_min_messages;
		}
		PG_END_TRY();
	}
	pfree(buf->data);
	buf->data = NULL;
}

/*
 * Writes the line of a caught error: its SQLSTATE and message as fields,
 * its detail, hint and context as the usual lines that follow.  For the
 * worker's own transactions, whose errors reach no client.
 */
void
oms_log_emit_error(int elevel, StringInfo buf, ErrorData *edata)
{
	if (edata == NULL)
	{
		oms_log_emit(elevel, buf);
		return;
	}
	oms_log_str(buf, "sqlstate", unpack_sql_state(edata->sqlerrcode));
	oms_log_str(buf, "message", edata->message);
	ereport(elevel,
			(errcode(edata->sqlerrcode),
			 errmsg_internal("%s", buf->data),
			 edata->detail ? errdetail_internal("%s", edata->detail) : 0,
			 edata->hint ? errhint("%s", edata->hint) : 0,
			 edata->context ? errcontext("%s", edata->context) : 0));
	pfree(buf->data);
	buf->data = NULL;
}

/*
 * An occurrence of the problem "limit" tracks.  Returns -1 when the line
 * is to be suppressed (it is counted), else the number of lines suppressed
 * since the last one logged, which the caller writes as suppressed=N.
 */
int
oms_log_limit(OmsLogLimit *limit, TimestampTz now)
{
	int			suppressed;

	if (limit->active && oms_log_min_interval > 0 &&
		!TimestampDifferenceExceeds(limit->logged_at, now, oms_log_min_interval))
	{
		limit->suppressed++;
		return -1;
	}
	suppressed = limit->suppressed;
	limit->active = true;
	limit->logged_at = now;
	limit->suppressed = 0;
	return suppressed;
}

/*
 * The problem "limit" tracks is over.  Returns -1 when there was none
 * (nothing to log), else the lines suppressed since the last one logged.
 */
int
oms_log_limit_clear(OmsLogLimit *limit)
{
	int			suppressed;

	if (!limit->active)
		return -1;
	suppressed = limit->suppressed;
	limit->active = false;
	limit->logged_at = 0;
	limit->suppressed = 0;
	return suppressed;
}

/*
 * oms._log(level, event, VARIADIC fields): the saga engine's log lines.
 * fields alternate names and values; null values are left out.  level is
 * 'log' or 'warning'.
 */
Datum
oms_log_sql(PG_FUNCTION_ARGS)
{
	char	   *level;
	int			elevel;
	StringInfoData buf;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("log level and event must not be null")));
	level = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (strcmp(level, "log") == 0)
		elevel = LOG;
	else if (strcmp(level, "warning") == 0)
		elevel = WARNING;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid log level \"%s\"", level),
				 errhint("The level is log or warning.")));

	oms_log_begin(&buf, text_to_cstring(PG_GETARG_TEXT_PP(1)));
	if (!PG_ARGISNULL(2))
	{
		Datum	   *elems;
		bool	   *nulls;
		int			n;

		deconstruct_array(PG_GETARG_ARRAYTYPE_P(2), TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, &nulls, &n);
		for (int i = 0; i + 1 < n; i += 2)
		{
			if (nulls[i] || nulls[i + 1])
				continue;
			oms_log_str(&buf, TextDatumGetCString(elems[i]), TextDatumGetCString(elems[i + 1]));
		}
	}
	/* cppcheck-suppress legacyUninitvar ; set, or ereport(ERROR) left */
	oms_log_emit(elevel, &buf);
	PG_RETURN_VOID();
}
