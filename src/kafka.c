/*-------------------------------------------------------------------------
 *
 * kafka.c
 *	  The Kafka producer of the outbox relay and the reply consumer of the
 *	  inbox: the only file that includes librdkafka's header.
 *
 * One idempotent producer per worker, built lazily from the oms.kafka_*
 * settings and rebuilt when a reload changes one of them.  Settings that
 * librdkafka refuses are reported once and keep the relay off until they
 * change; they are not retried in a loop.  The reply consumer (see
 * oms_kafka_inbox_ensure) is a second client built the same way, with
 * manual offset storage: src/inbox.c acknowledges a message only after
 * the transaction that applied it committed.
 *
 * librdkafka runs threads of its own, and a PostgreSQL backend must not
 * allocate, log or throw outside its main thread.  So nothing of ours runs
 * on librdkafka's threads: log lines are sent to a queue (log.queue=true)
 * and delivery reports and client errors to the main queue, and both are
 * served only by oms_kafka_serve() on the worker's thread; the consumer's
 * messages, rebalances, errors and commit results come from its consumer
 * queue, served only by rd_kafka_consumer_poll() on the same thread.  Even
 * there the callbacks write only into preallocated memory (the batch's
 * report array and fixed-size buffers) or librdkafka's own, because an
 * error thrown inside them would unwind through librdkafka's frames;
 * whatever needs logging is logged after the poll returns.  All these
 * queues write a byte to one non-blocking pipe when they become non-empty,
 * so the worker's wait wakes up as soon as a report or a reply arrives.
 *
 * Properties come from oms.kafka_config and then oms.kafka_config_file
 * (src/kafka_config.c); a client keeps the file it was built from, so
 * that its secrets stay known to oms_kafka_redact(), which every text
 * from librdkafka goes through before it is logged or stored.
 *
 * No call here blocks for long: produce never waits for queue space,
 * the consumer is polled with a zero timeout and seeks without waiting,
 * purge, close and destroy are bounded, and there is no rd_kafka_flush().
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

/* Least time between a failed offset commit of the reply consumer and its retry. */
#define KAFKA_COMMIT_RETRY_MS 1000

/*
 * librdkafka log lines and client errors logged per oms.log_min_interval
 * (no limit when it is 0); the rest are counted.  A broker outage makes
 * librdkafka repeat its connection errors: they stop after the burst.
 */
#define KAFKA_LOG_BURST 10

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
static OmsKafkaFile *producer_file = NULL;
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

/* Client errors noted by an error callback, waiting to be logged. */
typedef struct ClientErrors
{
	int			code;
	int			unlogged;
	char		reason[512];
} ClientErrors;

static ClientErrors producer_errors;

/*
 * The reply consumer of the inbox (src/inbox.c): a second client, a
 * consumer in group oms.kafka_consumer_group || '-' || database, with its
 * own log queue.  Its consumer queue (which the main queue is forwarded
 * to) and its log queue wake the worker through the same pipe as the
 * producer's.  inbox_msg is the one message handed to the inbox and not
 * yet acknowledged or rewound; it is destroyed before the consumer is.
 */
static rd_kafka_t *consumer = NULL;
static rd_kafka_queue_t *consumer_queue = NULL;
static rd_kafka_queue_t *consumer_log_queue = NULL;
static char *consumer_settings = NULL;
static OmsKafkaFile *consumer_file = NULL;
static char *consumer_refused_settings = NULL;
static char consumer_refused_reason[512];
static char consumer_client_id[NAMEDATALEN + 16];
static rd_kafka_message_t *inbox_msg = NULL;
static char inbox_msg_error[512];	/* the error text of inbox_msg, redacted */
static rd_kafka_topic_partition_list_t *consumer_assignment = NULL;
static bool consumer_offsets_stored = false;	/* stored since the last
												 * commit */
static bool consumer_broken = false;	/* rebuild it before the next poll */
static TimestampTz commit_failed_at = 0;	/* last failed offset commit */
static uint32 consumer_assignment_changes = 0;
static ClientErrors consumer_errors;
static ClientErrors commit_errors;

/* Log rate limit, shared by librdkafka log lines and client errors. */
static TimestampTz log_window_start = 0;
static int	log_window_count = 0;
static int	log_suppressed = 0;

static void destroy_producer(void);
static void destroy_consumer(void);
static void kafka_exit(int code, Datum arg);

/* ---------------------------------------------------------------- callbacks */

/*
 * Keeps the last client error for logging on the worker's thread: only
 * copies (and redacts, which allocates nothing either).
 */
static void
note_client_error(ClientErrors *errors, int err, const char *reason)
{
	errors->code = err;
	strlcpy(errors->reason, reason ? reason : "", sizeof(errors->reason));
	oms_kafka_redact(errors->reason, sizeof(errors->reason));
	errors->unlogged++;
}

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
	note_client_error(&producer_errors, err, reason);
}

