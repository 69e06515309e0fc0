/*-------------------------------------------------------------------------
 *
 * relay.c
 *	  The outbox relay: publishes oms.outbox events to Kafka, one batch per
 *	  worker loop, and removes each event only after its acknowledgement;
 *	  and oms._relay_shmem_status(), its figures in shared memory.
 *
 * A batch is two short transactions with the Kafka work between them, so
 * no transaction stays open while a broker is slow:
 *
 *	1. oms._relay_claim(n) returns the oldest due events, grouped per
 *	   aggregate in seq order; they are copied into worker memory.
 *	2. Outside any transaction every event is handed to the idempotent
 *	   producer (key = order id, so an order's events share a partition
 *	   and keep their order).  When an event cannot even be handed over
 *	   (too big, queue full), the later events of its aggregate in the
 *	   batch are not produced: they stay in the outbox untouched and follow
 *	   in a later batch, in order.  Then the batch is in flight until every
 *	   delivery report arrived, oms.relay_ack_timeout passed, or the
 *	   brokers are unreachable and no report came for a second; what is
 *	   left then is purged and fails.
 *	3. oms._relay_settle(ids, errors, permanent) removes acknowledged
 *	   events, schedules retries of failed ones and dead-letters those that
 *	   cannot succeed.  An event without a report counts as failed.
 *
 * The worker does not wait for a batch in flight: each loop runs its saga
 * batch (when woken or after the naptime) and then the relay's step, which
 * only looks at the batch; the worker's sleep also wakes up when librdkafka
 * queues a delivery report (worker.c).  So a slow or
 * unreachable broker never holds up sagas, and a signal or a wake is
 * always served at once.  Only one batch is in flight at a time.
 *
 * Delivery is at least once: an event acknowledged after its deadline, or
 * acknowledged behind a failed predecessor, is published again.
 *
 * A circuit breaker spares an unreachable cluster: after
 * oms.relay_breaker_failures consecutive batches that failed without a
 * single acknowledgement it opens, and nothing is produced for
 * oms.relay_breaker_cooldown (sagas keep running); then a probe batch of
 * one event decides between closed and open again.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "commands/dbcommands.h"
#include "funcapi.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"
#include "utils/wait_event.h"

#include "guc.h"
#include "kafka.h"
#include "kafka_producer.h"
#include "log.h"
#include "relay.h"
#include "shmem.h"
#include "xact.h"

PG_FUNCTION_INFO_V1(oms_relay_claim_sql);
PG_FUNCTION_INFO_V1(oms_relay_shmem_status);

/* What pg_stat_activity shows while the relay claims (see CLAIM_SQL). */
#define CLAIM_ACTIVITY "oms relay: claim a batch of outbox events"
#define SETTLE_QUERY "SELECT oms._relay_settle($1, $2, $3)"

/* Rows fetched from the claim cursor at a time. */
#define CLAIM_FETCH 100

/* A batch stops growing at this many bytes of events (at least one event). */
#define RELAY_BATCH_MAX_BYTES (64 * 1024 * 1024)

/* While reports are outstanding, look at the batch at least this often. */
#define RELAY_CHECK_MS 100

/* After a purge, how long the purged messages' reports may take. */
#define RELAY_PURGE_WAIT_MS 1000

/* Brokers unreachable and no report for this long: the batch is given up. */
#define RELAY_DOWN_GRACE_MS 1000

/* One claimed event, copied out of the claim transaction. */
typedef struct RelayEvent
{
	pg_uuid_t	id;
	char	   *topic;
	char	   *key;
	size_t		keylen;
	char	   *value;
	size_t		valuelen;
	char	  **headers;		/* names and values, alternating */
	int			nheaders;
	char	   *aggregatetype;
	pg_uuid_t	aggregateid;
	int64		seq;
	size_t		bytes;			/* key + value + headers */
	char	   *detail;			/* our own error text, or NULL */
} RelayEvent;

typedef struct RelayBatch
{
	int			limit;
	int			nevents;
	size_t		bytes;
	bool		truncated;		/* stopped at RELAY_BATCH_MAX_BYTES */
	RelayEvent *events;
	OmsKafkaReport *reports;
} RelayBatch;

typedef struct RelaySettle
{
	int			n;
	bool		all_acked;		/* no error in the batch */
	Datum		ids;
	Datum		errors;
	Datum		permanent;
} RelaySettle;

/* Why a batch's wait ended with reports outstanding. */
typedef enum RelayAbandon
{
	RELAY_ABANDON_NONE,
	RELAY_ABANDON_TIMEOUT,
	RELAY_ABANDON_BROKERS_DOWN
} RelayAbandon;

static int	relay_slotno = -1;
static char relay_dbname[NAMEDATALEN];
static MemoryContext batch_cxt = NULL;

/* The batch in flight, if phase is not RELAY_IDLE; memory in batch_cxt. */
typedef enum RelayPhase
{
	RELAY_IDLE,					/* no batch in flight */
	RELAY_WAITING,				/* produced, waiting for delivery reports */
	RELAY_PURGING				/* given up, waiting for the purged reports */
} RelayPhase;

static RelayPhase phase = RELAY_IDLE;
static RelayBatch batch;
static TimestampTz batch_deadline;
static TimestampTz purge_deadline;
static TimestampTz progress_at; /* when the last report arrived */
static int	progress_pending;
static RelayAbandon abandon;
static bool *outstanding;		/* per event: pending when purged */

/* After a failed claim or settle, no batch starts before this time. */
static TimestampTz hold_until = 0;

static OmsKafkaState client_state = OMS_KAFKA_OFF;
static OmsBreakerState breaker = OMS_BREAKER_CLOSED;
static int	breaker_failures = 0;
static TimestampTz breaker_opened_at = 0;
static TimestampTz breaker_first_opened_at = 0; /* opened from closed */

/*
 * "Publishing does not work": failed batches, claims and settles are one
 * ongoing problem for the log, whatever the error text, so a broker outage
 * logs its first failure, then one line per oms.log_min_interval, then
 * relay_recovered once.
 */
static OmsLogLimit relay_limit;
static TimestampTz relay_failing_since = 0;

