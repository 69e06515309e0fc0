/*-------------------------------------------------------------------------
 *
 * trace.c
 *	  W3C Trace Context: the one check of a traceparent value, used by the
 *	  oms.traceparent setting (guc.c) and, as oms._traceparent_problem(),
 *	  by the CHECK constraints of the columns that store one.
 *
 * One check in two places means a value the tables accept can always be
 * set again when the engine resumes a saga under its trace.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"

#include "trace.h"

PG_FUNCTION_INFO_V1(oms_traceparent_problem_sql);

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

/*
 * oms._traceparent_problem(value): why a stored traceparent is invalid, or
 * NULL when it is valid.  The same check as SET oms.traceparent, so that
 * every stored value can be set again when a saga resumes.
 */
Datum
oms_traceparent_problem_sql(PG_FUNCTION_ARGS)
{
	const char *problem = oms_traceparent_problem(text_to_cstring(PG_GETARG_TEXT_PP(0)));

	if (problem == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(problem));
}