/* ---------------------------------------------------------------- logging */

/* True when one more line may be logged in the current window. */
static bool
log_allowed(void)
{
	TimestampTz now = GetCurrentTimestamp();

	if (oms_log_min_interval == 0 ||
		TimestampDifferenceExceeds(log_window_start, now, oms_log_min_interval))
	{
		if (log_suppressed > 0)
		{
			StringInfoData line;

			oms_log_begin(&line, "kafka_log_suppressed");
			oms_log_int(&line, "suppressed", log_suppressed);
			oms_log_int(&line, "window_ms",
						TimestampDifferenceMilliseconds(log_window_start, now));
			oms_log_emit(LOG, &line);
		}
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

/* Logs what librdkafka queued on "queue"; "who" names the client in the line. */
static void
serve_log_queue(rd_kafka_queue_t *queue, const char *who)
{
	rd_kafka_event_t *ev;

	if (queue == NULL)
		return;

	while ((ev = rd_kafka_queue_poll(queue, 0)) != NULL)
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
			{
				StringInfoData line;
				char		message[2048];

				strlcpy(message, str ? str : "", sizeof(message));
				oms_kafka_redact(message, sizeof(message));
				oms_log_begin(&line, "kafka_log");
				oms_log_str(&line, "client", who);
				oms_log_str(&line, "facility", fac ? fac : "log");
				oms_log_int(&line, "level", level);
				oms_log_str(&line, "message", message);
				oms_log_emit(elevel, &line);
			}
		}
		rd_kafka_event_destroy(ev);
	}
}

static void
log_client_errors(ClientErrors *errors, const char *who)
{
	if (errors->unlogged == 0)
		return;
	if (log_allowed())
	{
		StringInfoData line;

		oms_log_begin(&line, "kafka_error");
		oms_log_str(&line, "client", who);
		oms_log_str(&line, "code", rd_kafka_err2name((rd_kafka_resp_err_t) errors->code));
		oms_log_str(&line, "error", errors->reason);
		oms_log_emit(LOG, &line);
	}
	errors->unlogged = 0;
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
	snprintf(consumer_client_id, sizeof(consumer_client_id), "oms-inbox-%s", dbname);
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
	return psprintf("%s\n%s\n%d\n%d\n" UINT64_FORMAT,
					oms_kafka_brokers ? oms_kafka_brokers : "",
					oms_kafka_config ? oms_kafka_config : "",
					oms_relay_ack_timeout, oms_kafka_max_message_bytes,
					oms_kafka_file_generation());
}

static bool
set_property(rd_kafka_conf_t *conf, const char *name, const char *value,
			 char *errbuf, size_t errlen)
{
	char		reason[256];

	if (rd_kafka_conf_set(conf, name, value, reason, sizeof(reason)) != RD_KAFKA_CONF_OK)
	{
		oms_kafka_redact(reason, sizeof(reason));
		snprintf(errbuf, errlen, "%s", reason);
		return false;
	}
	return true;
}

/* True when "name" is one of "reserved". */
static bool
is_reserved(const char *name, const char *const *reserved)
{
	for (const char *const *r = reserved; *r; r++)
	{
		if (strcmp(name, *r) == 0)
			return true;
	}
	return false;
}

/*
 * Applies oms.kafka_config (see oms_kafka_split_config for its syntax).
 * Its check hook already refused secret properties.
 */
static bool
apply_user_properties(rd_kafka_conf_t *conf, const char *config,
					  const char *const *reserved, char *errbuf, size_t errlen)
{
	int			nprops;
	char	   *error;
	OmsKafkaProperty *props = oms_kafka_split_config(config, &nprops, &error);

	if (error != NULL)
	{
		snprintf(errbuf, errlen, "%s", error);
		return false;
	}
	for (int i = 0; i < nprops; i++)
	{
		if (is_reserved(props[i].name, reserved))
		{
			snprintf(errbuf, errlen,
					 "property \"%s\" cannot be set in oms.kafka_config: oms sets it itself",
					 props[i].name);
			return false;
		}
		if (!set_property(conf, props[i].name, props[i].value, errbuf, errlen))
			return false;
	}
	return true;
}

/*
 * Applies oms.kafka_config_file, after oms.kafka_config, and returns the
 * file, which the new client keeps; NULL with the reason in errbuf when
 * the file or one of its properties is refused.  Messages name the file,
 * the line and the property; librdkafka's text is redacted.
 */