/* Called by the main worker once connected, after oms_kafka_init(). */
void
oms_relay_init(int slotno, const char *dbname)
{
	relay_slotno = slotno;
	strlcpy(relay_dbname, dbname, sizeof(relay_dbname));

	batch_cxt = AllocSetContextCreate(TopMemoryContext,
									  "oms relay batch",
									  ALLOCSET_DEFAULT_SIZES);

	oms_shmem_relay_reset(slotno);
}

/*
 * Records a relay failure in shared memory, and logs it as "event" at
 * WARNING unless the ongoing problem was logged less than
 * oms.log_min_interval ago.  The line's fields: those in "fields" (may be
 * NULL; consumed), suppressed=N, then error.
 */
static void
relay_report_error(const char *event, StringInfo fields, const char *what, const char *text)
{
	/* cppcheck-suppress shadowFunction ; SQL now() is not called here */
	TimestampTz now = GetCurrentTimestamp();
	char	   *full = psprintf("%s: %s", what, text);
	int			suppressed;
	StringInfoData line;

	oms_shmem_relay_note_error(relay_slotno, full);
	pfree(full);

	if (relay_failing_since == 0)
		relay_failing_since = now;
	suppressed = oms_log_limit(&relay_limit, now);
	if (suppressed >= 0)
	{
		oms_log_begin(&line, event);
		if (fields)
			appendStringInfoString(&line, fields->data);
		if (suppressed > 0)
			oms_log_int(&line, "suppressed", suppressed);
		oms_log_str(&line, "error", text);
		oms_log_emit(WARNING, &line);
	}
	if (fields)
		pfree(fields->data);
}

/* A batch went through: the end of an ongoing failure is logged once. */
static void
relay_report_recovery(int published)
{
	int			suppressed = oms_log_limit_clear(&relay_limit);
	StringInfoData line;

	if (suppressed >= 0)
	{
		oms_log_begin(&line, "relay_recovered");
		oms_log_int(&line, "published", published);
		oms_log_int(&line, "suppressed", suppressed);
		oms_log_int(&line, "failing_ms",
					TimestampDifferenceMilliseconds(relay_failing_since, GetCurrentTimestamp()));
		oms_log_emit(LOG, &line);
	}
	relay_failing_since = 0;
}

/* The error of the relay transaction that just failed, as text. */
static const char *
relay_xact_error(const char *message)
{
	ErrorData  *edata = oms_xact_last_error();

	if (edata == NULL)
		return message ? message : "(no message)";
	return psprintf("%s (SQLSTATE %s)", edata->message ? edata->message : "(no message)",
					unpack_sql_state(edata->sqlerrcode));
}

/*
 * Moves the breaker.  Logged: breaker_opened when it opens from closed,
 * breaker_closed when it closes again.  The probes in between (half-open,
 * and open again after a failed probe) are the same outage: DEBUG1 only.
 */
static void
set_breaker(OmsBreakerState state, TimestampTz now)
{
	StringInfoData line;
	bool		from_closed = (breaker == OMS_BREAKER_CLOSED);

	if (state == breaker)
		return;

	if (state == OMS_BREAKER_OPEN)
	{
		breaker_opened_at = now;
		if (from_closed)
			breaker_first_opened_at = now;
		oms_log_begin(&line, "breaker_opened");
		oms_log_int(&line, "failed_batches", breaker_failures);
		oms_log_int(&line, "cooldown_ms", oms_relay_breaker_cooldown);
		oms_log_emit(from_closed ? LOG : DEBUG1, &line);
	}
	else if (state == OMS_BREAKER_HALF_OPEN)
	{
		oms_log_begin(&line, "breaker_half_open");
		oms_log_emit(DEBUG1, &line);
	}
	else
	{
		oms_log_begin(&line, "breaker_closed");
		if (breaker_first_opened_at != 0 && now != 0)
			oms_log_int(&line, "open_ms", TimestampDifferenceMilliseconds(breaker_first_opened_at, now));
		oms_log_emit(LOG, &line);
	}

	breaker = state;
	if (state == OMS_BREAKER_CLOSED)
	{
		breaker_failures = 0;
		breaker_opened_at = 0;
	}
	oms_shmem_relay_set_breaker(relay_slotno, breaker, breaker_opened_at);
}

/*
 * The claim reads the raw columns of the oldest due events and renders the
 * Kafka records here, not in SQL: building twenty header strings and an
 * array per event, sorting the wide rendered rows, and handing them through
 * a PL/pgSQL tuplestore and SPI cost more than reading and deleting the
 * rows themselves.  The plan is prepared once per session, and generic:
 * the limit does not change the plan (an index scan on created_at), so
 * planning it again for each batch is wasted.  An event whose
 * predecessor of the same aggregate is backing off after a failure waits
 * for it, so per-order order holds.
 */
#define CLAIM_SQL \
	"SELECT o.id, o.aggregatetype, o.aggregateid, o.type, o.payload, o.seq, o.created_at, o.traceparent" \
	" FROM oms.outbox AS o" \
	" WHERE o.next_attempt_at <= pg_catalog.now()" \
	"   AND NOT EXISTS (SELECT FROM oms.outbox AS p" \
	"                   WHERE p.attempts > 0" \
	"                     AND p.aggregatetype = o.aggregatetype AND p.aggregateid = o.aggregateid" \
	"                     AND p.seq < o.seq AND p.next_attempt_at > pg_catalog.now())" \
	" ORDER BY o.created_at LIMIT $1"

/* The claim's columns, in order. */
enum
{
	CLAIM_ID,
	CLAIM_AGGREGATETYPE,
	CLAIM_AGGREGATEID,
	CLAIM_TYPE,
	CLAIM_PAYLOAD,
	CLAIM_SEQ,
	CLAIM_CREATED_AT,
	CLAIM_TRACEPARENT,
	CLAIM_NCOLUMNS
};

static SPIPlanPtr claim_plan = NULL;

/* What every event of a claim shares: the settings, read once per claim. */
typedef struct ClaimContext
{
	const char *topic;			/* oms.kafka_topic */
	bool		per_aggregate;	/* oms.kafka_topic_mode = per_aggregate */
	const char *commands_topic; /* oms.kafka_payment_commands_topic */
	const char *source;			/* ce_source: /oms/<database> */
} ClaimContext;

