/*-------------------------------------------------------------------------
 *
 * kafka.c
 *	  The Kafka producer of the outbox relay: the only file that includes
 *	  librdkafka's header.
 *
 * One idempotent producer per worker, built lazily from the oms.kafka_*
 * settings and rebuilt when a reload changes one of them.  Settings that
 * librdkafka refuses are reported once and keep the relay off until they
 * change; they are not retried in a loop.
 *
 * librdkafka runs threads of its own, and a PostgreSQL backend must not
 * allocate, log or throw outside its main thread.  So nothing of ours runs
 * on librdkafka's threads: log lines are sent to a queue (log.queue=true)
 * and delivery reports and client errors to the main queue, and both are
 * served only by oms_kafka_serve() on the worker's thread.  Even there the
 * callbacks write only into preallocated memory (the batch's report array
 * and fixed-size buffers), because an error thrown inside them would
 * unwind through librdkafka's frames; whatever needs logging is logged
 * after rd_kafka_poll() returns.  Both queues write a byte to a
 * non-blocking pipe when they become non-empty, so the relay's wait wakes
 * up as soon as a report arrives.
 *
 * No call here blocks for long: produce never waits for queue space,
 * purge and destroy are bounded, and there is no rd_kafka_flush().
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/elog.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "oms.h"

/* Room in message.max.bytes above oms.kafka_max_message_bytes for record overhead. */
#define KAFKA_MESSAGE_HEADROOM 65536

/* librdkafka's own upper bound of message.max.bytes. */
#define KAFKA_MESSAGE_MAX_BYTES 1000000000

/* Longest wait for the reports of purged messages before a producer is destroyed. */
#define KAFKA_DESTROY_WAIT_MS 500

/* librdkafka log lines and client errors logged per window; the rest are counted. */
#define KAFKA_LOG_BURST 20
#define KAFKA_LOG_WINDOW_MS 10000

/* The batch index lives in the low bits of a message's opaque, the batch number above. */
#define KAFKA_INDEX_BITS 16

StaticAssertDecl(OMS_RELAY_MAX_BATCH < (1 << KAFKA_INDEX_BITS),
				 "a batch index must fit in KAFKA_INDEX_BITS");

/*
 * Properties oms sets itself: the brokers come from oms.kafka_brokers,
 * idempotence keeps each order's events in order, and log.queue keeps
 * librdkafka's threads from calling us.
 */
static const char *const reserved_properties[] = {
	"bootstrap.servers", "metadata.broker.list", "enable.idempotence",
	"log.queue", "transactional.id", NULL
};

static rd_kafka_t *producer = NULL;
static rd_kafka_queue_t *main_queue = NULL;
static rd_kafka_queue_t *log_queue = NULL;

/* The settings the producer was built from, and the last refused ones. */
static char *producer_settings = NULL;
static char *refused_settings = NULL;
static char refused_reason[512];

static char client_id[NAMEDATALEN + 16];
static char kafka_dbname[NAMEDATALEN];

/* Pipe both queues write to when they become non-empty; [0] is read. */
static int	wake_pipe[2] = {-1, -1};

/* The batch whose reports the callback fills in; see oms_kafka_begin_batch. */
static OmsKafkaReport *batch_reports = NULL;
static int	batch_nreports = 0;
static uintptr_t batch_number = 0;
static int	batch_pending = 0;

/*
 * Whether the brokers are reachable: the last connection-level error, and
 * the last acknowledgement.  An error newer than any acknowledgement means
 * the client has not got through since.
 */
static TimestampTz transport_error_at = 0;
static TimestampTz acked_at = 0;

/* Client errors noted by error_callback, logged by oms_kafka_serve. */
static int	client_error_code = 0;
static int	client_errors_unlogged = 0;
static char client_error_reason[512];

/* Log rate limit, shared by librdkafka log lines and client errors. */
static TimestampTz log_window_start = 0;
static int	log_window_count = 0;
static int	log_suppressed = 0;

static void destroy_producer(void);
static void kafka_exit(int code, Datum arg);

/* ---------------------------------------------------------------- callbacks */

/*
 * Delivery report of one message.  Called by rd_kafka_poll() on the
 * worker's thread.  Writes into the registered report array only: no
 * allocation, no logging, nothing that can throw.  A report of an earlier
 * batch (it came after that batch's deadline, and its row was settled as
 * failed) is ignored: the event is published again, a duplicate at worst.
 */
