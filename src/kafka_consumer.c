/*-------------------------------------------------------------------------
 *
 * kafka_consumer.c
 *	  The reply consumer of the inbox (src/inbox.c): a consumer in group
 *	  oms.kafka_consumer_group || '-' || database, built from the same
 *	  settings as the producer, with manual offset storage: the inbox
 *	  acknowledges a message only after the transaction that applied it
 *	  committed.
 *
 * What runs on which thread, and why the callbacks only copy, is in
 * kafka.c.
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
#include "kafka_consumer.h"
#include "log.h"
#include "kafka_int.h"

static void kafka_consumer_destroy(void);

/* Least time between a failed offset commit of the reply consumer and its retry. */
#define KAFKA_COMMIT_RETRY_MS 1000

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
static OmsKafkaFile *consumer_file = NULL;
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
	kafka_note_client_error(&consumer_errors, err, reason);
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
		kafka_note_client_error(&commit_errors, err, rd_kafka_err2str(err));
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
			kafka_note_client_error(&consumer_errors, rd_kafka_error_code(error),
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
				kafka_note_client_error(&consumer_errors, rd_kafka_error_code(error),
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
	return kafka_set_property(conf, "client.id", consumer_client_id, errbuf, errlen) &&
		kafka_set_property(conf, "bootstrap.servers", oms_kafka_brokers, errbuf, errlen) &&
		kafka_set_property(conf, "group.id", group, errbuf, errlen) &&
		kafka_set_property(conf, "enable.auto.commit", "false", errbuf, errlen) &&
		kafka_set_property(conf, "enable.auto.offset.store", "false", errbuf, errlen) &&
		kafka_set_property(conf, "auto.offset.reset", "earliest", errbuf, errlen) &&
		kafka_set_property(conf, "session.timeout.ms", "6000", errbuf, errlen) &&
		kafka_set_property(conf, "heartbeat.interval.ms", "1000", errbuf, errlen) &&
		kafka_set_property(conf, "log.queue", "true", errbuf, errlen) &&
		kafka_set_property(conf, "socket.timeout.ms", "10000", errbuf, errlen) &&
		kafka_set_property(conf, "reconnect.backoff.max.ms", "1000", errbuf, errlen) &&
		kafka_set_property(conf, "log.connection.close", "false", errbuf, errlen) &&
		kafka_set_property(conf, "queued.min.messages", "1000", errbuf, errlen) &&
		kafka_set_property(conf, "fetch.wait.max.ms", "100", errbuf, errlen) &&
		kafka_set_property(conf, "socket.nagle.disable", "true", errbuf, errlen) &&
		kafka_set_property(conf, "queued.max.messages.kbytes", "8192", errbuf, errlen);
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
		kafka_consumer_destroy();
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
	rd_kafka_queue_io_event_enable(consumer_queue, kafka_wake_pipe[1], "1", 1);
	rd_kafka_queue_io_event_enable(consumer_log_queue, kafka_wake_pipe[1], "1", 1);

	topics = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(topics, oms_kafka_payment_replies_topic,
									  RD_KAFKA_PARTITION_UA);
	err = rd_kafka_subscribe(rk, topics);
	rd_kafka_topic_partition_list_destroy(topics);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		snprintf(errbuf, errlen, "could not subscribe to topic \"%s\": %s",
				 oms_kafka_payment_replies_topic, rd_kafka_err2str(err));
		kafka_consumer_destroy();
		return false;
	}
	return true;
}

/* before_shmem_exit callback: bounded, never flushes. */
static void
consumer_exit(int code, Datum arg)
{
	kafka_consumer_destroy();
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
	static bool exit_hook = false;

	if (oms_kafka_payment_replies_topic == NULL || oms_kafka_payment_replies_topic[0] == '\0')
	{
		snprintf(errbuf, errlen, "oms.kafka_payment_replies_topic is empty");
		rd_kafka_conf_destroy(conf);
		return false;
	}
	if (!exit_hook)
	{
		before_shmem_exit(consumer_exit, (Datum) 0);
		exit_hook = true;
	}
	snprintf(consumer_client_id, sizeof(consumer_client_id), "oms-inbox-%s", kafka_dbname);
	group = psprintf("%s-%s", oms_kafka_consumer_group ? oms_kafka_consumer_group : "",
					 kafka_dbname);
	if (!set_consumer_properties(conf, group, errbuf, errlen) ||
		!kafka_apply_user_properties(conf, oms_kafka_config, consumer_reserved_properties,
									 errbuf, errlen))
		goto fail;
	file = kafka_apply_file_properties(conf, consumer_reserved_properties, errbuf, errlen);
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
kafka_consumer_destroy(void)
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
		kafka_serve_log_queue(consumer_log_queue, "inbox");
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
}

static bool
consumer_usable(void)
{
	return consumer != NULL && !consumer_broken;
}

static KafkaClient consumer_client = {
	.current_settings = consumer_current_settings,
	.usable = consumer_usable,
	.create = create_consumer,
	.destroy = kafka_consumer_destroy,
};

/*
 * Makes the reply consumer match the settings (kafka_client_ensure): none
 * unless "wanted" and brokers are set; a broken one is rebuilt.
 */
OmsKafkaState
oms_kafka_inbox_ensure(bool wanted, bool *changed, char *errbuf, size_t errlen)
{
	return kafka_client_ensure(&consumer_client, wanted, changed, errbuf, errlen);
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

	kafka_serve_log_queue(consumer_log_queue, "inbox");
	if (consumer_errors.unlogged > 0)
	{
		snprintf(errbuf, errlen, "Kafka client error %s: %s",
				 rd_kafka_err2name((rd_kafka_resp_err_t) consumer_errors.code),
				 consumer_errors.reason);
		had_errors = true;
	}
	kafka_log_client_errors(&consumer_errors, "inbox");
	if (commit_errors.unlogged > 0)
	{
		if (kafka_log_allowed())
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
		kafka_note_client_error(&commit_errors, err, rd_kafka_err2str(err));
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
		kafka_note_client_error(&consumer_errors, rd_kafka_error_code(error),
								rd_kafka_error_string(error));
		rd_kafka_error_destroy(error);
		consumer_broken = true;
	}
	else if (partitions->elems[0].err != RD_KAFKA_RESP_ERR_NO_ERROR &&
			 partitions->elems[0].err != RD_KAFKA_RESP_ERR__IN_PROGRESS)
	{
		kafka_note_client_error(&consumer_errors, partitions->elems[0].err,
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
		kafka_note_client_error(&commit_errors, err, rd_kafka_err2str(err));
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