static char *
copy_text(Datum d, size_t *len)
{
	text	   *t = DatumGetTextPP(d);
	size_t		n = VARSIZE_ANY_EXHDR(t);
	char	   *s = palloc(n + 1);

	memcpy(s, VARDATA_ANY(t), n);
	s[n] = '\0';
	if (len)
		*len = n;
	return s;
}

/*
 * The payload as JSON text, byte for byte what jsonb_out writes
 * (JsonbToCString without indentation), but read straight from the jsonb
 * container instead of through JsonbIterator, and with strings escaped
 * from their stored length instead of a NUL-terminated copy each: for the
 * relay this rendering is a large share of a claim.
 */
static void json_write_container(StringInfo out, const JsonbContainer *jc);

static void
json_write_string(StringInfo out, const char *s, int len)
{
	const char *run = s;
	const char *end = s + len;

	enlargeStringInfo(out, len + 2);
	out->data[out->len++] = '"';
	for (const char *p = s; p < end; p++)
	{
		unsigned char c = (unsigned char) *p;
		const char *esc;

		if (c >= ' ' && c != '"' && c != '\\')
			continue;
		appendBinaryStringInfo(out, run, p - run);
		run = p + 1;
		switch (c)
		{
			case '\b':
				esc = "\\b";
				break;
			case '\f':
				esc = "\\f";
				break;
			case '\n':
				esc = "\\n";
				break;
			case '\r':
				esc = "\\r";
				break;
			case '\t':
				esc = "\\t";
				break;
			case '"':
				esc = "\\\"";
				break;
			case '\\':
				esc = "\\\\";
				break;
			default:
				appendStringInfo(out, "\\u%04x", (int) c);
				continue;
		}
		appendBinaryStringInfo(out, esc, 2);
	}
	appendBinaryStringInfo(out, run, end - run);
	appendStringInfoChar(out, '"');
}

/* Child "index" of "jc", whose data starts "offset" bytes into base. */
static void
json_write_child(StringInfo out, const JsonbContainer *jc, int index,
				 const char *base, uint32 offset)
{
	JEntry		entry = jc->children[index];

	if (JBE_ISSTRING(entry))
		json_write_string(out, base + offset, getJsonbLength(jc, index));
	else if (JBE_ISNUMERIC(entry))
		appendStringInfoString(out, DatumGetCString(DirectFunctionCall1(numeric_out,
																		PointerGetDatum(base + INTALIGN(offset)))));
	else if (JBE_ISBOOL_TRUE(entry))
		appendBinaryStringInfo(out, "true", 4);
	else if (JBE_ISBOOL_FALSE(entry))
		appendBinaryStringInfo(out, "false", 5);
	else if (JBE_ISNULL(entry))
		appendBinaryStringInfo(out, "null", 4);
	else
		json_write_container(out, (const JsonbContainer *) (base + INTALIGN(offset)));
}

static void
json_write_container(StringInfo out, const JsonbContainer *jc)
{
	uint32		count = JsonContainerSize(jc);
	bool		object = (jc->header & JB_FOBJECT) != 0;
	uint32		nchildren = object ? count * 2 : count;
	const char *base = (const char *) &jc->children[nchildren];
	uint32		offset = 0;

	check_stack_depth();

	/* A scalar document is stored as a one-element array, written bare. */
	if (jc->header & JB_FSCALAR)
	{
		json_write_child(out, jc, 0, base, 0);
		return;
	}

	if (!object)
	{
		appendStringInfoChar(out, '[');
		for (uint32 i = 0; i < count; i++)
		{
			if (i > 0)
				appendBinaryStringInfo(out, ", ", 2);
			json_write_child(out, jc, i, base, offset);
			JBE_ADVANCE_OFFSET(offset, jc->children[i]);
		}
		appendStringInfoChar(out, ']');
		return;
	}

	/* Keys first, then the values in the same order. */
	{
		uint32		value_offset = 0;

		for (uint32 i = 0; i < count; i++)
			JBE_ADVANCE_OFFSET(value_offset, jc->children[i]);

		appendStringInfoChar(out, '{');
		for (uint32 i = 0; i < count; i++)
		{
			if (i > 0)
				appendBinaryStringInfo(out, ", ", 2);
			json_write_string(out, base + offset, getJsonbLength(jc, i));
			appendBinaryStringInfo(out, ": ", 2);
			json_write_child(out, jc, count + i, base, value_offset);
			JBE_ADVANCE_OFFSET(offset, jc->children[i]);
			JBE_ADVANCE_OFFSET(value_offset, jc->children[count + i]);
		}
		appendStringInfoChar(out, '}');
	}
}

static char *
jsonb_text(Jsonb *jb, size_t *len)
{
	StringInfoData out;

	initStringInfo(&out);
	enlargeStringInfo(&out, VARSIZE(jb));
	json_write_container(&out, &jb->root);
	*len = out.len;
	return out.data;
}

/* A uuid as uuid_out writes it. */
static char *
uuid_text(const pg_uuid_t *uuid)
{
	static const char hex[] = "0123456789abcdef";
	char	   *s = palloc(UUID_LEN * 2 + 5);
	char	   *p = s;

	for (int i = 0; i < UUID_LEN; i++)
	{
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*p++ = '-';
		*p++ = hex[uuid->data[i] >> 4];
		*p++ = hex[uuid->data[i] & 0x0F];
	}
	*p = '\0';
	return s;
}

/*
 * ce_time: to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
 * which is NULL for an infinite time.
 */
static char *
ce_time_text(TimestampTz t)
{
	struct pg_tm tm;
	fsec_t		fsec;

	if (TIMESTAMP_NOT_FINITE(t) || timestamp2tm(t, NULL, &tm, &fsec, NULL, NULL) != 0)
		return NULL;
	return psprintf("%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
					tm.tm_year > 0 ? tm.tm_year : -(tm.tm_year - 1),
					tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int) fsec);
}