static void
delivery_callback(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
	uintptr_t	tag = (uintptr_t) msg->_private;
	int			index = (int) (tag & ((1 << KAFKA_INDEX_BITS) - 1));
	OmsKafkaReport *report;

	if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR)
		acked_at = GetCurrentTimestamp();

	if (batch_reports == NULL ||
		(tag >> KAFKA_INDEX_BITS) != (batch_number & (UINTPTR_MAX >> KAFKA_INDEX_BITS)) ||
		index >= batch_nreports)
		return;

	report = &batch_reports[index];
	if (report->status != OMS_REPORT_PENDING)
		return;

	report->err = (int) msg->err;
	report->status = msg->err == RD_KAFKA_RESP_ERR_NO_ERROR ? OMS_REPORT_ACKED : OMS_REPORT_FAILED;
	report->reported_at = GetCurrentTimestamp();
	batch_pending--;
}

/*
 * A client-level error (brokers down, authentication, fatal idempotence
 * errors).  Called by rd_kafka_poll() on the worker's thread; only copies.
 */
static void
error_callback(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	switch (err)
	{
		case RD_KAFKA_RESP_ERR__TRANSPORT:
		case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
		case RD_KAFKA_RESP_ERR__RESOLVE:
		case RD_KAFKA_RESP_ERR__AUTHENTICATION:
		case RD_KAFKA_RESP_ERR__SSL:
			transport_error_at = GetCurrentTimestamp();
			break;
		default:
			break;
	}
	client_error_code = err;
	strlcpy(client_error_reason, reason ? reason : "", sizeof(client_error_reason));
	client_errors_unlogged++;
}

/* ---------------------------------------------------------------- logging */

/* True when one more line may be logged in the current window. */
static bool
log_allowed(void)
{
	TimestampTz now = GetCurrentTimestamp();

	if (TimestampDifferenceExceeds(log_window_start, now, KAFKA_LOG_WINDOW_MS))
	{
		if (log_suppressed > 0)
			ereport(LOG,
					(errmsg("oms relay for database \"%s\" suppressed %d librdkafka log lines in the last %d seconds",
							kafka_dbname, log_suppressed, KAFKA_LOG_WINDOW_MS / 1000)));
		log_window_start = now;
		log_window_count = 0;
		log_suppressed = 0;
	}
	if (log_window_count >= KAFKA_LOG_BURST)
	{
		log_suppressed++;
		return false;
	}
	log_window_count++;
	return true;
}

/* syslog levels of librdkafka: warnings and worse are worth a LOG line. */
static int
log_level_to_elevel(int level)
{
	if (level <= 4)
		return LOG;
	if (level <= 6)
		return DEBUG1;
	return DEBUG2;
}

static void
serve_log_queue(void)
{
	rd_kafka_event_t *ev;

	if (log_queue == NULL)
		return;

	while ((ev = rd_kafka_queue_poll(log_queue, 0)) != NULL)
	{
		const char *fac = NULL;
		const char *str = NULL;
		int			level = 7;

		if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_LOG &&
			rd_kafka_event_log(ev, &fac, &str, &level) == 0)
		{
			int			elevel = log_level_to_elevel(level);

			if (message_level_is_interesting(elevel) &&
				(elevel != LOG || log_allowed()))
				ereport(elevel,
						(errmsg("oms relay for database \"%s\": librdkafka %s",
								kafka_dbname, fac ? fac : "log"),
						 errdetail_internal("%s", str ? str : "")));
		}
		rd_kafka_event_destroy(ev);
	}
}

static void
log_client_errors(void)
{
	if (client_errors_unlogged == 0)
		return;
	if (log_allowed())
		ereport(LOG,
				(errmsg("oms relay for database \"%s\": Kafka client error %s",
						kafka_dbname,
						rd_kafka_err2name((rd_kafka_resp_err_t) client_error_code)),
				 errdetail_internal("%s", client_error_reason)));
	client_errors_unlogged = 0;
}

/* Empties the wake-up pipe; it is non-blocking, so this never waits. */
static void
drain_wake_pipe(void)
{
	char		buf[64];

	if (wake_pipe[0] < 0)
		return;
	while (read(wake_pipe[0], buf, sizeof(buf)) > 0)
		;
}

/* ---------------------------------------------------------------- lifecycle */

