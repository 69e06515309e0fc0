/*-------------------------------------------------------------------------
 *
 * inbox.c
 *	  The inbox loop: payment replies consumed from Kafka are applied once
 *	  each, by oms._apply_payment_reply(), and their offsets committed only
 *	  after the transaction that applied them; and
 *	  oms._inbox_shmem_status(), the reply consumer's figures in shared
 *	  memory.
 *
 * When oms.kafka_brokers is set, oms.payment_provider is kafka and the
 * extension (with oms._apply_payment_reply) is installed here, the worker
 * runs a Kafka consumer (src/kafka_consumer.c) in group
 * oms.kafka_consumer_group || '-' || <database>, subscribed to
 * oms.kafka_payment_replies_topic.  Each worker loop takes what arrived,
 * without waiting, up to oms.relay_batch_size messages:
 *
 *	1. One transaction per message runs
 *	   oms._apply_payment_reply(id, body), where id is the message's ce_id
 *	   header, or <topic>:<partition>:<offset> without one, and body the
 *	   value as text (null when empty or not valid in the database
 *	   encoding; the function dead-letters what it cannot use and never
 *	   raises for a bad message).  It answers applied, duplicate, late or
 *	   rejected, counted in shared memory.
 *	2. Only after that transaction committed is the message's offset
 *	   stored; the stored offsets are committed to Kafka (asynchronously)
 *	   at the end of the loop.
 *
 * A crash between 1 and 2 makes Kafka deliver the message again, and the
 * inbox table, keyed by message id, turns it into a duplicate: an
 * exactly-once effect from at-least-once delivery.
 *
 * When the transaction fails anyway (a database error: lock timeout,
 * deadlock, disk full), the message is not acknowledged: its partition is
 * sought back to it, the loop stops, and it is retried after a backoff
 * (100 ms doubling to 10 s), so that one failing message neither spins the
 * worker nor fills the log: such failures are logged at most once per
 * oms.log_min_interval, with a count of the others.
 *
 * The worker wakes up when a reply arrives: the consumer's queue writes
 * to the wake-up pipe the worker's wait includes (see kafka.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/value.h"
#include "parser/parse_func.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "guc.h"
#include "inbox.h"
#include "kafka.h"
#include "kafka_consumer.h"
#include "log.h"
#include "shmem.h"
#include "xact.h"

PG_FUNCTION_INFO_V1(oms_inbox_shmem_status);

#define APPLY_QUERY "SELECT oms._apply_payment_reply($1::text, $2::text)"

/* A failed reply is retried after this long, doubling per failure, up to the max. */
#define INBOX_RETRY_MIN_MS 100
#define INBOX_RETRY_MAX_MS 10000

/* How often the lag is computed (from local state only). */
#define INBOX_LAG_INTERVAL_MS 1000

/* While the extension is installed, how often to look whether it still is. */
#define INBOX_EXTENSION_RECHECK_MS 10000

/* inbox_apply's answer when the extension is being dropped or altered. */
#define INBOX_NOT_READY (-1)

/* One message's arguments, and the outcome, across the transaction bracket. */
typedef struct InboxApply
{
	Datum		id;
	Datum		body;
	bool		body_null;
} InboxApply;

static int	inbox_slotno = -1;
static char inbox_dbname[NAMEDATALEN];
static MemoryContext msg_cxt = NULL;

static OmsKafkaState client_state = OMS_KAFKA_OFF;
static const char *off_reason = NULL;

/* Whether the extension and oms._apply_payment_reply are installed, as last seen. */
static bool extension_present = false;
static TimestampTz extension_checked_at = 0;

/* After a failed transaction, nothing is consumed before this time. */
static TimestampTz hold_until = 0;
static int	consecutive_failures = 0;

static TimestampTz lag_at = 0;
static uint32 lag_assignment = 0;	/* assignment the lag was computed for */

/* Ongoing problems, logged once per oms.log_min_interval. */
static OmsLogLimit apply_log;
static OmsLogLimit consumer_log;