static void
read_claim_context(ClaimContext *cc)
{
	const char *mode = GetConfigOption("oms.kafka_topic_mode", false, false);

	cc->topic = pstrdup(GetConfigOption("oms.kafka_topic", false, false));
	cc->per_aggregate = (mode != NULL && strcmp(mode, "per_aggregate") == 0);
	cc->commands_topic = pstrdup(GetConfigOption("oms.kafka_payment_commands_topic", false, false));
	cc->source = psprintf("/oms/%s", get_database_name(MyDatabaseId));
}

#define ADD_HEADER(name, value) \
	do { \
		ev->headers[n++] = unconstify(char *, (const char *) (name)); \
		ev->headers[n++] = (value); \
	} while (0)

/*
 * Renders one claimed row into "ev": topic, key (the aggregate id), value
 * (the payload as JSON text) and the CloudEvents headers (Kafka protocol
 * binding, binary mode), plus the W3C header traceparent when the event
 * has a trace context.
 */
static void
render_event(RelayEvent *ev, const ClaimContext *cc, Datum *values, const bool *nulls)
{
	Jsonb	   *payload;
	char	   *type;
	char	   *id_text;
	int			n = 0;

	for (int i = 0; i < CLAIM_NCOLUMNS; i++)
	{
		if (nulls[i] && i != CLAIM_TRACEPARENT)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("the relay's claim returned a null in column %d", i + 1)));
	}

	memset(ev, 0, sizeof(RelayEvent));
	memcpy(&ev->id, DatumGetUUIDP(values[CLAIM_ID]), sizeof(pg_uuid_t));
	ev->aggregatetype = copy_text(values[CLAIM_AGGREGATETYPE], NULL);
	memcpy(&ev->aggregateid, DatumGetUUIDP(values[CLAIM_AGGREGATEID]), sizeof(pg_uuid_t));
	ev->seq = DatumGetInt64(values[CLAIM_SEQ]);
	type = copy_text(values[CLAIM_TYPE], NULL);

	if (strcmp(ev->aggregatetype, "payment") == 0)
		ev->topic = unconstify(char *, cc->commands_topic);
	else if (cc->per_aggregate)
		ev->topic = psprintf("oms.%s-events", ev->aggregatetype);
	else
		ev->topic = unconstify(char *, cc->topic);

	ev->key = uuid_text(&ev->aggregateid);
	ev->keylen = strlen(ev->key);

	payload = DatumGetJsonbP(values[CLAIM_PAYLOAD]);
	ev->value = jsonb_text(payload, &ev->valuelen);

	id_text = uuid_text(&ev->id);
	ev->headers = palloc(sizeof(char *) * 22);
	ADD_HEADER("ce_specversion", "1.0");
	ADD_HEADER("ce_id", id_text);
	ADD_HEADER("ce_source", unconstify(char *, cc->source));
	ADD_HEADER("ce_type", psprintf("oms.%s", type));
	ADD_HEADER("ce_time", ce_time_text(DatumGetTimestampTz(values[CLAIM_CREATED_AT])));
	ADD_HEADER("ce_subject", ev->key);
	ADD_HEADER("ce_dataschema", psprintf("oms:events/%s/v1", type));
	ADD_HEADER("content-type", "application/json");
	ADD_HEADER("ce_omsaggregate", ev->aggregatetype);
	ADD_HEADER("ce_omsseq", psprintf(INT64_FORMAT, ev->seq));
	if (!nulls[CLAIM_TRACEPARENT])
		ADD_HEADER("traceparent", copy_text(values[CLAIM_TRACEPARENT], NULL));
	ev->nheaders = n;

	ev->bytes = ev->keylen + ev->valuelen;
	for (int i = 0; i < n; i++)
		if (ev->headers[i])
			ev->bytes += strlen(ev->headers[i]);
}

/* Per aggregate, in seq order; the key is unique. */
static int
event_cmp(const void *a, const void *b)
{
	const RelayEvent *x = (const RelayEvent *) a;
	const RelayEvent *y = (const RelayEvent *) b;
	int			c = strcmp(x->aggregatetype, y->aggregatetype);

	if (c == 0)
		c = memcmp(&x->aggregateid, &y->aggregateid, sizeof(pg_uuid_t));
	if (c == 0)
		c = (x->seq > y->seq) - (x->seq < y->seq);
	return c;
}

/*
 * Claims up to batch->limit events (all when limit < 0) into batch->events,
 * allocated in "cxt", oldest first, then grouped per aggregate in seq
 * order.  Stops early, after at least one event, once max_bytes (0: no
 * bound) are claimed, so a batch of huge events is not held in memory
 * whole.  Needs an SPI connection.
 */
static void
claim_events(RelayBatch *batch, MemoryContext cxt, size_t max_bytes)
{
	Datum		args[1];
	char		argnulls[1] = {' '};
	Portal		portal;
	ClaimContext cc;
	int			capacity;
	MemoryContext oldcxt;

	if (claim_plan == NULL)
	{
		Oid			argtypes[1] = {INT4OID};
		SPIPlanPtr	plan = SPI_prepare_cursor(CLAIM_SQL, 1, argtypes,
											  CURSOR_OPT_FAST_PLAN | CURSOR_OPT_GENERIC_PLAN);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare_cursor failed for the relay's claim: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		claim_plan = plan;
	}

	oldcxt = MemoryContextSwitchTo(cxt);
	read_claim_context(&cc);
	capacity = (batch->limit >= 0) ? Min(batch->limit, CLAIM_FETCH * 10) : CLAIM_FETCH * 10;
	batch->events = palloc(sizeof(RelayEvent) * Max(capacity, 1));
	MemoryContextSwitchTo(oldcxt);

	args[0] = Int32GetDatum(batch->limit);
	if (batch->limit < 0)
		argnulls[0] = 'n';
	portal = SPI_cursor_open(NULL, claim_plan, args, argnulls, true);

	while ((batch->limit < 0 || batch->nevents < batch->limit) && !batch->truncated)
	{
		Datum		values[CLAIM_NCOLUMNS];
		bool		nulls[CLAIM_NCOLUMNS];

		SPI_cursor_fetch(portal, true, CLAIM_FETCH);
		if (SPI_processed == 0)
			break;

		oldcxt = MemoryContextSwitchTo(cxt);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			if (max_bytes > 0 && batch->nevents > 0 && batch->bytes >= max_bytes)
			{
				batch->truncated = true;
				break;
			}
			if (batch->nevents == capacity)
			{
				capacity *= 2;
				batch->events = repalloc(batch->events, sizeof(RelayEvent) * capacity);
			}
			heap_deform_tuple(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, values, nulls);
			render_event(&batch->events[batch->nevents], &cc, values, nulls);
			batch->bytes += batch->events[batch->nevents].bytes;
			batch->nevents++;
		}
		MemoryContextSwitchTo(oldcxt);
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);

	if (batch->nevents > 1)
		qsort(batch->events, batch->nevents, sizeof(RelayEvent), event_cmp);
}