/*
 * Called once by the worker after its signal setup: remembers the client
 * id, opens the wake-up pipe and arranges for the producer to be destroyed
 * (boundedly) when the worker exits.
 */
void
oms_kafka_init(const char *dbname)
{
	snprintf(client_id, sizeof(client_id), "oms-relay-%s", dbname);
	strlcpy(kafka_dbname, dbname, sizeof(kafka_dbname));

	if (pipe(wake_pipe) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create the oms relay wake-up pipe: %m")));
	for (int i = 0; i < 2; i++)
	{
		int			flags = fcntl(wake_pipe[i], F_GETFL);

		if (flags < 0 || fcntl(wake_pipe[i], F_SETFL, flags | O_NONBLOCK) < 0 ||
			fcntl(wake_pipe[i], F_SETFD, FD_CLOEXEC) < 0)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not make the oms relay wake-up pipe non-blocking: %m")));
	}

	before_shmem_exit(kafka_exit, (Datum) 0);
}

/* The read end of the pipe that signals delivery reports and log lines. */
int
oms_kafka_event_fd(void)
{
	return wake_pipe[0];
}

/*
 * The settings the producer depends on, as one string: a different string
 * means a different producer.
 */
static char *
current_settings(void)
{
	return psprintf("%s\n%s\n%d\n%d",
					oms_kafka_brokers ? oms_kafka_brokers : "",
					oms_kafka_config ? oms_kafka_config : "",
					oms_relay_ack_timeout, oms_kafka_max_message_bytes);
}

static bool
set_property(rd_kafka_conf_t *conf, const char *name, const char *value,
			 char *errbuf, size_t errlen)
{
	char		reason[256];

	if (rd_kafka_conf_set(conf, name, value, reason, sizeof(reason)) != RD_KAFKA_CONF_OK)
	{
		snprintf(errbuf, errlen, "%s", reason);
		return false;
	}
	return true;
}

/*
 * Applies oms.kafka_config: "name=value" items separated by commas, blanks
 * around names and values ignored.  An item without "=" continues the
 * previous value, so list-valued properties work: debug=broker,topic.
 */
static bool
apply_user_properties(rd_kafka_conf_t *conf, const char *config,
					  char *errbuf, size_t errlen)
{
	char	   *copy = pstrdup(config ? config : "");
	char	   *items[256];
	int			nitems = 0;
	char	   *item;
	char	   *save = NULL;

	/* Split, gluing "=" less items onto their predecessor. */
	for (item = strtok_r(copy, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save))
	{
		char	   *trimmed = item;

		while (*trimmed == ' ' || *trimmed == '\t')
			trimmed++;
		if (*trimmed == '\0')
			continue;
		if (strchr(trimmed, '=') == NULL)
		{
			if (nitems == 0)
			{
				snprintf(errbuf, errlen,
						 "oms.kafka_config item \"%s\" is not of the form property=value", trimmed);
				return false;
			}
			items[nitems - 1] = psprintf("%s,%s", items[nitems - 1], trimmed);
			continue;
		}
		if (nitems >= (int) lengthof(items))
		{
			snprintf(errbuf, errlen, "oms.kafka_config has more than %d properties",
					 (int) lengthof(items));
			return false;
		}
		items[nitems++] = trimmed;
	}

	for (int i = 0; i < nitems; i++)
	{
		char	   *name = items[i];
		char	   *value = strchr(name, '=');
		char	   *end;

		*value++ = '\0';
		for (end = name + strlen(name); end > name && (end[-1] == ' ' || end[-1] == '\t'); end--)
			end[-1] = '\0';
		while (*value == ' ' || *value == '\t')
			value++;
		for (end = value + strlen(value); end > value && (end[-1] == ' ' || end[-1] == '\t'); end--)
			end[-1] = '\0';

		if (*name == '\0')
		{
			snprintf(errbuf, errlen, "oms.kafka_config has an item without a property name");
			return false;
		}
		for (const char *const *r = reserved_properties; *r; r++)
		{
			if (strcmp(name, *r) == 0)
			{
				snprintf(errbuf, errlen,
						 "property \"%s\" cannot be set in oms.kafka_config: oms sets it itself", name);
				return false;
			}
		}
		if (!set_property(conf, name, value, errbuf, errlen))
			return false;
	}
	return true;
}

/*
 * Builds a producer from the current settings.  On failure returns false
 * with the reason in errbuf and leaves no producer behind.
 */
static bool
create_producer(char *errbuf, size_t errlen)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char		num[32];
	int64		max_bytes;
	rd_kafka_t *rk;
	char		reason[512];

	max_bytes = Min((int64) oms_kafka_max_message_bytes + KAFKA_MESSAGE_HEADROOM,
					(int64) KAFKA_MESSAGE_MAX_BYTES);

	/* Ours first; oms.kafka_config may override all but the reserved ones. */
	if (!set_property(conf, "client.id", client_id, errbuf, errlen) ||
		!set_property(conf, "bootstrap.servers", oms_kafka_brokers, errbuf, errlen) ||
		!set_property(conf, "enable.idempotence", "true", errbuf, errlen) ||
		!set_property(conf, "log.queue", "true", errbuf, errlen) ||
		!set_property(conf, "linger.ms", "5", errbuf, errlen) ||
		!set_property(conf, "socket.timeout.ms", "10000", errbuf, errlen) ||
		!set_property(conf, "reconnect.backoff.max.ms", "1000", errbuf, errlen) ||
		!set_property(conf, "log.connection.close", "false", errbuf, errlen) ||
		/* Java's partitioner: the same key lands where Java clients put it. */
		!set_property(conf, "partitioner", "murmur2_random", errbuf, errlen))
		goto fail;
	snprintf(num, sizeof(num), "%d", oms_relay_ack_timeout);
	if (!set_property(conf, "message.timeout.ms", num, errbuf, errlen))
		goto fail;
	snprintf(num, sizeof(num), INT64_FORMAT, max_bytes);
	if (!set_property(conf, "message.max.bytes", num, errbuf, errlen))
		goto fail;

	if (!apply_user_properties(conf, oms_kafka_config, errbuf, errlen))
		goto fail;

	rd_kafka_conf_set_dr_msg_cb(conf, delivery_callback);
	rd_kafka_conf_set_error_cb(conf, error_callback);

	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, reason, sizeof(reason));
	if (rk == NULL)
	{
		snprintf(errbuf, errlen, "%s", reason);
		goto fail;
	}
	/* conf belongs to rk now. */

	producer = rk;
	main_queue = rd_kafka_queue_get_main(rk);
	log_queue = rd_kafka_queue_new(rk);
	if (rd_kafka_set_log_queue(rk, log_queue) != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		snprintf(errbuf, errlen, "could not set the librdkafka log queue");
		destroy_producer();
		return false;
	}
	rd_kafka_queue_io_event_enable(main_queue, wake_pipe[1], "1", 1);
	rd_kafka_queue_io_event_enable(log_queue, wake_pipe[1], "1", 1);
	transport_error_at = 0;
	acked_at = 0;
	return true;

