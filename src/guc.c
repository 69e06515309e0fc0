/*-------------------------------------------------------------------------
 *
 * guc.c
 *	  The oms.* configuration settings.
 *
 * Every setting lives under the "oms." prefix, which is reserved so that a
 * misspelt oms setting is reported instead of silently becoming a
 * placeholder.  docs/configuration.md describes each one.  The engine's
 * and the workers' settings come first, then those of operations (tracing,
 * health thresholds, maintenance and retention, log rate limiting).  SQL
 * reads most of them with current_setting(), so durations carry GUC units
 * and read as intervals.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "nodes/pg_list.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/varlena.h"

#include "guc.h"
#include "kafka_config.h"
#include "trace.h"

static void define_ops_gucs(void);

/* How long an idempotency key replays its response, in seconds. */
static int	oms_idempotency_ttl = 24 * 60 * 60;

/* Saga engine: see docs/configuration.md.  Read from SQL with current_setting(). */
static int	oms_reservation_ttl = 15 * 60;
static int	oms_step_timeout = 30 * 1000;
static int	oms_retry_base = 1000;
static int	oms_retry_max = 60 * 1000;
static int	oms_max_attempts = 5;

/* Set by a superuser while restoring a dump: rows arrive in their final status. */
bool		oms_restoring = false;

/* Input limits: guard against absurd orders before any arithmetic. */
int			oms_max_order_items = 1000;
int			oms_max_item_quantity = 1000000;

/*
 * Largest metadata of an order, as JSON text.  Metadata travels in every
 * event of its order, so the ceiling keeps the largest order far below
 * what the relay can publish (see oms._check_publishable).
 */
int			oms_max_metadata_bytes = 16384;

/*
 * Most payment replies that could not be applied kept as open dead letters
 * (with their inbox rows); further ones are only counted.  Anyone who can
 * write to the replies topic can send them.
 */
static int	oms_max_rejected_replies = 10000;

/*
 * oms.database_name: comma-separated databases the background worker
 * serves, one worker each.  Read by the postmaster when it sizes shared
 * memory, hence PGC_POSTMASTER.  An empty list starts no worker at all.
 */
char	   *oms_database_name = NULL;

/*
 * oms.worker_enabled: off pauses the workers.  They stay connected and keep
 * looping at oms.worker_naptime, so switching back on needs only a reload.
 */
bool		oms_worker_enabled = true;

/*
 * oms.worker_naptime: the longest a worker sleeps between two batches when
 * nobody wakes it, and how often the launcher looks for missing workers.
 * Committed work normally wakes the worker at once; this timeout only
 * covers wakes that were missed.
 */
int			oms_worker_naptime = 1000;

/*
 * oms.worker_batch_size: saga steps one worker transaction handles at
 * most.  Bounds transaction length and lock time; a full batch makes the
 * worker start the next one without sleeping.
 */
int			oms_worker_batch_size = 100;

/*
 * oms.saga_workers: processes per served database that run saga batches,
 * the main worker (which also runs the relay, the inbox and maintenance)
 * included.  The extra ones only run sagas; a reload starts or stops them.
 */
int			oms_saga_workers = 2;

/*
 * The outbox relay (src/relay.c, src/kafka_producer.c).  A reload reaches the
 * worker, which rebuilds its Kafka producer when a setting the producer
 * was built from changed.  The three settings oms._relay_claim and
 * oms._relay_settle read with current_setting() (topic, topic mode, max
 * attempts) are PGC_SUSET, so a superuser can also drive those functions
 * by hand with other values; the rest only matter to the worker and are
 * PGC_SIGHUP.  docs/configuration.md describes each.
 */
#define OMS_TOPIC_SINGLE 0
#define OMS_TOPIC_PER_AGGREGATE 1
/* Ceiling of oms.kafka_max_message_bytes, below librdkafka's own. */
#define OMS_KAFKA_MAX_MESSAGE_LIMIT 900000000