/*
 * Transaction 1: claims a batch into batch_cxt.  Returns the events
 * claimed; -1 when the extension is not usable here.
 */
static int
relay_claim(void *arg)
{
	RelayBatch *into = (RelayBatch *) arg;

	if (!oms_xact_extension_ready())
		return -1;
	claim_events(into, batch_cxt, RELAY_BATCH_MAX_BYTES);
	return into->nevents;
}

/*
 * oms._relay_claim(p_limit integer): the next events the relay would
 * publish, as it would publish them (the same code), one row per event:
 * id, topic, key, value, headers (names and values alternating),
 * aggregatetype, aggregateid, seq.  A null limit claims every due event.
 * Reads only: nothing is locked or marked.
 */
Datum
oms_relay_claim_sql(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	RelayBatch	claim;
	MemoryContext cxt;

	InitMaterializedSRF(fcinfo, 0);

	memset(&claim, 0, sizeof(claim));
	claim.limit = PG_ARGISNULL(0) ? -1 : Max(PG_GETARG_INT32(0), 0);
	cxt = AllocSetContextCreate(CurrentMemoryContext, "oms relay claim", ALLOCSET_DEFAULT_SIZES);

	if (claim.limit != 0)
	{
		SPI_connect();
		claim_events(&claim, cxt, 0);
		SPI_finish();
	}

	for (int i = 0; i < claim.nevents; i++)
	{
		RelayEvent *ev = &claim.events[i];
		Datum		values[8];
		bool		nulls[8] = {false};
		Datum	   *elems = palloc(sizeof(Datum) * ev->nheaders);
		bool	   *elem_nulls = palloc(sizeof(bool) * ev->nheaders);
		int			dims[1] = {ev->nheaders};
		int			lbs[1] = {1};

		for (int h = 0; h < ev->nheaders; h++)
		{
			elem_nulls[h] = (ev->headers[h] == NULL);
			elems[h] = elem_nulls[h] ? (Datum) 0 : CStringGetTextDatum(ev->headers[h]);
		}
		values[0] = UUIDPGetDatum(&ev->id);
		values[1] = CStringGetTextDatum(ev->topic);
		values[2] = CStringGetTextDatum(ev->key);
		values[3] = PointerGetDatum(cstring_to_text_with_len(ev->value, ev->valuelen));
		values[4] = PointerGetDatum(construct_md_array(elems, elem_nulls, 1, dims, lbs,
													   TEXTOID, -1, false, TYPALIGN_INT));
		values[5] = CStringGetTextDatum(ev->aggregatetype);
		values[6] = UUIDPGetDatum(&ev->aggregateid);
		values[7] = Int64GetDatum(ev->seq);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	MemoryContextDelete(cxt);
	return (Datum) 0;
}

/*
 * An all-acknowledged batch, the usual case, is deleted by a statement
 * prepared once per session: oms._relay_settle's own fast path, without a
 * PL/pgSQL call and a plan per batch.  Anything else goes through
 * oms._relay_settle.
 */
#define SETTLE_ACKED_SQL "DELETE FROM oms.outbox AS o WHERE o.id = ANY ($1)"

static SPIPlanPtr settle_acked_plan = NULL;

/* Transaction 2: returns the events removed as published. */
static int
relay_settle(void *arg)
{
	RelaySettle *settle = (RelaySettle *) arg;
	Oid			argtypes[3] = {UUIDARRAYOID, TEXTARRAYOID, BOOLARRAYOID};
	Datum		args[3];
	bool		isnull;
	Datum		result;
	int			ret;

	if (!oms_xact_extension_ready())
		return -1;

	args[0] = settle->ids;
	if (settle->all_acked)
	{
		if (settle_acked_plan == NULL)
		{
			SPIPlanPtr	plan = SPI_prepare_cursor(SETTLE_ACKED_SQL, 1, argtypes,
												  CURSOR_OPT_GENERIC_PLAN);

			if (plan == NULL)
				elog(ERROR, "SPI_prepare failed for the relay's settle: %s",
					 SPI_result_code_string(SPI_result));
			SPI_keepplan(plan);
			settle_acked_plan = plan;
		}
		ret = SPI_execute_plan(settle_acked_plan, args, NULL, false, 0);
		if (ret != SPI_OK_DELETE)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("the relay could not delete its acknowledged events"),
					 errdetail("SPI returned %s.", SPI_result_code_string(ret))));
		return (int) SPI_processed;
	}

	args[1] = settle->errors;
	args[2] = settle->permanent;
	ret = SPI_execute_with_args(SETTLE_QUERY, 3, argtypes, args, NULL, false, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("oms._relay_settle returned no row"),
				 errdetail("SPI returned code %d with %llu rows.",
						   ret, (unsigned long long) SPI_processed)));
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? 0 : DatumGetInt32(result);
}

static bool
same_aggregate(const RelayEvent *a, const RelayEvent *b)
{
	return memcmp(&a->aggregateid, &b->aggregateid, sizeof(pg_uuid_t)) == 0 &&
		strcmp(a->aggregatetype, b->aggregatetype) == 0;
}

/*
 * Hands the batch to the producer.  An event that cannot be handed over
 * fails at once, and the rest of its aggregate is held back (left out of
 * the settle) so that the aggregate's order holds.
 */