/* Called by the main worker once connected, after oms_kafka_init(). */
void
oms_inbox_init(int slotno, const char *dbname)
{
	inbox_slotno = slotno;
	strlcpy(inbox_dbname, dbname, sizeof(inbox_dbname));
	msg_cxt = AllocSetContextCreate(TopMemoryContext,
									"oms inbox message",
									ALLOCSET_SMALL_SIZES);
	oms_shmem_inbox_reset(slotno);
}

/* ---------------------------------------------------------------- wanted? */

/*
 * Transaction body: 1 when the extension and oms._apply_payment_reply(text,
 * text) exist in this database, else 0.
 */
static int
inbox_check_extension(void *arg)
{
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	List	   *name;

	if (!OidIsValid(get_extension_oid("oms", true)))
		return 0;
	/* cppcheck-suppress unknownEvaluationOrder ; independent allocations */
	name = list_make2(makeString("oms"), makeString("_apply_payment_reply"));
	return OidIsValid(LookupFuncName(name, 2, argtypes, true)) ? 1 : 0;
}

/*
 * Whether this worker should consume replies now: brokers set, the Kafka
 * payment provider chosen and the extension installed.  The extension is
 * looked up in a short transaction at most every naptime while it is
 * missing, every INBOX_EXTENSION_RECHECK_MS while it is there (a reply
 * that finds it gone asks for a look at once).
 */
static bool
inbox_wanted(int slotno, MemoryContext loop_cxt, TimestampTz now)
{
	int			interval;
	int			present = 0;

	if (oms_kafka_brokers == NULL || oms_kafka_brokers[0] == '\0')
	{
		off_reason = "oms.kafka_brokers is empty.";
		return false;
	}
	if (!oms_payment_provider_is_kafka())
	{
		off_reason = "oms.payment_provider is not kafka.";
		return false;
	}

	interval = extension_present ? Max(INBOX_EXTENSION_RECHECK_MS, oms_worker_naptime) :
		oms_worker_naptime;
	if (extension_checked_at == 0 ||
		TimestampDifferenceExceeds(extension_checked_at, now, interval))
	{
		if (oms_xact_run(slotno, loop_cxt, "oms inbox: extension check",
						 inbox_check_extension, NULL, &present, NULL))
			extension_present = (present == 1);
		MemoryContextSwitchTo(loop_cxt);
		extension_checked_at = now;
	}
	if (!extension_present)
	{
		off_reason = "The oms extension, or its oms._apply_payment_reply function, is not installed in this database.";
		return false;
	}
	return true;
}

/*
 * Brings the consumer in line with the settings; logs what changed.
 * Returns true when replies can be consumed.
 */
static bool
inbox_client_ready(bool wanted)
{
	char		errbuf[512];
	bool		changed;
	OmsKafkaState state = oms_kafka_inbox_ensure(wanted, &changed, errbuf, sizeof(errbuf));
	StringInfoData line;

	if (changed || state != client_state)
	{
		switch (state)
		{
			case OMS_KAFKA_OFF:
				oms_log_begin(&line, "inbox_stopped");
				oms_log_str(&line, "reason", off_reason);
				oms_log_emit(LOG, &line);
				break;
			case OMS_KAFKA_READY:
				oms_log_begin(&line, "inbox_started");
				oms_log_str(&line, "topic", oms_kafka_payment_replies_topic);
				oms_log_str(&line, "brokers", oms_kafka_brokers);
				oms_log_str(&line, "group", psprintf("%s-%s", oms_kafka_consumer_group, inbox_dbname));
				oms_log_emit(LOG, &line);
				break;
			case OMS_KAFKA_BAD_CONFIG:
				oms_shmem_inbox_note_error(inbox_slotno,
										   psprintf("invalid Kafka consumer settings: %s", errbuf));
				oms_log_begin(&line, "inbox_config_invalid");
				oms_log_str(&line, "error", errbuf);
				ereport(LOG,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg_internal("%s", line.data),
						 errhint("Correct oms.kafka_config, oms.kafka_config_file (or the file it names), oms.kafka_consumer_group or oms.kafka_payment_replies_topic and reload the configuration.")));
				pfree(line.data);
				break;
		}
		oms_shmem_inbox_set_state(inbox_slotno, state);
		client_state = state;
		hold_until = 0;
		consecutive_failures = 0;
		lag_at = 0;
	}
	return state == OMS_KAFKA_READY;
}