fail:
	rd_kafka_conf_destroy(conf);
	return false;
}

/*
 * Destroys the producer without waiting for outstanding messages: purges
 * them, serves their reports for at most KAFKA_DESTROY_WAIT_MS (reports
 * of a batch still registered are recorded; the relay settles such rows
 * as failed anyway), then destroys.  Used on reload, after a fatal error
 * and at exit.
 */
static void
destroy_producer(void)
{
	TimestampTz deadline;

	if (producer == NULL)
		return;

	rd_kafka_purge(producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT |
				   RD_KAFKA_PURGE_F_NON_BLOCKING);
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), KAFKA_DESTROY_WAIT_MS);
	while (rd_kafka_outq_len(producer) > 0 && GetCurrentTimestamp() < deadline)
		rd_kafka_poll(producer, 10);	/* short: bounded by the deadline */

	if (main_queue)
	{
		rd_kafka_queue_io_event_enable(main_queue, -1, NULL, 0);
		rd_kafka_queue_destroy(main_queue);
		main_queue = NULL;
	}
	if (log_queue)
	{
		rd_kafka_queue_io_event_enable(log_queue, -1, NULL, 0);
		serve_log_queue();
		rd_kafka_set_log_queue(producer, NULL);
		rd_kafka_queue_destroy(log_queue);
		log_queue = NULL;
	}
	rd_kafka_destroy_flags(producer, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
	producer = NULL;
	drain_wake_pipe();

	if (producer_settings)
	{
		pfree(producer_settings);
		producer_settings = NULL;
	}
}