static void
produce_batch(RelayBatch *batch)
{
	bool		hold_aggregate = false;

	for (int i = 0; i < batch->nevents; i++)
	{
		RelayEvent *ev = &batch->events[i];
		OmsKafkaReport *report = &batch->reports[i];
		int			err;

		if (i == 0 || !same_aggregate(ev, &batch->events[i - 1]))
			hold_aggregate = false;
		if (hold_aggregate)
			continue;			/* stays OMS_REPORT_NONE */

		if (ev->bytes > (size_t) oms_kafka_max_message_bytes)
		{
			report->status = OMS_REPORT_FAILED;
			report->err = OMS_KAFKA_ERR_TOO_LARGE;
			ev->detail = psprintf("event of %zu bytes exceeds oms.kafka_max_message_bytes (%d bytes)",
								  ev->bytes, oms_kafka_max_message_bytes);
			hold_aggregate = true;
			continue;
		}

		err = oms_kafka_produce(i, ev->topic, ev->key, ev->keylen, ev->value, ev->valuelen,
								ev->headers, ev->nheaders);
		if (err != 0)
		{
			report->status = OMS_REPORT_FAILED;
			report->err = err;
			hold_aggregate = true;
		}

		/*
		 * Serve early reports now and then; a big batch need not wait for the
		 * end.
		 */
		if ((i & 255) == 255)
		{
			CHECK_FOR_INTERRUPTS();
			oms_kafka_serve();
		}
	}
}

/*
 * Brings the producer in line with the settings; logs what changed.
 * Returns true when the relay can publish.
 */
static bool
relay_client_ready(void)
{
	char		errbuf[512];
	bool		changed;
	OmsKafkaState state = oms_kafka_ensure(&changed, errbuf, sizeof(errbuf));
	StringInfoData line;

	if (changed || state != client_state)
	{
		switch (state)
		{
			case OMS_KAFKA_OFF:
				oms_log_begin(&line, "relay_stopped");
				oms_log_str(&line, "reason", "oms.kafka_brokers is empty");
				oms_log_emit(LOG, &line);
				break;
			case OMS_KAFKA_READY:
				oms_log_begin(&line, "relay_started");
				oms_log_str(&line, "brokers", oms_kafka_brokers);
				oms_log_emit(LOG, &line);
				break;
			case OMS_KAFKA_BAD_CONFIG:
				oms_shmem_relay_note_error(relay_slotno,
										   psprintf("invalid Kafka producer settings: %s", errbuf));
				oms_log_begin(&line, "relay_config_invalid");
				oms_log_str(&line, "error", errbuf);
				ereport(LOG,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg_internal("%s", line.data),
						 errhint("Correct oms.kafka_config, oms.kafka_config_file (or the file it names) or oms.kafka_brokers and reload the configuration.")));
				pfree(line.data);
				break;
		}
		/* A new producer starts with a closed breaker. */
		if (state != OMS_KAFKA_BAD_CONFIG)
			set_breaker(OMS_BREAKER_CLOSED, 0);
		client_state = state;
	}
	return state == OMS_KAFKA_READY;
}

/*
 * Advances the batch in flight.  Returns true when it is complete: every
 * event has its report, or the batch was given up (deadline passed, or
 * the brokers are unreachable and nothing arrived for a while) and the
 * purged messages' reports arrived or their wait ran out.  What was given
 * up on fails with our reason; an acknowledgement that raced the purge
 * stands.
 */
static bool
batch_complete(TimestampTz now)
{
	if (phase == RELAY_WAITING)
	{
		int			pending = oms_kafka_pending();

		if (pending == 0)
			return true;
		if (pending != progress_pending)
		{
			progress_pending = pending;
			progress_at = now;
		}

		if (now >= batch_deadline)
			abandon = RELAY_ABANDON_TIMEOUT;
		else if (oms_kafka_unreachable() &&
				 TimestampDifferenceExceeds(progress_at, now, RELAY_DOWN_GRACE_MS))
			abandon = RELAY_ABANDON_BROKERS_DOWN;
		else
			return false;

		outstanding = MemoryContextAllocZero(batch_cxt, sizeof(bool) * batch.nevents);
		for (int i = 0; i < batch.nevents; i++)
			outstanding[i] = (batch.reports[i].status == OMS_REPORT_PENDING);
		oms_kafka_purge();
		oms_kafka_serve();
		phase = RELAY_PURGING;
		purge_deadline = TimestampTzPlusMilliseconds(now, RELAY_PURGE_WAIT_MS);
	}

	Assert(phase == RELAY_PURGING);
	if (oms_kafka_pending() > 0 && now < purge_deadline)
		return false;

	for (int i = 0; i < batch.nevents; i++)
	{
		OmsKafkaReport *report = &batch.reports[i];

		if (!outstanding[i] || report->status == OMS_REPORT_ACKED)
			continue;
		report->status = OMS_REPORT_FAILED;
		report->err = (abandon == RELAY_ABANDON_BROKERS_DOWN) ?
			OMS_KAFKA_ERR_BROKERS_DOWN : OMS_KAFKA_ERR_NO_REPORT;
	}
	return true;
}

/*
 * Claims a batch and hands it to the producer.  Returns false when there
 * was nothing to publish (or the relay cannot run now).
 */
static bool
start_batch(int slotno, MemoryContext loop_cxt)
{
	/* cppcheck-suppress shadowFunction ; SQL now() is not called here */
	TimestampTz now;
	int			claimed;
	char	   *xact_error = NULL;

	if (!relay_client_ready())
		return false;

	/*
	 * A claim or settle that failed is not retried at once: a settle that
	 * keeps failing would otherwise publish the same events in a loop.
	 */
	now = GetCurrentTimestamp();
	if (now < hold_until)
		return false;

	/* An open breaker produces nothing until its cooldown is over. */
	if (breaker == OMS_BREAKER_OPEN)
	{
		if (!TimestampDifferenceExceeds(breaker_opened_at, now, oms_relay_breaker_cooldown))
			return false;
		set_breaker(OMS_BREAKER_HALF_OPEN, now);
	}

	MemoryContextReset(batch_cxt);
	memset(&batch, 0, sizeof(batch));
	outstanding = NULL;
	batch.limit = (breaker == OMS_BREAKER_HALF_OPEN) ? 1 : oms_relay_batch_size;

	if (!oms_xact_run_ext(slotno, loop_cxt, CLAIM_ACTIVITY, relay_claim, &batch,
						  &claimed, &xact_error, false))
	{
		MemoryContextSwitchTo(batch_cxt);
		hold_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), oms_worker_naptime);
		relay_report_error("relay_claim_failed", NULL, "could not claim events",
						   relay_xact_error(xact_error));
		return false;
	}
	MemoryContextSwitchTo(batch_cxt);
	if (claimed <= 0)
		return false;

	batch.reports = MemoryContextAllocZero(batch_cxt, sizeof(OmsKafkaReport) * batch.nevents);
	oms_kafka_begin_batch(batch.reports, batch.nevents);
	produce_batch(&batch);

	progress_at = GetCurrentTimestamp();
	batch_deadline = TimestampTzPlusMilliseconds(progress_at, oms_relay_ack_timeout);
	progress_pending = oms_kafka_pending();
	abandon = RELAY_ABANDON_NONE;
	phase = RELAY_WAITING;
	oms_kafka_serve();
	return true;
}