/* Serves the consumer's log queue; client and offset errors go to shared memory. */
static void
serve_consumer(void)
{
	char		errbuf[OMS_ERROR_LEN];

	if (oms_kafka_inbox_serve(errbuf, sizeof(errbuf)))
		oms_shmem_inbox_note_error(inbox_slotno, errbuf);
}

/* ---------------------------------------------------------------- applying */

/*
 * Transaction body: applies one reply.  Returns its OmsInboxOutcome, or
 * INBOX_NOT_READY when the extension is being dropped or altered right
 * now (nothing was done).
 */
static int
inbox_apply(void *arg)
{
	InboxApply *a = (InboxApply *) arg;
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		args[2];
	char		nulls[2] = {' ', ' '};
	bool		isnull;
	Datum		result;
	char	   *word;
	int			ret;

	if (!oms_xact_extension_ready())
		return INBOX_NOT_READY;

	args[0] = a->id;
	args[1] = a->body;
	if (a->body_null)
		nulls[1] = 'n';
	ret = SPI_execute_with_args(APPLY_QUERY, 2, argtypes, args, nulls, false, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("oms._apply_payment_reply returned no row"),
				 errdetail("SPI returned code %d with %llu rows.",
						   ret, (unsigned long long) SPI_processed)));
	if (SPI_gettypeid(SPI_tuptable->tupdesc, 1) != TEXTOID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("oms._apply_payment_reply must return text")));

	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		return OMS_INBOX_OTHER;
	word = TextDatumGetCString(result);
	if (strcmp(word, "applied") == 0)
		return OMS_INBOX_APPLIED;
	if (strcmp(word, "duplicate") == 0)
		return OMS_INBOX_DUPLICATE;
	if (strcmp(word, "late") == 0)
		return OMS_INBOX_LATE;
	if (strcmp(word, "rejected") == 0)
		return OMS_INBOX_REJECTED;
	return OMS_INBOX_OTHER;
}

/* Retry delay after the n-th consecutive failure. */
static int
retry_delay_ms(int failures)
{
	int			shift = Min(Max(failures - 1, 0), 10);

	return Min(INBOX_RETRY_MIN_MS << shift, INBOX_RETRY_MAX_MS);
}

/*
 * The arguments of oms._apply_payment_reply for a message, in msg_cxt: a
 * reply may be large.  An id or body that is not valid in the database
 * encoding (or holds a NUL) is not passed: the id falls back to the
 * message's position, the body to null, which the function dead-letters.
 * Returns the id as text, for the log.
 */
static char *
apply_arguments(const OmsKafkaMessage *m, InboxApply *a)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(msg_cxt);
	char	   *idtext;

	if (m->id != NULL && m->idlen > 0 && pg_verifymbstr(m->id, m->idlen, true))
		idtext = pnstrdup(m->id, m->idlen);
	else
		idtext = psprintf("%s:%d:" INT64_FORMAT,
						  m->topic ? m->topic : "", (int) m->partition, m->offset);
	a->id = CStringGetTextDatum(idtext);
	a->body_null = !(m->value != NULL && m->valuelen > 0 &&
					 m->valuelen <= MaxAllocSize - VARHDRSZ &&
					 pg_verifymbstr(m->value, m->valuelen, true));
	a->body = a->body_null ? (Datum) 0 :
		PointerGetDatum(cstring_to_text_with_len(m->value, m->valuelen));
	MemoryContextSwitchTo(oldcxt);
	return idtext;
}