/*
 * Makes the producer match the current settings: none when no brokers are
 * set, the existing one when nothing it was built from changed, else a new
 * one.  Settings librdkafka refused are not tried again until they change.
 * *changed is set when the state differs from the previous call's (the
 * caller logs it); for OMS_KAFKA_BAD_CONFIG the reason is in errbuf.
 */
OmsKafkaState
oms_kafka_ensure(bool *changed, char *errbuf, size_t errlen)
{
	char	   *settings;
	MemoryContext oldcxt;

	*changed = false;
	errbuf[0] = '\0';

	if (oms_kafka_brokers == NULL || oms_kafka_brokers[0] == '\0')
	{
		if (producer != NULL || refused_settings != NULL)
		{
			destroy_producer();
			if (refused_settings)
			{
				pfree(refused_settings);
				refused_settings = NULL;
			}
			*changed = true;
		}
		return OMS_KAFKA_OFF;
	}

	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	settings = current_settings();
	MemoryContextSwitchTo(oldcxt);

	if (producer != NULL && strcmp(settings, producer_settings) == 0)
	{
		pfree(settings);
		return OMS_KAFKA_READY;
	}
	if (refused_settings != NULL && strcmp(settings, refused_settings) == 0)
	{
		pfree(settings);
		snprintf(errbuf, errlen, "%s", refused_reason);
		return OMS_KAFKA_BAD_CONFIG;
	}

	/* Something changed: the old producer goes, a new one is built. */
	destroy_producer();
	if (refused_settings)
	{
		pfree(refused_settings);
		refused_settings = NULL;
	}
	*changed = true;

	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	if (!create_producer(refused_reason, sizeof(refused_reason)))
	{
		refused_settings = settings;
		MemoryContextSwitchTo(oldcxt);
		snprintf(errbuf, errlen, "%s", refused_reason);
		return OMS_KAFKA_BAD_CONFIG;
	}
	producer_settings = settings;
	MemoryContextSwitchTo(oldcxt);
	return OMS_KAFKA_READY;
}

/*
 * Serves what librdkafka queued for us: delivery reports and client
 * errors (main queue), log lines (log queue).  Never waits.
 */
void
oms_kafka_serve(void)
{
	drain_wake_pipe();
	if (producer != NULL)
		rd_kafka_poll(producer, 0);
	serve_log_queue();
	log_client_errors();
}

/* ---------------------------------------------------------------- batches */

/*
 * Registers the report array of a new batch.  Reports of messages of
 * earlier batches no longer match and are ignored.
 */
void
oms_kafka_begin_batch(OmsKafkaReport *reports, int nreports)
{
	Assert(nreports <= OMS_RELAY_MAX_BATCH);
	batch_number++;
	batch_reports = reports;
	batch_nreports = nreports;
	batch_pending = 0;
}

/* Messages of the current batch still waiting for their report. */
int
oms_kafka_pending(void)
{
	return batch_pending;
}

void
oms_kafka_end_batch(void)
{
	batch_reports = NULL;
	batch_nreports = 0;
	batch_pending = 0;
}

/*
 * Hands one event to the producer; copies everything, never blocks.
 * "headers" holds nheaders names and values, alternating.  Returns 0 when
 * the message is queued (its report will arrive), else the error.
 */
int
oms_kafka_produce(int index, const char *topic,
				  const char *key, size_t keylen,
				  const char *value, size_t valuelen,
				  char *const *headers, int nheaders)
{
	rd_kafka_headers_t *hdrs;
	rd_kafka_resp_err_t err;
	uintptr_t	tag;

	if (producer == NULL)
		return RD_KAFKA_RESP_ERR__STATE;
	if (index < 0 || index >= batch_nreports)
		return RD_KAFKA_RESP_ERR__INVALID_ARG;

	hdrs = rd_kafka_headers_new(nheaders / 2);
	for (int i = 0; i + 1 < nheaders; i += 2)
	{
		if (headers[i] == NULL)
			continue;
		rd_kafka_header_add(hdrs, headers[i], -1, headers[i + 1],
							headers[i + 1] ? -1 : 0);
	}

	tag = ((batch_number & (UINTPTR_MAX >> KAFKA_INDEX_BITS)) << KAFKA_INDEX_BITS) | (uintptr_t) index;
	err = rd_kafka_producev(producer,
							RD_KAFKA_V_TOPIC(topic),
							RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
							RD_KAFKA_V_KEY(unconstify(char *, key), keylen),
							RD_KAFKA_V_VALUE(unconstify(char *, value), valuelen),
							RD_KAFKA_V_HEADERS(hdrs),
							RD_KAFKA_V_OPAQUE((void *) tag),
							RD_KAFKA_V_END);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		/* Not queued: the headers are still ours. */
		rd_kafka_headers_destroy(hdrs);
		return (int) err;
	}

	batch_reports[index].status = OMS_REPORT_PENDING;
	batch_reports[index].produced_at = GetCurrentTimestamp();
	batch_pending++;
	return 0;
}

