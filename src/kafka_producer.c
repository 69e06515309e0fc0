/*-------------------------------------------------------------------------
 *
 * kafka_producer.c
 *	  The Kafka producer of the outbox relay: one idempotent producer per
 *	  worker, built lazily from the oms.kafka_* settings and rebuilt when a
 *	  reload changes one of them, and the batches the relay produces with
 *	  it (delivery reports into the relay's report array).
 *
 * Settings that librdkafka refuses are reported once and keep the relay
 * off until they change; they are not retried in a loop.  What runs on
 * which thread, and why the callbacks only copy, is in kafka.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "guc.h"
#include "kafka_producer.h"
#include "kafka_int.h"

/* Room in message.max.bytes above oms.kafka_max_message_bytes for record overhead. */
#define KAFKA_MESSAGE_HEADROOM 65536

/* librdkafka's own upper bound of message.max.bytes. */
#define KAFKA_MESSAGE_MAX_BYTES 1000000000

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

/* The file the producer was built from (its secrets redact its texts). */
static OmsKafkaFile *producer_file = NULL;

static char client_id[NAMEDATALEN + 16];

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

static ClientErrors producer_errors;

static bool create_producer(char *errbuf, size_t errlen);
static void kafka_producer_destroy(void);

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
	kafka_note_client_error(&producer_errors, err, reason);
}

/* ---------------------------------------------------------------- lifecycle */

/*
 * The settings the producer depends on, as one string: a different string
 * means a different producer.
 */
static char *
producer_current_settings(void)
{
	return psprintf("%s\n%s\n%d\n%d\n" UINT64_FORMAT,
					oms_kafka_brokers ? oms_kafka_brokers : "",
					oms_kafka_config ? oms_kafka_config : "",
					oms_relay_ack_timeout, oms_kafka_max_message_bytes,
					oms_kafka_file_generation());
}

/* before_shmem_exit callback: bounded, never flushes. */
static void
producer_exit(int code, Datum arg)
{
	oms_kafka_end_batch();
	kafka_producer_destroy();
}

/*
 * The producer's own properties: ours first, then oms.kafka_config may
 * override all but the reserved ones.  False with the reason in errbuf.
 */
static bool
set_producer_properties(rd_kafka_conf_t *conf, char *errbuf, size_t errlen)
{
	char		num[32];
	int64		max_bytes;

	max_bytes = Min((int64) oms_kafka_max_message_bytes + KAFKA_MESSAGE_HEADROOM,
					(int64) KAFKA_MESSAGE_MAX_BYTES);
	if (!kafka_set_property(conf, "client.id", client_id, errbuf, errlen) ||
		!kafka_set_property(conf, "bootstrap.servers", oms_kafka_brokers, errbuf, errlen) ||
		!kafka_set_property(conf, "enable.idempotence", "true", errbuf, errlen) ||
		!kafka_set_property(conf, "log.queue", "true", errbuf, errlen) ||

	/*
	 * Latency first: a batch is produced at once (the relay batches already,
	 * and waits for the whole batch: lingering only delays its last messages;
	 * measured, 0 instead of 1 ms drains a backlog a third faster), and with
	 * Nagle's algorithm on, small produce requests wait for the broker's
	 * delayed ACK (about 40 ms) whenever more than one is in flight.
	 */
		!kafka_set_property(conf, "linger.ms", "0", errbuf, errlen) ||
		!kafka_set_property(conf, "socket.nagle.disable", "true", errbuf, errlen) ||

	/*
	 * The relay has one batch in flight at a time; one request per connection
	 * keeps a batch from queuing behind the broker's delayed ACKs (measured:
	 * 10x lower latency against the test broker).
	 */
		!kafka_set_property(conf, "max.in.flight.requests.per.connection", "1", errbuf, errlen) ||
		!kafka_set_property(conf, "socket.timeout.ms", "10000", errbuf, errlen) ||
		!kafka_set_property(conf, "reconnect.backoff.max.ms", "1000", errbuf, errlen) ||
		!kafka_set_property(conf, "log.connection.close", "false", errbuf, errlen) ||
	/* Java's partitioner: the same key lands where Java clients put it. */
		!kafka_set_property(conf, "partitioner", "murmur2_random", errbuf, errlen))
		return false;
	snprintf(num, sizeof(num), "%d", oms_relay_ack_timeout);
	if (!kafka_set_property(conf, "message.timeout.ms", num, errbuf, errlen))
		return false;
	snprintf(num, sizeof(num), INT64_FORMAT, max_bytes);
	if (!kafka_set_property(conf, "message.max.bytes", num, errbuf, errlen))
		return false;
	return kafka_apply_user_properties(conf, oms_kafka_config, reserved_properties, errbuf, errlen);
}

/*
 * Takes a new client: its queues, served on the worker's thread and
 * written to the wake-up pipe.  False (and no producer) when the log
 * queue cannot be set.
 */
static bool
start_producer(rd_kafka_t *rk, OmsKafkaFile *file, char *errbuf, size_t errlen)
{
	producer = rk;
	producer_file = file;
	main_queue = rd_kafka_queue_get_main(rk);
	log_queue = rd_kafka_queue_new(rk);
	if (rd_kafka_set_log_queue(rk, log_queue) != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		snprintf(errbuf, errlen, "could not set the librdkafka log queue");
		kafka_producer_destroy();
		return false;
	}
	rd_kafka_queue_io_event_enable(main_queue, kafka_wake_pipe[1], "1", 1);
	rd_kafka_queue_io_event_enable(log_queue, kafka_wake_pipe[1], "1", 1);
	transport_error_at = 0;
	acked_at = 0;
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
	OmsKafkaFile *file = NULL;
	rd_kafka_t *rk;
	char		reason[512];
	static bool exit_hook = false;

	if (!exit_hook)
	{
		before_shmem_exit(producer_exit, (Datum) 0);
		exit_hook = true;
	}
	snprintf(client_id, sizeof(client_id), "oms-relay-%s", kafka_dbname);

	if (!set_producer_properties(conf, errbuf, errlen))
		goto fail;
	file = kafka_apply_file_properties(conf, reserved_properties, errbuf, errlen);
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
	return start_producer(rk, file, errbuf, errlen);

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
kafka_producer_destroy(void)
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
		kafka_serve_log_queue(log_queue, "relay");
		rd_kafka_set_log_queue(producer, NULL);
		rd_kafka_queue_destroy(log_queue);
		log_queue = NULL;
	}
	rd_kafka_destroy_flags(producer, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
	producer = NULL;
	/* Only now: its last log lines were redacted with the file's secrets. */
	oms_kafka_file_release(producer_file);
	producer_file = NULL;
}

static bool
producer_usable(void)
{
	return producer != NULL;
}

static KafkaClient producer_client = {
	.current_settings = producer_current_settings,
	.usable = producer_usable,
	.create = create_producer,
	.destroy = kafka_producer_destroy,
};

/*
 * Makes the producer match the current settings (kafka_client_ensure): none
 * when no brokers are set.
 */
OmsKafkaState
oms_kafka_ensure(bool *changed, char *errbuf, size_t errlen)
{
	return kafka_client_ensure(&producer_client, true, changed, errbuf, errlen);
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
	kafka_serve_log_queue(log_queue, "relay");
	kafka_log_client_errors(&producer_errors, "relay");
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
	kafka_producer_destroy();
	return true;
}