/*
 * The reply's transaction failed: back off, record and log it (in full,
 * with its context, once per oms.log_min_interval), and rewind the message.
 * Logged first: *m points into the message, which the rewind lets go.
 */
static void
apply_failed(int slotno, const OmsKafkaMessage *m, const char *idtext,
			 const char *failure, TimestampTz at)
{
	int			suppressed;

	consecutive_failures++;
	hold_until = TimestampTzPlusMilliseconds(at, retry_delay_ms(consecutive_failures));
	oms_shmem_inbox_note_failure(slotno, failure);
	suppressed = oms_log_limit(&apply_log, at);
	if (suppressed >= 0)
	{
		StringInfoData line;

		oms_log_begin(&line, "payment_reply_failed");
		oms_log_str(&line, "message_id", idtext);
		oms_log_str(&line, "topic", m->topic);
		oms_log_int(&line, "partition", m->partition);
		oms_log_int(&line, "offset", m->offset);
		oms_log_int(&line, "retry_in_ms", retry_delay_ms(consecutive_failures));
		if (suppressed > 0)
			oms_log_int(&line, "suppressed", suppressed);
		oms_log_emit_error(WARNING, &line, oms_xact_last_error());
	}
	oms_kafka_inbox_rewind();
}

/* The reply committed: only now may Kafka forget the message. */
static void
apply_committed(int slotno, int result, TimestampTz at)
{
	int			suppressed;

	oms_kafka_inbox_ack();
	consecutive_failures = 0;
	suppressed = oms_log_limit_clear(&apply_log);
	if (suppressed >= 0)
	{
		StringInfoData line;

		oms_log_begin(&line, "payment_replies_recovered");
		oms_log_int(&line, "suppressed", suppressed);
		oms_log_emit(LOG, &line);
	}
	oms_shmem_inbox_note_reply(slotno, (OmsInboxOutcome) result, at);
}

/*
 * Applies one message in its own transaction.  Returns false when it was
 * not applied: the message is rewound and consumption pauses.
 */
static bool
apply_message(int slotno, MemoryContext loop_cxt, const OmsKafkaMessage *m,
			  int *applied)
{
	InboxApply	a;
	char	   *idtext = apply_arguments(m, &a);
	int			result = 0;
	char	   *failure = NULL;
	bool		ok;
	TimestampTz done_at;

	ok = oms_xact_run_ext(slotno, loop_cxt, APPLY_QUERY, inbox_apply, &a,
						  &result, &failure, false);
	MemoryContextSwitchTo(loop_cxt);
	done_at = GetCurrentTimestamp();
	if (!ok)
	{
		apply_failed(slotno, m, idtext, failure, done_at);
		MemoryContextReset(msg_cxt);
		return false;
	}
	MemoryContextReset(msg_cxt);

	if (result == INBOX_NOT_READY)
	{
		/* DROP or ALTER EXTENSION under way: try again after a look at it. */
		oms_kafka_inbox_rewind();
		extension_checked_at = 0;
		hold_until = TimestampTzPlusMilliseconds(done_at, oms_worker_naptime);
		return false;
	}
	apply_committed(slotno, result, done_at);
	if (result != OMS_INBOX_DUPLICATE)
		(*applied)++;
	return true;
}

/* Logs a consumer error delivered as a message (rate-limited), and records it. */
static void
report_consumer_error(const OmsKafkaMessage *m)
{
	/* cppcheck-suppress shadowFunction ; SQL now() is not called here */
	TimestampTz now;
	int			suppressed;
	char	   *text;

	text = psprintf("Kafka consumer error %s: %s", oms_kafka_err_name(m->err),
					m->errtext ? m->errtext : "");
	oms_shmem_inbox_note_error(inbox_slotno, text);
	now = GetCurrentTimestamp();
	suppressed = oms_log_limit(&consumer_log, now);
	if (suppressed >= 0)
	{
		StringInfoData line;

		oms_log_begin(&line, "inbox_consumer_error");
		oms_log_str(&line, "code", oms_kafka_err_name(m->err));
		if (suppressed > 0)
			oms_log_int(&line, "suppressed", suppressed);
		oms_log_str(&line, "error", m->errtext ? m->errtext : "");
		oms_log_emit(WARNING, &line);
	}
	pfree(text);
}