static OmsKafkaFile *
apply_file_properties(rd_kafka_conf_t *conf, const char *const *reserved,
					  char *errbuf, size_t errlen)
{
	OmsKafkaFile *file = oms_kafka_file_acquire();
	char		reason[512];

	if (file->error != NULL)
	{
		snprintf(errbuf, errlen, "%s", file->error);
		oms_kafka_file_release(file);
		return NULL;
	}
	for (int i = 0; i < file->nprops; i++)
	{
		OmsKafkaProperty *p = &file->props[i];

		if (is_reserved(p->name, reserved))
		{
			snprintf(errbuf, errlen,
					 "property \"%s\" (line %d of oms.kafka_config_file \"%s\") cannot be set: oms sets it itself",
					 p->name, p->line, file->path);
			oms_kafka_file_release(file);
			return NULL;
		}
		if (!set_property(conf, p->name, p->value, reason, sizeof(reason)))
		{
			snprintf(errbuf, errlen, "line %d of oms.kafka_config_file \"%s\": %s",
					 p->line, file->path, reason);
			oms_kafka_file_release(file);
			return NULL;
		}
	}
	return file;
}

/*
 * Builds a producer from the current settings.  On failure returns false
 * with the reason in errbuf and leaves no producer behind.
 */
static bool
create_producer(char *errbuf, size_t errlen)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	OmsKafkaFile *file = NULL;
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

	/*
	 * Latency first: a batch is produced at once (the relay batches already,
	 * and waits for the whole batch: lingering only delays its last messages;
	 * measured, 0 instead of 1 ms drains a backlog a third faster), and with
	 * Nagle's algorithm on, small produce requests wait for the broker's
	 * delayed ACK (about 40 ms) whenever more than one is in flight.
	 */
		!set_property(conf, "linger.ms", "0", errbuf, errlen) ||
		!set_property(conf, "socket.nagle.disable", "true", errbuf, errlen) ||

	/*
	 * The relay has one batch in flight at a time; one request per connection
	 * keeps a batch from queuing behind the broker's delayed ACKs (measured:
	 * 10x lower latency against the test broker).
	 */
		!set_property(conf, "max.in.flight.requests.per.connection", "1", errbuf, errlen) ||
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

	if (!apply_user_properties(conf, oms_kafka_config, reserved_properties, errbuf, errlen))
		goto fail;
	file = apply_file_properties(conf, reserved_properties, errbuf, errlen);
	if (file == NULL)
		goto fail;

	rd_kafka_conf_set_dr_msg_cb(conf, delivery_callback);
	rd_kafka_conf_set_error_cb(conf, error_callback);

	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, reason, sizeof(reason));
	if (rk == NULL)
	{
		oms_kafka_redact(reason, sizeof(reason));
		snprintf(errbuf, errlen, "%s", reason);
		goto fail;
	}
	/* conf belongs to rk now. */

	producer = rk;
	producer_file = file;
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
	oms_kafka_file_release(file);
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
		serve_log_queue(log_queue, "relay");
		rd_kafka_set_log_queue(producer, NULL);
		rd_kafka_queue_destroy(log_queue);
		log_queue = NULL;
	}
	rd_kafka_destroy_flags(producer, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
	producer = NULL;
	drain_wake_pipe();
	/* Only now: its last log lines were redacted with the file's secrets. */
	oms_kafka_file_release(producer_file);
	producer_file = NULL;

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
 * Empties the wake-up pipe.  The worker calls it at the top of each loop,
 * before the relay and the inbox serve their queues: a queue that becomes
 * non-empty after this writes to the pipe again, so the worker's sleep
 * cannot miss it.
 */
void
oms_kafka_clear_wakeups(void)
{
	drain_wake_pipe();
}

/*
 * Serves what librdkafka queued for us: delivery reports and client
 * errors (main queue), log lines (both clients' log queues).  Never waits.
 */
void
oms_kafka_serve(void)
{
	if (producer != NULL)
		rd_kafka_poll(producer, 0);
	serve_log_queue(log_queue, "relay");
	log_client_errors(&producer_errors, "relay");
	serve_log_queue(consumer_log_queue, "inbox");
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
	oms_kafka_redact(reason, sizeof(reason));

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
char	   *
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

/* ---------------------------------------------------------------- inbox consumer */

/*
 * Properties oms sets itself on the reply consumer, on top of the
 * producer's: the group, and manual offsets, which is what lets a reply's
 * offset be committed only after its transaction committed.
 */
static const char *const consumer_reserved_properties[] = {
	"bootstrap.servers", "metadata.broker.list", "enable.idempotence",
	"log.queue", "transactional.id",
	"group.id", "enable.auto.commit", "enable.auto.offset.store", NULL
};

/*
 * A client-level error of the consumer.  Called on the worker's thread
 * from rd_kafka_consumer_poll(); only copies.  A fatal error (only static
 * group membership has them) makes the client unusable: it is rebuilt.
 */
static void
consumer_error_callback(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	if (err == RD_KAFKA_RESP_ERR__FATAL)
		consumer_broken = true;
	note_client_error(&consumer_errors, err, reason);
}

/*
 * Result of an asynchronous offset commit; on the worker's thread, only
 * copies.  After a failure the stored offsets are committed again, at most
 * once per KAFKA_COMMIT_RETRY_MS (a commit's result wakes the worker, so an
 * immediate retry would spin against a broker that keeps refusing).
 */
static void
commit_callback(rd_kafka_t *rk, rd_kafka_resp_err_t err,
				rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR && offsets != NULL)
	{
		for (int i = 0; i < offsets->cnt; i++)
		{
			if (offsets->elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR)
			{
				err = offsets->elems[i].err;
				break;
			}
		}
	}
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
	{
		note_client_error(&commit_errors, err, rd_kafka_err2str(err));
		consumer_offsets_stored = true;
		commit_failed_at = GetCurrentTimestamp();
	}
}

/* Adds (or, with "add" false, removes) partitions to our copy of the assignment. */
static void
track_assignment(const rd_kafka_topic_partition_list_t *partitions, bool add)
{
	consumer_assignment_changes++;
	if (consumer_assignment == NULL)
		consumer_assignment = rd_kafka_topic_partition_list_new(partitions ? partitions->cnt : 0);
	if (partitions == NULL)
		return;
	for (int i = 0; i < partitions->cnt; i++)
	{
		const rd_kafka_topic_partition_t *p = &partitions->elems[i];

		if (add)
		{
			if (rd_kafka_topic_partition_list_find(consumer_assignment, p->topic, p->partition) == NULL)
				rd_kafka_topic_partition_list_add(consumer_assignment, p->topic, p->partition);
		}
		else
			rd_kafka_topic_partition_list_del(consumer_assignment, p->topic, p->partition);
	}
}

/* The consumer gives up "partitions" (all of them under the eager protocol). */
static void
consumer_unassign(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *partitions)
{
	if (strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0)
	{
		rd_kafka_error_t *error = rd_kafka_incremental_unassign(rk, partitions);

		if (error)
		{
			note_client_error(&consumer_errors, rd_kafka_error_code(error),
							  rd_kafka_error_string(error));
			rd_kafka_error_destroy(error);
		}
		track_assignment(partitions, false);
	}
	else
	{
		rd_kafka_assign(rk, NULL);
		if (consumer_assignment)
		{
			rd_kafka_topic_partition_list_destroy(consumer_assignment);
			consumer_assignment = NULL;
		}
		consumer_assignment_changes++;
	}
}

/*
 * Group rebalance, called on the worker's thread from
 * rd_kafka_consumer_poll(), never while a message is being applied.
 * Takes what the group assigns; before partitions are taken away, the
 * offsets of replies already applied are committed (asynchronously), so
 * their next owner does not see them again.
 */
static void
rebalance_callback(rd_kafka_t *rk, rd_kafka_resp_err_t err,
				   rd_kafka_topic_partition_list_t *partitions, void *opaque)
{
	if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
	{
		if (strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0)
		{
			rd_kafka_error_t *error = rd_kafka_incremental_assign(rk, partitions);

			if (error)
			{
				note_client_error(&consumer_errors, rd_kafka_error_code(error),
								  rd_kafka_error_string(error));
				rd_kafka_error_destroy(error);
			}
		}
		else
		{
			rd_kafka_assign(rk, partitions);
			if (consumer_assignment)
			{
				rd_kafka_topic_partition_list_destroy(consumer_assignment);
				consumer_assignment = NULL;
			}
		}
		track_assignment(partitions, true);
		return;
	}

	if (consumer_offsets_stored && !rd_kafka_assignment_lost(rk))
		rd_kafka_commit(rk, NULL, 1);
	consumer_offsets_stored = false;
	consumer_unassign(rk, partitions);
}

/*
 * The settings the consumer depends on, as one string: a different string
 * means a different consumer.
 */
static char *
consumer_current_settings(void)
{
	return psprintf("%s\n%s\n%s\n%s\n" UINT64_FORMAT,
					oms_kafka_brokers ? oms_kafka_brokers : "",
					oms_kafka_config ? oms_kafka_config : "",
					oms_kafka_consumer_group ? oms_kafka_consumer_group : "",
					oms_kafka_payment_replies_topic ? oms_kafka_payment_replies_topic : "",
					oms_kafka_file_generation());
}

/* The consumer's own librdkafka properties, before the user's. */
static bool
set_consumer_properties(rd_kafka_conf_t *conf, const char *group, char *errbuf, size_t errlen)
{
	/*
	 * Ours first; oms.kafka_config may override all but the reserved ones.
	 * The prefetch is kept small: this is a database backend, and replies are
	 * small and few.  A broker answers a fetch as soon as data arrives;
	 * fetch.wait.max.ms only bounds how long an idle fetch waits, which also
	 * bounds the latency of brokers that do not answer early (the test
	 * broker).
	 */
	return set_property(conf, "client.id", consumer_client_id, errbuf, errlen) &&
		set_property(conf, "bootstrap.servers", oms_kafka_brokers, errbuf, errlen) &&
		set_property(conf, "group.id", group, errbuf, errlen) &&
		set_property(conf, "enable.auto.commit", "false", errbuf, errlen) &&
		set_property(conf, "enable.auto.offset.store", "false", errbuf, errlen) &&
		set_property(conf, "auto.offset.reset", "earliest", errbuf, errlen) &&
		set_property(conf, "session.timeout.ms", "6000", errbuf, errlen) &&
		set_property(conf, "heartbeat.interval.ms", "1000", errbuf, errlen) &&
		set_property(conf, "log.queue", "true", errbuf, errlen) &&
		set_property(conf, "socket.timeout.ms", "10000", errbuf, errlen) &&
		set_property(conf, "reconnect.backoff.max.ms", "1000", errbuf, errlen) &&
		set_property(conf, "log.connection.close", "false", errbuf, errlen) &&
		set_property(conf, "queued.min.messages", "1000", errbuf, errlen) &&
		set_property(conf, "fetch.wait.max.ms", "100", errbuf, errlen) &&
		set_property(conf, "socket.nagle.disable", "true", errbuf, errlen) &&
		set_property(conf, "queued.max.messages.kbytes", "8192", errbuf, errlen);
}

/*
 * Takes over a consumer just created: its log queue, its queues' wake-ups
 * through the pipe, and the subscription to the replies topic.  On failure
 * the consumer is destroyed.
 */
static bool
start_consumer(rd_kafka_t *rk, OmsKafkaFile *file, char *errbuf, size_t errlen)
{
	rd_kafka_topic_partition_list_t *topics;
	rd_kafka_resp_err_t err;

	consumer = rk;
	consumer_file = file;
	consumer_broken = false;
	consumer_offsets_stored = false;
	consumer_log_queue = rd_kafka_queue_new(rk);
	if (rd_kafka_set_log_queue(rk, consumer_log_queue) != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		snprintf(errbuf, errlen, "could not set the librdkafka log queue");
		destroy_consumer();
		return false;
	}

	/*
	 * Everything the consumer has for us (messages, rebalances, errors,
	 * commit results) arrives on its consumer queue, served by
	 * rd_kafka_consumer_poll() on this thread; a byte in the pipe says it
	 * became non-empty.
	 */
	rd_kafka_poll_set_consumer(rk);
	consumer_queue = rd_kafka_queue_get_consumer(rk);
	rd_kafka_queue_io_event_enable(consumer_queue, wake_pipe[1], "1", 1);
	rd_kafka_queue_io_event_enable(consumer_log_queue, wake_pipe[1], "1", 1);

	topics = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(topics, oms_kafka_payment_replies_topic,
									  RD_KAFKA_PARTITION_UA);
	err = rd_kafka_subscribe(rk, topics);
	rd_kafka_topic_partition_list_destroy(topics);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		snprintf(errbuf, errlen, "could not subscribe to topic \"%s\": %s",
				 oms_kafka_payment_replies_topic, rd_kafka_err2str(err));
		destroy_consumer();
		return false;
	}
	return true;
}