/* What the delivery reports of a finished batch come to (collect_outcome). */
typedef struct BatchOutcome
{
	int			acked;
	int			failed;
	int			transient;		/* failed for a reason retrying may fix */
	int			first_failure;	/* index into the settle arrays, or -1 */
	double		latency_sum;	/* ms, over the acked events */
	int			n;				/* events to settle */
	Datum	   *ids;
	Datum	   *errors;
	bool	   *error_nulls;
	Datum	   *permanent;
} BatchOutcome;

/* An unusable producer is dropped now and rebuilt by the next batch. */
static void
drop_failed_producer(void)
{
	char		fatal[512];

	if (oms_kafka_check_fatal(fatal, sizeof(fatal)))
	{
		relay_report_error("kafka_producer_failed", NULL, "Kafka producer failed", fatal);
		client_state = OMS_KAFKA_OFF;
	}
}

/*
 * Counts the batch's reports and fills the settle arrays with every event
 * that was acknowledged or failed through its own fault.
 *
 * A transient failure is charged to an event only when the brokers
 * demonstrably work, i.e. something in the same batch was acknowledged.
 * When nothing got through, the brokers are the problem (down,
 * unreachable, timing out): the events stay as they are, the breaker
 * counts the batch, and a long outage uses up no publish attempts.
 */
static void
collect_outcome(BatchOutcome *out)
{
	bool		broker_works = false;

	memset(out, 0, sizeof(*out));
	out->first_failure = -1;
	out->ids = palloc(sizeof(Datum) * batch.nevents);
	out->errors = palloc(sizeof(Datum) * batch.nevents);
	out->error_nulls = palloc(sizeof(bool) * batch.nevents);
	out->permanent = palloc(sizeof(Datum) * batch.nevents);

	for (int i = 0; i < batch.nevents; i++)
		if (batch.reports[i].status == OMS_REPORT_ACKED)
			broker_works = true;

	for (int i = 0; i < batch.nevents; i++)
	{
		RelayEvent *ev = &batch.events[i];
		OmsKafkaReport *report = &batch.reports[i];
		int			n = out->n;

		if (report->status == OMS_REPORT_NONE)
			continue;
		Assert(report->status != OMS_REPORT_PENDING);
		/* Never sent, or the brokers failed everyone: not this event's fault. */
		if (report->status != OMS_REPORT_ACKED &&
			(oms_kafka_error_never_sent(report->err) ||
			 (!broker_works && !oms_kafka_error_is_permanent(report->err))))
		{
			out->failed++;
			out->transient++;
			continue;
		}

		out->ids[n] = UUIDPGetDatum(&ev->id);
		if (report->status == OMS_REPORT_ACKED)
		{
			out->error_nulls[n] = true;
			out->errors[n] = (Datum) 0;
			out->permanent[n] = BoolGetDatum(false);
			out->acked++;
			out->latency_sum += (double) (report->reported_at - report->produced_at) / 1000.0;
		}
		else
		{
			bool		perm = oms_kafka_error_is_permanent(report->err);
			char	   *text = ev->detail ? ev->detail : oms_kafka_error_text(report->err);

			out->error_nulls[n] = false;
			out->errors[n] = CStringGetTextDatum(text);
			out->permanent[n] = BoolGetDatum(perm);
			out->failed++;
			if (!perm)
				out->transient++;
			if (out->first_failure < 0)
				out->first_failure = n;
		}
		out->n++;
	}
}

/*
 * Settles the events of the outcome (transaction 2).  Returns false when
 * the settle failed: its events stay in the outbox and are published again.
 */
static bool
settle_outcome(int slotno, MemoryContext loop_cxt, BatchOutcome *out)
{
	RelaySettle settle;
	int			dims[1] = {out->n};
	int			lbs[1] = {1};
	int			published = 0;
	char	   *xact_error = NULL;
	bool		settled;

	if (out->n == 0)
		return true;
	settle.n = out->n;
	settle.all_acked = (out->first_failure < 0);
	settle.ids = PointerGetDatum(construct_array(out->ids, out->n, UUIDOID, UUID_LEN, false,
												 TYPALIGN_CHAR));
	settle.errors = PointerGetDatum(construct_md_array(out->errors, out->error_nulls, 1, dims, lbs,
													   TEXTOID, -1, false, TYPALIGN_INT));
	settle.permanent = PointerGetDatum(construct_array(out->permanent, out->n, BOOLOID, 1, true,
													   TYPALIGN_CHAR));
	settled = oms_xact_run_ext(slotno, loop_cxt,
							   settle.all_acked ? SETTLE_ACKED_SQL : SETTLE_QUERY,
							   relay_settle, &settle,
							   &published, &xact_error, false);
	MemoryContextSwitchTo(batch_cxt);
	if (!settled)
	{
		StringInfoData fields;

		initStringInfo(&fields);
		oms_log_int(&fields, "events", out->n);
		hold_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), oms_worker_naptime);
		relay_report_error("relay_settle_failed", &fields,
						   "could not settle a batch (its events will be published again)",
						   relay_xact_error(xact_error));
	}
	return settled;
}