/* ---------------------------------------------------------------- the step */

/*
 * The inbox's step in a worker loop: applies what arrived, never waiting
 * for Kafka.  *applied counts replies that had an effect (not
 * duplicates), which may have made saga steps due.  Returns true when more
 * messages are probably waiting (a full batch), so the worker loops again
 * without sleeping.
 */
bool
oms_inbox_run(int slotno, MemoryContext loop_cxt, int *applied)
{
	/* cppcheck-suppress shadowFunction ; SQL now() is not called here */
	TimestampTz now = GetCurrentTimestamp();
	int			n = 0;
	bool		stopped = false;

	*applied = 0;
	if (!inbox_client_ready(inbox_wanted(slotno, loop_cxt, now)))
		return false;

	serve_consumer();
	if (now < hold_until)
		return false;

	while (n < oms_relay_batch_size)
	{
		OmsKafkaMessage m;

		CHECK_FOR_INTERRUPTS();
		if (!oms_kafka_inbox_poll(&m))
			break;
		n++;
		if (m.err != 0)
		{
			report_consumer_error(&m);
			continue;
		}
		if (!apply_message(slotno, loop_cxt, &m, applied))
		{
			stopped = true;
			break;
		}
	}

	oms_kafka_inbox_commit();
	serve_consumer();

	now = GetCurrentTimestamp();
	if (TimestampDifferenceExceeds(lag_at, now, INBOX_LAG_INTERVAL_MS) ||
		oms_kafka_inbox_assignment_changes() != lag_assignment)
	{
		int			partitions;
		int64		lag = oms_kafka_inbox_lag(&partitions);

		oms_shmem_inbox_set_lag(slotno, partitions, lag, now);
		lag_at = now;
		lag_assignment = oms_kafka_inbox_assignment_changes();
	}

	return !stopped && n >= oms_relay_batch_size;
}

/*
 * The worker is paused or in recovery: no consumer.  It is closed (leaving
 * the group) and built again when the worker resumes.
 */
void
oms_inbox_idle(int slotno)
{
	off_reason = RecoveryInProgress() ? "The server is in recovery." :
		"oms.worker_enabled is off.";
	(void) inbox_client_ready(false);
}

/* The longest the worker may sleep: until a failed reply's retry. */
long
oms_inbox_sleep_limit(long naptime)
{
	/* cppcheck-suppress shadowFunction ; SQL now() is not called here */
	TimestampTz now;

	if (client_state != OMS_KAFKA_READY || hold_until == 0)
		return naptime;
	now = GetCurrentTimestamp();
	if (now >= hold_until)
		return naptime;
	return Max(1, Min(naptime, TimestampDifferenceMilliseconds(now, hold_until)));
}

/*
 * The reply consumer's status is a row, as the relay's is
 * (oms._relay_shmem_status()); SQL has it as the jsonb object that
 * to_jsonb() makes of the row, under these keys.
 */
typedef struct InboxStatusColumn
{
	const char *name;
	Oid			type;
} InboxStatusColumn;

static const InboxStatusColumn inbox_status_columns[] = {
	{"worker_running", BOOLOID},
	{"consumer", TEXTOID},
	{"applied", INT8OID},
	{"duplicates", INT8OID},
	{"late", INT8OID},
	{"rejected", INT8OID},
	{"other", INT8OID},
	{"failures", INT8OID},
	{"last_reply_at", TIMESTAMPTZOID},
	{"partitions", INT4OID},
	{"lag", INT8OID},
	{"lag_at", TIMESTAMPTZOID},
	{"last_error", TEXTOID},
	{"last_error_at", TIMESTAMPTZOID},
};