/*
 * Builds the reply consumer from the current settings and subscribes it to
 * oms.kafka_payment_replies_topic.  On failure returns false with the
 * reason in errbuf and leaves no consumer behind.
 */
static bool
create_consumer(char *errbuf, size_t errlen)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char	   *group;
	char		reason[512];
	rd_kafka_t *rk;
	OmsKafkaFile *file = NULL;

	if (oms_kafka_payment_replies_topic == NULL || oms_kafka_payment_replies_topic[0] == '\0')
	{
		snprintf(errbuf, errlen, "oms.kafka_payment_replies_topic is empty");
		rd_kafka_conf_destroy(conf);
		return false;
	}
	group = psprintf("%s-%s", oms_kafka_consumer_group ? oms_kafka_consumer_group : "",
					 kafka_dbname);
	if (!set_consumer_properties(conf, group, errbuf, errlen) ||
		!apply_user_properties(conf, oms_kafka_config, consumer_reserved_properties,
							   errbuf, errlen))
		goto fail;
	file = apply_file_properties(conf, consumer_reserved_properties, errbuf, errlen);
	if (file == NULL)
		goto fail;

	rd_kafka_conf_set_error_cb(conf, consumer_error_callback);
	rd_kafka_conf_set_rebalance_cb(conf, rebalance_callback);
	rd_kafka_conf_set_offset_commit_cb(conf, commit_callback);

	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, reason, sizeof(reason));
	if (rk == NULL)
	{
		oms_kafka_redact(reason, sizeof(reason));
		snprintf(errbuf, errlen, "%s", reason);
		goto fail;
	}
	/* conf belongs to rk now. */
	pfree(group);
	return start_consumer(rk, file, errbuf, errlen);