char	   *oms_kafka_brokers = NULL;
static char *oms_kafka_topic = NULL;
static int	oms_kafka_topic_mode = OMS_TOPIC_SINGLE;
char	   *oms_kafka_config = NULL;
char	   *oms_kafka_config_file = NULL;
int			oms_relay_batch_size = 5000;
int			oms_relay_ack_timeout = 10000;
static int	oms_publish_max_attempts = 10;
int			oms_kafka_max_message_bytes = 1000000;
int			oms_relay_breaker_failures = 5;
int			oms_relay_breaker_cooldown = 5000;

static const struct config_enum_entry kafka_topic_mode_options[] = {
	{"single", OMS_TOPIC_SINGLE, false},
	{"per_aggregate", OMS_TOPIC_PER_AGGREGATE, false},
	{NULL, 0, false}
};

static void define_saga_gucs(void);
static void define_relay_gucs(void);
static bool check_database_name(char **newval, void **extra, GucSource source);
static bool check_kafka_topic(char **newval, void **extra, GucSource source);
static bool check_kafka_config(char **newval, void **extra, GucSource source);

/*
 * Splits an oms.database_name value into a list of names pointing into
 * "rawstring", which is modified.  Names keep their case (they are
 * database names, not SQL identifiers); double quotes allow a comma in a
 * name.  Returns false on a syntax error.
 */
bool
oms_split_database_names(char *rawstring, List **names)
{
	return SplitGUCList(rawstring, ',', names);
}

/*
 * Rejects lists the launcher could not serve.  Like any invalid value of an
 * extension's setting in postgresql.conf, it is reported as a WARNING at
 * startup and the default applies.
 */
static bool
check_database_name(char **newval, void **extra, GucSource source)
{
	char	   *raw;
	List	   *names;
	ListCell   *lc;
	bool		ok = true;

	if (*newval == NULL)
		return true;

	raw = pstrdup(*newval);
	if (!oms_split_database_names(raw, &names))
	{
		GUC_check_errdetail("List syntax is invalid.");
		pfree(raw);
		return false;
	}

	if (list_length(names) > OMS_MAX_DATABASES)
	{
		GUC_check_errdetail("At most %d databases can be listed.", OMS_MAX_DATABASES);
		ok = false;
	}

	foreach(lc, names)
	{
		const char *name = lfirst(lc);

		if (!ok)
			break;
		if (strlen(name) >= NAMEDATALEN)
		{
			GUC_check_errdetail("Database name \"%s\" is longer than %d bytes.",
								name, NAMEDATALEN - 1);
			ok = false;
			break;
		}
		for (ListCell *prev = list_head(names); prev != lc; prev = lnext(names, prev))
		{
			if (strcmp(lfirst(prev), name) == 0)
			{
				GUC_check_errdetail("Database \"%s\" is listed twice.", name);
				ok = false;
				break;
			}
		}
	}

	list_free(names);
	pfree(raw);
	return ok;
}