#define INBOX_STATUS_NCOLUMNS ((int) lengthof(inbox_status_columns))

/* The status row from a copy of the shared figures. */
static void
inbox_status_values(OmsInboxShared *inbox, bool running, Datum *values, bool *nulls)
{
	static const char *const state_names[] = {"off", "running", "bad_config"};

	/* A stopped worker leaves the state of its consumer behind: stale. */
	bool		ready = running && inbox->state == OMS_KAFKA_READY;

	memset(nulls, 0, sizeof(bool) * INBOX_STATUS_NCOLUMNS);
	values[0] = BoolGetDatum(running);
	values[1] = CStringGetTextDatum(state_names[running ? inbox->state : OMS_KAFKA_OFF]);
	values[2] = Int64GetDatum(inbox->applied);
	values[3] = Int64GetDatum(inbox->duplicates);
	values[4] = Int64GetDatum(inbox->late);
	values[5] = Int64GetDatum(inbox->rejected);
	values[6] = Int64GetDatum(inbox->other);
	values[7] = Int64GetDatum(inbox->failures);
	values[8] = TimestampTzGetDatum(inbox->last_reply_at);
	nulls[8] = (inbox->last_reply_at == 0);
	values[9] = Int32GetDatum(inbox->partitions);
	nulls[9] = !ready;
	values[10] = Int64GetDatum(inbox->lag);
	nulls[10] = !ready || inbox->lag < 0;
	values[11] = TimestampTzGetDatum(inbox->lag_at);
	nulls[11] = !ready || inbox->lag_at == 0;
	values[12] = CStringGetTextDatum(inbox->last_error);
	nulls[12] = (inbox->last_error_at == 0);
	values[13] = TimestampTzGetDatum(inbox->last_error_at);
	nulls[13] = (inbox->last_error_at == 0);
}

/* The status row as jsonb, by SQL's own to_jsonb(). */
static Datum
inbox_status_jsonb(Datum *values, bool *nulls)
{
	TupleDesc	tupdesc = CreateTemplateTupleDesc(INBOX_STATUS_NCOLUMNS);
	FmgrInfo	to_jsonb_fn;
	FuncExpr   *call;

	for (int i = 0; i < INBOX_STATUS_NCOLUMNS; i++)
		TupleDescInitEntry(tupdesc, i + 1, inbox_status_columns[i].name,
						   inbox_status_columns[i].type, -1, 0);
	tupdesc = BlessTupleDesc(tupdesc);

	/* to_jsonb(anyelement) learns its argument's type from the call. */
	call = makeFuncExpr(F_TO_JSONB, JSONBOID,
						list_make1(makeNullConst(RECORDOID, -1, InvalidOid)),
						InvalidOid, InvalidOid, COERCE_EXPLICIT_CALL);
	fmgr_info(F_TO_JSONB, &to_jsonb_fn);
	fmgr_info_set_expr((Node *) call, &to_jsonb_fn);
	return FunctionCall1(&to_jsonb_fn,
						 HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * oms._inbox_shmem_status(): the reply consumer of the current database's
 * slot as jsonb; null when oms.database_name does not list the database.
 */
Datum
oms_inbox_shmem_status(PG_FUNCTION_ARGS)
{
	OmsInboxShared inbox;
	bool		running;
	int			slotno;
	Datum		values[INBOX_STATUS_NCOLUMNS];
	bool		nulls[INBOX_STATUS_NCOLUMNS];

	slotno = oms_shmem_status_my_slot();
	if (slotno < 0)
		PG_RETURN_NULL();
	oms_shmem_copy_inbox(slotno, &inbox, &running);
	inbox_status_values(&inbox, running, values, nulls);
	PG_RETURN_DATUM(inbox_status_jsonb(values, nulls));
}