fail:
	rd_kafka_conf_destroy(conf);
	oms_kafka_file_release(file);
	pfree(group);
	return false;
}

/*
 * Leaves the group cleanly, so that the next consumer of this group gets
 * the partitions at once instead of after session.timeout.ms, but waits
 * at most KAFKA_DESTROY_WAIT_MS: with the brokers down it cannot complete,
 * and the group then drops us when our session times out.  Rebalance
 * events of the close are served here, by giving up what they name.
 */
static void
close_consumer(void)
{
	rd_kafka_queue_t *queue = rd_kafka_queue_new(consumer);
	rd_kafka_error_t *error;
	TimestampTz deadline;

	error = rd_kafka_consumer_close_queue(consumer, queue);
	if (error)
	{
		rd_kafka_error_destroy(error);
		rd_kafka_queue_destroy(queue);
		return;
	}

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), KAFKA_DESTROY_WAIT_MS);
	while (!rd_kafka_consumer_closed(consumer) && GetCurrentTimestamp() < deadline)
	{
		rd_kafka_event_t *ev = rd_kafka_queue_poll(queue, 10);	/* bounded by the
																 * deadline */

		if (ev == NULL)
			continue;
		if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE)
			consumer_unassign(consumer, rd_kafka_event_topic_partition_list(ev));
		rd_kafka_event_destroy(ev);
	}
	rd_kafka_queue_destroy(queue);
}