void
oms_define_gucs(void)
{
	define_saga_gucs();
	define_relay_gucs();
	define_ops_gucs();

	DefineCustomIntVariable("oms.idempotency_ttl",
							"How long an idempotency key replays the stored response.",
							"After this time oms_purge_idempotency_keys() removes the key and "
							"the key may be used for a new request.",
							&oms_idempotency_ttl,
							24 * 60 * 60, 1, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("oms.max_order_items",
							"Largest number of lines accepted in one order.",
							NULL,
							&oms_max_order_items,
							1000, 1, 100000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("oms.max_item_quantity",
							"Largest quantity accepted on one order line.",
							NULL,
							&oms_max_item_quantity,
							1000000, 1, INT_MAX,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("oms.max_metadata_bytes",
							"Largest metadata of an order, as JSON text.",
							"oms_create_order refuses larger metadata with SQLSTATE 54000.",
							&oms_max_metadata_bytes,
							16384, 256, 262144,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("oms.max_rejected_replies",
							"Most payment replies that could not be applied kept as open dead letters.",
							"Further rejected replies are counted in oms_inbox_replies_total but not stored.",
							&oms_max_rejected_replies,
							10000, 0, 100000000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);
	DefineCustomBoolVariable("oms.restoring",
							 "Accepts orders inserted in any status, for restoring a dump.",
							 "While on, inserted orders keep the status and version they carry. "
							 "Status changes by UPDATE stay guarded.",
							 &oms_restoring,
							 false,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("oms.database_name",
							   "Databases the oms background worker serves.",
							   "A comma-separated list; one worker runs in each listed "
							   "database that exists.  An empty list runs no worker.",
							   &oms_database_name,
							   "postgres",
							   PGC_POSTMASTER,
							   GUC_LIST_INPUT,
							   check_database_name, NULL, NULL);

	DefineCustomBoolVariable("oms.worker_enabled",
							 "Lets the oms background workers process work.",
							 "When off, the workers stay connected but do nothing.",
							 &oms_worker_enabled,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("oms.worker_naptime",
							"Longest sleep of an oms background worker between batches.",
							"Workers are woken when work is committed; this timeout "
							"covers missed wakes.  The launcher checks for missing "
							"workers at the same interval.",
							&oms_worker_naptime,
							1000, 10, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("oms.worker_batch_size",
							"Saga steps an oms background worker handles per transaction.",
							NULL,
							&oms_worker_batch_size,
							100, 1, 10000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("oms.saga_workers",
							"Processes per served database that run saga steps, the main worker included.",
							"The main worker also runs the outbox relay, the payment-reply consumer and maintenance; the others run saga batches only. A reload starts or stops the difference.",
							&oms_saga_workers,
							2, 1, OMS_MAX_SAGA_WORKERS,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("oms");
}

static const struct config_enum_entry payment_provider_options[] = {
	{"test", 0, false},
	{"kafka", 1, false},
	{NULL, 0, false}
};
static int	oms_payment_provider_choice = 0;

/* What oms_create_order does with a SKU that has no stock record anywhere. */
static const struct config_enum_entry unknown_skus_options[] = {
	{"accept", 0, false},
	{"refuse", 1, false},
	{NULL, 0, false}
};
static int	oms_unknown_skus_choice = 0;

/* Remote payment provider over Kafka (see src/inbox.c). */
static int	oms_payment_reply_timeout = 30 * 1000;
static char *oms_kafka_payment_commands_topic = NULL;
char	   *oms_kafka_payment_replies_topic = NULL;
char	   *oms_kafka_consumer_group = NULL;

bool
oms_payment_provider_is_kafka(void)
{
	return oms_payment_provider_choice == 1;
}

/*
 * Settings of the saga engine.  Durations are GUC units so that SQL reads
 * them as intervals ('15min', '30s').
 */
static void
define_saga_gucs(void)
{
	DefineCustomIntVariable("oms.reservation_ttl",
							"How long a reservation holds stock before it expires.",
							"An expired reservation stops counting against availability at once.",
							&oms_reservation_ttl,
							15 * 60, 1, INT_MAX,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("oms.step_timeout",
							"How long a saga step may wait for an answer before it counts as failed.",
							NULL,
							&oms_step_timeout,
							30 * 1000, 1, INT_MAX,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("oms.retry_base",
							"First retry delay of a transiently failed saga step; doubles per attempt.",
							NULL,
							&oms_retry_base,
							1000, 1, INT_MAX,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("oms.retry_max",
							"Largest retry delay of a saga step.",
							NULL,
							&oms_retry_max,
							60 * 1000, 1, INT_MAX,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("oms.max_attempts",
							"Attempts of a saga step (or compensation) before it counts as failed.",
							NULL,
							&oms_max_attempts,
							5, 1, 1000,
							PGC_SUSET, 0,
							NULL, NULL, NULL);
	DefineCustomEnumVariable("oms.payment_provider",
							 "Payment provider the saga engine calls.",
							 "test is the built-in deterministic provider; kafka sends commands "
							 "through the outbox and waits for replies.",
							 &oms_payment_provider_choice,
							 0, payment_provider_options,
							 PGC_SUSET, 0,
							 NULL, NULL, NULL);
	DefineCustomEnumVariable("oms.unknown_skus",
							 "What oms_create_order does with a SKU that has no stock record in any location.",
							 "accept takes the order (it fails at reservation unless stock arrives first: "
							 "pre-orders); refuse raises OM005 and writes nothing.  Any role may set it "
							 "for its own session or transaction.",
							 &oms_unknown_skus_choice,
							 0, unknown_skus_options,
							 PGC_USERSET, 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("oms.payment_reply_timeout",
							"How long a payment command waits for its reply from the remote provider.",
							NULL,
							&oms_payment_reply_timeout,
							30 * 1000, 1, INT_MAX,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomStringVariable("oms.kafka_payment_commands_topic",
							   "Kafka topic of payment commands to the remote provider.",
							   NULL,
							   &oms_kafka_payment_commands_topic,
							   "oms.payment-commands",
							   PGC_SUSET, 0,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("oms.kafka_payment_replies_topic",
							   "Kafka topic the worker reads payment replies from.",
							   NULL,
							   &oms_kafka_payment_replies_topic,
							   "oms.payment-replies",
							   PGC_SIGHUP, 0,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("oms.kafka_consumer_group",
							   "Kafka consumer group of the reply consumer; the database name is appended.",
							   NULL,
							   &oms_kafka_consumer_group,
							   "oms",
							   PGC_SIGHUP, 0,
							   NULL, NULL, NULL);
}

/*
 * A Kafka topic name: 1 to 249 characters out of [a-zA-Z0-9._-], and not
 * "." or "..".  Checked here so that a typo is refused at reload instead of
 * turning every event into a delivery failure.
 */
static bool
check_kafka_topic(char **newval, void **extra, GucSource source)
{
	const char *name = *newval;
	size_t		len;

	if (name == NULL)
		return true;

	len = strlen(name);
	if (len == 0 || len > 249)
	{
		GUC_check_errdetail("A Kafka topic name has 1 to 249 characters.");
		return false;
	}
	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
	{
		GUC_check_errdetail("\".\" and \"..\" are not valid Kafka topic names.");
		return false;
	}
	for (const char *c = name; *c; c++)
	{
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
			  (*c >= '0' && *c <= '9') || *c == '.' || *c == '_' || *c == '-'))
		{
			GUC_check_errdetail("A Kafka topic name consists of ASCII letters, digits, \".\", \"_\" and \"-\".");
			return false;
		}
	}
	return true;
}

/*
 * Refuses secret-bearing librdkafka properties in oms.kafka_config:
 * PostgreSQL logs a changed setting's value on reload, so credentials
 * belong in oms.kafka_config_file.  The value is split the way kafka.c
 * applies it; other syntax errors are left to the worker, which reports
 * them as refused settings.  The primary message is our own, because
 * PostgreSQL's default one quotes the refused value.
 */
static bool
check_kafka_config(char **newval, void **extra, GucSource source)
{
	MemoryContext cxt;
	MemoryContext oldcxt;
	OmsKafkaProperty *props;
	int			nprops;
	char	   *error;
	bool		ok = true;

	if (*newval == NULL)
		return true;

	/*
	 * The GUC_check_* texts live in ErrorContext, so the split can go with
	 * this.
	 */
	cxt = AllocSetContextCreate(CurrentMemoryContext, "oms.kafka_config check",
								ALLOCSET_SMALL_SIZES);
	oldcxt = MemoryContextSwitchTo(cxt);
	props = oms_kafka_split_config(*newval, &nprops, &error);
	for (int i = 0; i < nprops; i++)
	{
		if (!oms_kafka_is_secret_property(props[i].name))
			continue;
		GUC_check_errcode(ERRCODE_INVALID_PARAMETER_VALUE);
		GUC_check_errdetail("Values of oms.kafka_config reach the server log when they change.");

		/*
		 * Only a real property name is quoted: "password: xyz=" would quote a
		 * secret.
		 */
		if (oms_kafka_valid_property_name(props[i].name))
		{
			GUC_check_errmsg("oms.kafka_config cannot set secret property \"%s\"", props[i].name);
			GUC_check_errhint("Put \"%s\" in the file named by oms.kafka_config_file.", props[i].name);
		}
		else
		{
			GUC_check_errmsg("oms.kafka_config cannot set a secret property");
			GUC_check_errhint("Put it in the file named by oms.kafka_config_file.");
		}
		ok = false;
		break;
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(cxt);
	return ok;
}

/*
 * Settings of the outbox relay.  Durations are GUC units so that SQL reads
 * them with units; oms._relay_claim and oms._relay_settle read
 * oms.kafka_topic, oms.kafka_topic_mode and oms.publish_max_attempts with
 * current_setting().
 */
static void
define_relay_gucs(void)
{
	DefineCustomStringVariable("oms.kafka_brokers",
							   "Kafka bootstrap servers the outbox relay publishes to.",
							   "A comma-separated host:port list (librdkafka bootstrap.servers). "
							   "Empty turns the relay off.",
							   &oms_kafka_brokers,
							   "",
							   PGC_SIGHUP, 0,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("oms.kafka_topic",
							   "Kafka topic of the order events.",
							   "Used when oms.kafka_topic_mode is single.",
							   &oms_kafka_topic,
							   "oms.order-events",
							   PGC_SUSET, 0,
							   check_kafka_topic, NULL, NULL);
	DefineCustomEnumVariable("oms.kafka_topic_mode",
							 "How the outbox relay chooses the topic of an event.",
							 "single publishes every event to oms.kafka_topic; per_aggregate "
							 "publishes to oms.<aggregatetype>-events.",
							 &oms_kafka_topic_mode,
							 OMS_TOPIC_SINGLE, kafka_topic_mode_options,
							 PGC_SUSET, 0,
							 NULL, NULL, NULL);
	DefineCustomStringVariable("oms.kafka_config",
							   "Extra librdkafka producer properties of the outbox relay.",
							   "A comma-separated list of property=value pairs, e.g. "
							   "compression.type=lz4,linger.ms=5.  An item without \"=\" "
							   "continues the previous value (debug=broker,topic).  An invalid "
							   "property keeps the relay off until the setting changes.  "
							   "Secrets (sasl.password and the like) are refused: they go in "
							   "oms.kafka_config_file.",
							   &oms_kafka_config,
							   "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   check_kafka_config, NULL, NULL);
	DefineCustomStringVariable("oms.kafka_config_file",
							   "File of librdkafka properties, the only place for Kafka credentials.",
							   "One property=value per line, applied after oms.kafka_config to the "
							   "relay's producer and the reply consumer, and read again on reload.  "
							   "Only the server's user (or root) may have access to it.  A relative "
							   "path is relative to the data directory; empty means none.",
							   &oms_kafka_config_file,
							   "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("oms.relay_batch_size",
							"Outbox events the relay claims and publishes per batch.",
							NULL,
							&oms_relay_batch_size,
							5000, 1, OMS_RELAY_MAX_BATCH,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("oms.relay_ack_timeout",
							"Longest wait for the delivery reports of one relay batch.",
							"Events without a report by then are failed attempts and are "
							"published again later.  Also the producer's message.timeout.ms.",
							&oms_relay_ack_timeout,
							10000, 100, 15 * 60 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("oms.publish_max_attempts",
							"Publish attempts of an outbox event before it is dead-lettered.",
							NULL,
							&oms_publish_max_attempts,
							10, 1, 1000,
							PGC_SUSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("oms.kafka_max_message_bytes",
							"Largest Kafka message (key, value and headers) the relay publishes.",
							"A larger event is dead-lettered without an attempt.",
							&oms_kafka_max_message_bytes,
							1000000, 1024, OMS_KAFKA_MAX_MESSAGE_LIMIT,
							PGC_SIGHUP, GUC_UNIT_BYTE,
							NULL, NULL, NULL);
	DefineCustomIntVariable("oms.relay_breaker_failures",
							"Consecutive failed relay batches that open the circuit breaker.",
							"An open breaker stops publishing for oms.relay_breaker_cooldown, "
							"then a single event probes the brokers.",
							&oms_relay_breaker_failures,
							5, 1, 1000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("oms.relay_breaker_cooldown",
							"How long an open relay circuit breaker waits before a probe.",
							NULL,
							&oms_relay_breaker_cooldown,
							5000, 10, 60 * 60 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
}

/* ------------------------------------------------------------ operations */


/* The caller's W3C trace context; empty when the caller sends none. */
static char *oms_traceparent = NULL;

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

static void
define_ops_gucs(void)
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
