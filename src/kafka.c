/*-------------------------------------------------------------------------
 *
 * kafka.c
 *	  What the two Kafka clients of a worker share: the wake-up pipe, the
 *	  serving of librdkafka's log queues and client errors on the worker's
 *	  thread, properties from the oms.kafka_* settings, keeping a client in
 *	  line with the settings (kafka_client_ensure) and error
 *	  classification.  The relay's producer is kafka_producer.c, the
 *	  inbox's reply consumer kafka_consumer.c; each destroys itself,
 *	  boundedly, when the worker exits.
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

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/elog.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "guc.h"
#include "log.h"
#include "kafka_int.h"

/*
 * librdkafka log lines and client errors logged per oms.log_min_interval
 * (no limit when it is 0); the rest are counted.  A broker outage makes
 * librdkafka repeat its connection errors: they stop after the burst.
 */
#define KAFKA_LOG_BURST 10

/* Pipe every queue writes to when it becomes non-empty; [0] is read. */
int			kafka_wake_pipe[2] = {-1, -1};

/* The served database, which names the clients and the consumer group. */
char		kafka_dbname[NAMEDATALEN];

/* Log rate limit, shared by librdkafka log lines and client errors. */
static TimestampTz log_window_start = 0;
static int	log_window_count = 0;
static int	log_suppressed = 0;


/* ---------------------------------------------------------------- errors of clients */

/*
 * Keeps the last client error for logging on the worker's thread: only
 * copies (and redacts, which allocates nothing either).
 */
void
kafka_note_client_error(ClientErrors *errors, int err, const char *reason)
{
	errors->code = err;
	strlcpy(errors->reason, reason ? reason : "", sizeof(errors->reason));
	oms_kafka_redact(errors->reason, sizeof(errors->reason));
	errors->unlogged++;
}

/* ---------------------------------------------------------------- logging */

/* True when one more line may be logged in the current window. */
bool
kafka_log_allowed(void)
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
void
kafka_serve_log_queue(rd_kafka_queue_t *queue, const char *who)
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
				(elevel != LOG || kafka_log_allowed()))
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

void
kafka_log_client_errors(ClientErrors *errors, const char *who)
{
	if (errors->unlogged == 0)
		return;
	if (kafka_log_allowed())
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

	if (kafka_wake_pipe[0] < 0)
		return;
	while (read(kafka_wake_pipe[0], buf, sizeof(buf)) > 0)
		;
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

/* ---------------------------------------------------------------- lifecycle */

/*
 * Called once by the worker after its signal setup: remembers the
 * database and opens the wake-up pipe.  Each client arranges for its own
 * bounded destruction at exit when it is first built.
 */
void
oms_kafka_init(const char *dbname)
{
	strlcpy(kafka_dbname, dbname, sizeof(kafka_dbname));

	if (pipe(kafka_wake_pipe) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create the oms relay wake-up pipe: %m")));
	for (int i = 0; i < 2; i++)
	{
		int			flags = fcntl(kafka_wake_pipe[i], F_GETFL);

		if (flags < 0 || fcntl(kafka_wake_pipe[i], F_SETFL, flags | O_NONBLOCK) < 0 ||
			fcntl(kafka_wake_pipe[i], F_SETFD, FD_CLOEXEC) < 0)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not make the oms relay wake-up pipe non-blocking: %m")));
	}

}

/* The read end of the pipe that signals delivery reports and log lines. */
int
oms_kafka_event_fd(void)
{
	return kafka_wake_pipe[0];
}

/* ---------------------------------------------------------------- properties */

bool
kafka_set_property(rd_kafka_conf_t *conf, const char *name, const char *value,
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
bool
kafka_apply_user_properties(rd_kafka_conf_t *conf, const char *config,
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
		if (!kafka_set_property(conf, props[i].name, props[i].value, errbuf, errlen))
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
OmsKafkaFile *
kafka_apply_file_properties(rd_kafka_conf_t *conf, const char *const *reserved,
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
		if (!kafka_set_property(conf, p->name, p->value, reason, sizeof(reason)))
		{
			snprintf(errbuf, errlen, "line %d of oms.kafka_config_file \"%s\": %s",
					 p->line, file->path, reason);
			oms_kafka_file_release(file);
			return NULL;
		}
	}
	return file;
}

/* Destroys the client and forgets what it was built from or refused. */
static void
forget_client(KafkaClient *client)
{
	client->destroy();
	if (client->settings)
	{
		pfree(client->settings);
		client->settings = NULL;
	}
	if (client->refused_settings)
	{
		pfree(client->refused_settings);
		client->refused_settings = NULL;
	}
}

/*
 * Makes a client match the current settings: none unless "wanted" and
 * brokers are set, the existing one when nothing it was built from
 * changed (and it is usable), else a new one.  Settings librdkafka refused
 * are not tried again until they change.  *changed is set when the state
 * differs from the previous call's (the caller logs it); for
 * OMS_KAFKA_BAD_CONFIG the reason is in errbuf.
 */
OmsKafkaState
kafka_client_ensure(KafkaClient *client, bool wanted, bool *changed,
					char *errbuf, size_t errlen)
{
	char	   *settings;
	MemoryContext oldcxt;

	*changed = false;
	errbuf[0] = '\0';

	if (!wanted || oms_kafka_brokers == NULL || oms_kafka_brokers[0] == '\0')
	{
		if (client->settings != NULL || client->refused_settings != NULL)
		{
			forget_client(client);
			*changed = true;
		}
		return OMS_KAFKA_OFF;
	}

	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	settings = client->current_settings();
	MemoryContextSwitchTo(oldcxt);

	if (client->settings != NULL && client->usable() &&
		strcmp(settings, client->settings) == 0)
	{
		pfree(settings);
		return OMS_KAFKA_READY;
	}
	if (client->refused_settings != NULL && strcmp(settings, client->refused_settings) == 0)
	{
		pfree(settings);
		snprintf(errbuf, errlen, "%s", client->refused_reason);
		return OMS_KAFKA_BAD_CONFIG;
	}

	/* Something changed: the old client goes, a new one is built. */
	forget_client(client);
	*changed = true;
	if (!client->create(client->refused_reason, sizeof(client->refused_reason)))
	{
		client->refused_settings = settings;
		snprintf(errbuf, errlen, "%s", client->refused_reason);
		return OMS_KAFKA_BAD_CONFIG;
	}
	client->settings = settings;
	return OMS_KAFKA_READY;
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

/* Text of a consumer error code, for the inbox's log lines. */
const char *
oms_kafka_err_name(int err)
{
	return rd_kafka_err2name((rd_kafka_resp_err_t) err);
}