/* Logs a batch with failures, or the recovery after failing ones. */
static void
log_outcome(BatchOutcome *out, bool settled)
{
	if (out->failed > 0)
	{
		StringInfoData fields;

		initStringInfo(&fields);
		oms_log_int(&fields, "failed", out->failed);
		oms_log_int(&fields, "events", batch.nevents);
		oms_log_str(&fields, "breaker", breaker == OMS_BREAKER_CLOSED ? "closed" :
					breaker == OMS_BREAKER_OPEN ? "open" : "half_open");
		relay_report_error("relay_batch_failed", &fields,
						   psprintf("%d of %d events failed to publish", out->failed, batch.nevents),
						   out->first_failure >= 0 ? TextDatumGetCString(out->errors[out->first_failure]) :
						   "no broker acknowledged any event of the batch; they stay queued");
	}
	else if (settled && out->acked > 0)
		relay_report_recovery(out->acked);
}

/*
 * The breaker counts batches in which something failed for a reason that
 * retrying may fix and nothing got through.  Events refused for good say
 * nothing about the brokers.
 */
static void
count_for_breaker(BatchOutcome *out, TimestampTz at)
{
	if (out->acked > 0)
	{
		breaker_failures = 0;
		if (breaker != OMS_BREAKER_CLOSED)
			set_breaker(OMS_BREAKER_CLOSED, at);
	}
	else if (out->transient > 0)
	{
		breaker_failures++;
		/* A failed probe opens it again, for a fresh cooldown. */
		if (breaker == OMS_BREAKER_HALF_OPEN ||
			breaker_failures >= oms_relay_breaker_failures)
			set_breaker(OMS_BREAKER_OPEN, at);
	}
}

/*
 * Settles a complete batch (transaction 2), then updates the counters and
 * the breaker.
 */
static void
finish_batch(int slotno, MemoryContext loop_cxt)
{
	BatchOutcome out;
	bool		settled;
	TimestampTz finished_at;

	MemoryContextSwitchTo(batch_cxt);
	oms_kafka_end_batch();
	phase = RELAY_IDLE;

	drop_failed_producer();
	collect_outcome(&out);
	settled = settle_outcome(slotno, loop_cxt, &out);

	finished_at = GetCurrentTimestamp();
	oms_shmem_relay_note_batch(slotno, out.acked, out.failed,
							   out.acked > 0 ? out.latency_sum / out.acked : 0, finished_at);
	log_outcome(&out, settled);
	count_for_breaker(&out, finished_at);
}

/*
 * The relay's step in a worker loop, never waiting for Kafka: completes
 * the batch in flight if its reports are in (settling it), and starts the
 * next one when none is in flight.  The worker's sleep wakes up for
 * delivery reports (worker.c), so sagas keep
 * running while a slow or unreachable broker holds a batch.
 */
void
oms_relay_run(int slotno, MemoryContext loop_cxt)
{
	oms_kafka_serve();

	if (phase != RELAY_IDLE)
	{
		if (!batch_complete(GetCurrentTimestamp()))
			return;
		finish_batch(slotno, loop_cxt);
	}

	/*
	 * Start the next batch at once, whether or not the last one was full:
	 * events committed while it was in flight have already used up their
	 * wake-up.
	 */
	(void) start_batch(slotno, loop_cxt);
}

/*
 * The worker is paused or in recovery: start nothing, but complete a
 * batch in flight and keep serving the producer so its reports, logs and
 * errors do not pile up.
 */
void
oms_relay_idle(int slotno, MemoryContext loop_cxt)
{
	oms_kafka_serve();
	if (phase != RELAY_IDLE && batch_complete(GetCurrentTimestamp()))
		finish_batch(slotno, loop_cxt);
}

/*
 * The longest the worker may sleep: no longer than the naptime, than the
 * batch in flight may take before it is given up (and checked now and
 * then for unreachable brokers), or than an open breaker's cooldown.
 */
long
oms_relay_sleep_limit(long naptime)
{
	/* cppcheck-suppress shadowFunction ; SQL now() is not called here */
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz until;

	if (phase == RELAY_WAITING)
	{
		until = Min(batch_deadline, TimestampTzPlusMilliseconds(now, RELAY_CHECK_MS));
	}
	else if (phase == RELAY_PURGING)
		until = purge_deadline;
	else if (breaker == OMS_BREAKER_OPEN && client_state == OMS_KAFKA_READY)
		until = TimestampTzPlusMilliseconds(breaker_opened_at, oms_relay_breaker_cooldown);
	else
		return naptime;

	return Max(1, Min(naptime, TimestampDifferenceMilliseconds(now, until)));
}

/*
 * oms._relay_shmem_status(): the relay figures of the current database's
 * slot, one row; null when oms.database_name does not list the database.
 */
Datum
oms_relay_shmem_status(PG_FUNCTION_ARGS)
{
	static const char *const breaker_names[] = {"closed", "open", "half_open"};
	TupleDesc	tupdesc;
	OmsRelayShared relay;
	bool		running;
	int			slotno;
	Datum		values[10];
	bool		nulls[10];

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	slotno = oms_shmem_status_my_slot();
	if (slotno < 0)
		PG_RETURN_NULL();
	oms_shmem_copy_relay(slotno, &relay, &running);

	memset(nulls, 0, sizeof(nulls));
	values[0] = BoolGetDatum(running);
	values[1] = Int64GetDatum(relay.published);
	values[2] = Int64GetDatum(relay.failed);
	values[3] = Int64GetDatum(relay.batches);
	values[4] = CStringGetTextDatum(breaker_names[relay.breaker]);
	values[5] = TimestampTzGetDatum(relay.breaker_opened_at);
	nulls[5] = (relay.breaker == OMS_BREAKER_CLOSED || relay.breaker_opened_at == 0);
	values[6] = CStringGetTextDatum(relay.last_error);
	nulls[6] = (relay.last_error_at == 0);
	values[7] = TimestampTzGetDatum(relay.last_error_at);
	nulls[7] = (relay.last_error_at == 0);
	values[8] = TimestampTzGetDatum(relay.last_publish_at);
	nulls[8] = (relay.last_publish_at == 0);
	values[9] = Float8GetDatum(relay.ack_latency_ms);
	nulls[9] = (relay.last_publish_at == 0);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