/*
 * Gives up on every message not yet acknowledged: each gets a report with
 * __PURGE_QUEUE (never sent) or __PURGE_INFLIGHT (maybe written) soon.
 */
void
oms_kafka_purge(void)
{
	if (producer != NULL)
		rd_kafka_purge(producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT |
					   RD_KAFKA_PURGE_F_NON_BLOCKING);
}

/*
 * True when the client reported a connection-level error (refused,
 * unresolvable, authentication, TLS, all brokers down) and no message was
 * acknowledged since.
 */
bool
oms_kafka_unreachable(void)
{
	return producer != NULL && transport_error_at > acked_at;
}

/*
 * An idempotent producer can hit a fatal error (e.g. the broker lost its
 * sequence state); the instance is then unusable.  Destroys it, so the next
 * oms_kafka_ensure builds a new one, and returns true with the reason.
 */
bool
oms_kafka_check_fatal(char *errbuf, size_t errlen)
{
	char		reason[512];
	rd_kafka_resp_err_t err;

	if (producer == NULL)
		return false;
	err = rd_kafka_fatal_error(producer, reason, sizeof(reason));
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
		return false;

	snprintf(errbuf, errlen, "fatal Kafka producer error %s: %s",
			 rd_kafka_err2name(err), reason);
	destroy_producer();
	return true;
}

/* ---------------------------------------------------------------- errors */

/*
 * Whether publishing the same event again cannot succeed: it is too big,
 * malformed, or refused by authorisation or policy.  Timeouts, transport
 * errors, purges, leader changes and unknown topics (the broker may create
 * them, or they may be created later) are worth retrying.
 */
bool
oms_kafka_error_is_permanent(int err)
{
	switch (err)
	{
		case OMS_KAFKA_ERR_TOO_LARGE:
		case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
		case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
		case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
		case RD_KAFKA_RESP_ERR__INVALID_ARG:
		case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
		case RD_KAFKA_RESP_ERR_INVALID_RECORD:
		case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
		case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
		case RD_KAFKA_RESP_ERR_UNSUPPORTED_FOR_MESSAGE_FORMAT:
		case RD_KAFKA_RESP_ERR_INVALID_TIMESTAMP:
			return true;
		default:
			return false;
	}
}

/*
 * True for a message purged from the producer's queue before it was ever
 * sent (broker unreachable until the deadline).  Such an event was not
 * attempted, so it is not charged a publish attempt: a long outage must not
 * use up the attempts of the events waiting it out.
 */
bool
oms_kafka_error_never_sent(int err)
{
	return err == RD_KAFKA_RESP_ERR__PURGE_QUEUE;
}

/* Text of an error code for oms.outbox.last_error and the dead letters. */
char *
oms_kafka_error_text(int err)
{
	switch (err)
	{
		case OMS_KAFKA_ERR_NO_REPORT:
			return pstrdup("no delivery report within oms.relay_ack_timeout");
		case OMS_KAFKA_ERR_TOO_LARGE:
			return pstrdup("event larger than oms.kafka_max_message_bytes");
		case OMS_KAFKA_ERR_BROKERS_DOWN:
			return pstrdup("all Kafka brokers are down");
		default:
			return psprintf("%s: %s",
							rd_kafka_err2name((rd_kafka_resp_err_t) err),
							rd_kafka_err2str((rd_kafka_resp_err_t) err));
	}
}

/* ---------------------------------------------------------------- exit */

void
oms_kafka_shutdown(void)
{
	oms_kafka_end_batch();
	destroy_producer();
}

/* before_shmem_exit callback: bounded, never flushes. */
static void
kafka_exit(int code, Datum arg)
{
	oms_kafka_shutdown();
}