/*
 * Destroys the consumer, boundedly: the message in hand is dropped (it was
 * not applied, or its offset is stored), offsets stored since the last
 * commit are committed asynchronously, the group is left if that is quick,
 * and the client is destroyed without librdkafka's own blocking close.
 * Used on reload, after a fatal error and at exit.  Replies whose offsets
 * did not reach the broker are delivered again and found in the inbox.
 */
static void
destroy_consumer(void)
{
	if (consumer == NULL)
		return;

	if (inbox_msg)
	{
		rd_kafka_message_destroy(inbox_msg);
		inbox_msg = NULL;
	}

	if (consumer_queue)
		rd_kafka_queue_io_event_enable(consumer_queue, -1, NULL, 0);
	if (consumer_log_queue)
		rd_kafka_queue_io_event_enable(consumer_log_queue, -1, NULL, 0);

	if (consumer_offsets_stored)
		rd_kafka_commit(consumer, NULL, 1);
	consumer_offsets_stored = false;
	close_consumer();

	if (consumer_queue)
	{
		rd_kafka_queue_destroy(consumer_queue);
		consumer_queue = NULL;
	}
	if (consumer_log_queue)
	{
		serve_log_queue(consumer_log_queue, "inbox");
		rd_kafka_set_log_queue(consumer, NULL);
		rd_kafka_queue_destroy(consumer_log_queue);
		consumer_log_queue = NULL;
	}
	rd_kafka_destroy_flags(consumer, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
	consumer = NULL;
	consumer_broken = false;
	oms_kafka_file_release(consumer_file);
	consumer_file = NULL;

	if (consumer_assignment)
	{
		rd_kafka_topic_partition_list_destroy(consumer_assignment);
		consumer_assignment = NULL;
	}
	if (consumer_settings)
	{
		pfree(consumer_settings);
		consumer_settings = NULL;
	}
}

/*
 * Makes the reply consumer match the settings: none unless "wanted" and
 * brokers are set, the existing one when nothing it was built from
 * changed (and it is not broken), else a new one.  Settings librdkafka
 * refused are not tried again until they change.  *changed is set when the
 * state differs from the previous call's (the caller logs it); for
 * OMS_KAFKA_BAD_CONFIG the reason is in errbuf.
 */
OmsKafkaState
oms_kafka_inbox_ensure(bool wanted, bool *changed, char *errbuf, size_t errlen)
{
	char	   *settings;
	MemoryContext oldcxt;

	*changed = false;
	errbuf[0] = '\0';

	if (!wanted || oms_kafka_brokers == NULL || oms_kafka_brokers[0] == '\0')
	{
		if (consumer != NULL || consumer_refused_settings != NULL)
		{
			destroy_consumer();
			if (consumer_refused_settings)
			{
				pfree(consumer_refused_settings);
				consumer_refused_settings = NULL;
			}
			*changed = true;
		}
		return OMS_KAFKA_OFF;
	}

	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	settings = consumer_current_settings();
	MemoryContextSwitchTo(oldcxt);

	if (consumer != NULL && !consumer_broken && strcmp(settings, consumer_settings) == 0)
	{
		pfree(settings);
		return OMS_KAFKA_READY;
	}
	if (consumer == NULL && consumer_refused_settings != NULL &&
		strcmp(settings, consumer_refused_settings) == 0)
	{
		pfree(settings);
		snprintf(errbuf, errlen, "%s", consumer_refused_reason);
		return OMS_KAFKA_BAD_CONFIG;
	}

	destroy_consumer();
	if (consumer_refused_settings)
	{
		pfree(consumer_refused_settings);
		consumer_refused_settings = NULL;
	}
	*changed = true;

	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	if (!create_consumer(consumer_refused_reason, sizeof(consumer_refused_reason)))
	{
		consumer_refused_settings = settings;
		MemoryContextSwitchTo(oldcxt);
		snprintf(errbuf, errlen, "%s", consumer_refused_reason);
		return OMS_KAFKA_BAD_CONFIG;
	}
	consumer_settings = settings;
	MemoryContextSwitchTo(oldcxt);
	return OMS_KAFKA_READY;
}

/*
 * Serves the consumer's log queue and logs its client and commit errors
 * (rate-limited).  Returns true, with the newest error's text in errbuf,
 * when there were errors since the last call.  Never waits.
 */
bool
oms_kafka_inbox_serve(char *errbuf, size_t errlen)
{
	bool		had_errors = false;

	serve_log_queue(consumer_log_queue, "inbox");
	if (consumer_errors.unlogged > 0)
	{
		snprintf(errbuf, errlen, "Kafka client error %s: %s",
				 rd_kafka_err2name((rd_kafka_resp_err_t) consumer_errors.code),
				 consumer_errors.reason);
		had_errors = true;
	}
	log_client_errors(&consumer_errors, "inbox");
	if (commit_errors.unlogged > 0)
	{
		if (log_allowed())
		{
			StringInfoData line;

			oms_log_begin(&line, "inbox_commit_failed");
			oms_log_str(&line, "code", rd_kafka_err2name((rd_kafka_resp_err_t) commit_errors.code));
			oms_log_str(&line, "error", commit_errors.reason);
			ereport(LOG,
					(errmsg_internal("%s", line.data),
					 errhint("Replies whose offsets were not committed are delivered again and found in the inbox.")));
			pfree(line.data);
		}
		snprintf(errbuf, errlen, "offset commit failed: %s: %s",
				 rd_kafka_err2name((rd_kafka_resp_err_t) commit_errors.code),
				 commit_errors.reason);
		commit_errors.unlogged = 0;
		had_errors = true;
	}
	return had_errors;
}

/* Releases the message in hand, if any. */
static void
release_inbox_message(void)
{
	if (inbox_msg)
	{
		rd_kafka_message_destroy(inbox_msg);
		inbox_msg = NULL;
	}
}

/*
 * Takes the next message or consumer error off the consumer queue,
 * without waiting; false when there is none.  Serves rebalances, errors
 * and commit results on the way.  End-of-partition notices are skipped.
 * The message stays in hand (and *m points into it) until
 * oms_kafka_inbox_ack(), oms_kafka_inbox_rewind() or the next poll.
 */
bool
oms_kafka_inbox_poll(OmsKafkaMessage *m)
{
	release_inbox_message();
	memset(m, 0, sizeof(*m));

	while (consumer != NULL && !consumer_broken)
	{
		rd_kafka_message_t *msg = rd_kafka_consumer_poll(consumer, 0);
		rd_kafka_headers_t *hdrs = NULL;
		const void *value = NULL;
		size_t		size = 0;

		if (msg == NULL)
			return false;
		if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
		{
			rd_kafka_message_destroy(msg);
			continue;
		}

		inbox_msg = msg;
		m->err = (int) msg->err;
		m->topic = msg->rkt ? rd_kafka_topic_name(msg->rkt) : NULL;
		m->partition = msg->partition;
		m->offset = msg->offset;
		if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			strlcpy(inbox_msg_error, rd_kafka_message_errstr(msg), sizeof(inbox_msg_error));
			oms_kafka_redact(inbox_msg_error, sizeof(inbox_msg_error));
			m->errtext = inbox_msg_error;
			return true;
		}

		m->value = msg->payload;
		m->valuelen = msg->payload ? msg->len : 0;
		if (rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR &&
			rd_kafka_header_get_last(hdrs, "ce_id", &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR &&
			value != NULL)
		{
			m->id = value;
			m->idlen = size;
		}
		return true;
	}
	return false;
}

/*
 * The message in hand was applied and its transaction committed: stores
 * its offset for the next commit and lets it go.  A failed store (the
 * partition was taken away meanwhile) is reported by
 * oms_kafka_inbox_serve(); the new owner gets the reply again and finds it
 * in the inbox.
 */
void
oms_kafka_inbox_ack(void)
{
	rd_kafka_topic_partition_list_t *offsets;
	rd_kafka_resp_err_t err;

	if (inbox_msg == NULL || consumer == NULL || inbox_msg->rkt == NULL)
	{
		release_inbox_message();
		return;
	}

	offsets = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(offsets, rd_kafka_topic_name(inbox_msg->rkt),
									  inbox_msg->partition)->offset = inbox_msg->offset + 1;
	err = rd_kafka_offsets_store(consumer, offsets);
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
		consumer_offsets_stored = true;
	else
		note_client_error(&commit_errors, err, rd_kafka_err2str(err));
	rd_kafka_topic_partition_list_destroy(offsets);
	release_inbox_message();
}

/*
 * The message in hand could not be applied: seeks its partition back to
 * it so that it comes again, and lets it go.  The seek moves the
 * partition's version on, so later messages of the partition fetched
 * already are discarded and fetched again after it.  When the seek cannot
 * even start, the consumer is rebuilt, which resumes from the committed
 * offsets.
 */
void
oms_kafka_inbox_rewind(void)
{
	rd_kafka_topic_partition_list_t *partitions;
	rd_kafka_error_t *error;

	if (inbox_msg == NULL || consumer == NULL || inbox_msg->rkt == NULL)
	{
		release_inbox_message();
		return;
	}

	partitions = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(partitions, rd_kafka_topic_name(inbox_msg->rkt),
									  inbox_msg->partition)->offset = inbox_msg->offset;
	error = rd_kafka_seek_partitions(consumer, partitions, 0);	/* 0: does not wait */
	if (error)
	{
		note_client_error(&consumer_errors, rd_kafka_error_code(error),
						  rd_kafka_error_string(error));
		rd_kafka_error_destroy(error);
		consumer_broken = true;
	}
	else if (partitions->elems[0].err != RD_KAFKA_RESP_ERR_NO_ERROR &&
			 partitions->elems[0].err != RD_KAFKA_RESP_ERR__IN_PROGRESS)
	{
		note_client_error(&consumer_errors, partitions->elems[0].err,
						  rd_kafka_err2str(partitions->elems[0].err));
		consumer_broken = true;
	}
	rd_kafka_topic_partition_list_destroy(partitions);
	release_inbox_message();
}

/*
 * Commits the offsets stored since the last commit, asynchronously; after
 * a failed commit, not before KAFKA_COMMIT_RETRY_MS passed.
 */
void
oms_kafka_inbox_commit(void)
{
	rd_kafka_resp_err_t err;

	if (consumer == NULL || !consumer_offsets_stored)
		return;
	if (commit_failed_at != 0 &&
		!TimestampDifferenceExceeds(commit_failed_at, GetCurrentTimestamp(), KAFKA_COMMIT_RETRY_MS))
		return;
	consumer_offsets_stored = false;
	err = rd_kafka_commit(consumer, NULL, 1);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
		note_client_error(&commit_errors, err, rd_kafka_err2str(err));
}

/* A number that changes whenever the consumer's assignment does. */
uint32
oms_kafka_inbox_assignment_changes(void)
{
	return consumer_assignment_changes;
}

/*
 * The assigned partitions and the consumer's lag: per partition the high
 * watermark seen by the last fetch minus the position (the offset after
 * the last message polled), summed over the partitions where both are
 * known; -1 when none is (no message polled since the assignment).  Local
 * state only, nothing is asked of the brokers.
 */
int64
oms_kafka_inbox_lag(int *npartitions)
{
	rd_kafka_topic_partition_list_t *positions;
	int64		lag = -1;

	*npartitions = 0;
	if (consumer == NULL || consumer_assignment == NULL || consumer_assignment->cnt == 0)
		return -1;

	*npartitions = consumer_assignment->cnt;
	positions = rd_kafka_topic_partition_list_copy(consumer_assignment);
	if (rd_kafka_position(consumer, positions) == RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		for (int i = 0; i < positions->cnt; i++)
		{
			rd_kafka_topic_partition_t *p = &positions->elems[i];
			int64_t		low;
			int64_t		high;

			if (p->err != RD_KAFKA_RESP_ERR_NO_ERROR || p->offset < 0)
				continue;
			if (rd_kafka_get_watermark_offsets(consumer, p->topic, p->partition,
											   &low, &high) != RD_KAFKA_RESP_ERR_NO_ERROR ||
				high < 0)
				continue;
			lag = Max(lag, 0) + Max(high - p->offset, 0);
		}
	}
	rd_kafka_topic_partition_list_destroy(positions);
	return lag;
}

/* Text of a consumer error code, for the inbox's log lines. */
const char *
oms_kafka_err_name(int err)
{
	return rd_kafka_err2name((rd_kafka_resp_err_t) err);
}

/* ---------------------------------------------------------------- exit */

void
oms_kafka_shutdown(void)
{
	oms_kafka_end_batch();
	destroy_producer();
	destroy_consumer();
}

/* before_shmem_exit callback: bounded, never flushes. */
static void
kafka_exit(int code, Datum arg)
{
	oms_kafka_shutdown();
}
