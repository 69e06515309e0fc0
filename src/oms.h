/*-------------------------------------------------------------------------
 *
 * oms.h
 *	  Declarations shared between the C files of the oms extension.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OMS_H
#define OMS_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"

/* guc.c: settings under the reserved "oms." prefix */
extern int	oms_idempotency_ttl;
extern bool oms_restoring;
extern int	oms_max_order_items;
extern int	oms_max_item_quantity;
extern int	oms_max_metadata_bytes;
extern char *oms_database_name;
extern bool oms_worker_enabled;
extern int	oms_worker_naptime;
extern int	oms_worker_batch_size;
extern int	oms_saga_workers;

/* Most processes oms.saga_workers may ask for per database. */
#define OMS_MAX_SAGA_WORKERS 8

/* The outbox relay's settings; see guc.c and docs/configuration.md. */
#define OMS_TOPIC_SINGLE 0
#define OMS_TOPIC_PER_AGGREGATE 1
#define OMS_RELAY_MAX_BATCH 10000
#define OMS_KAFKA_MAX_MESSAGE_LIMIT 900000000
extern char *oms_kafka_brokers;
extern char *oms_kafka_topic;
extern int	oms_kafka_topic_mode;
extern char *oms_kafka_config;
extern char *oms_kafka_config_file;
extern int	oms_relay_batch_size;
extern int	oms_relay_ack_timeout;
extern int	oms_publish_max_attempts;
extern int	oms_kafka_max_message_bytes;
extern int	oms_relay_breaker_failures;
extern int	oms_relay_breaker_cooldown;

extern void oms_define_gucs(void);

extern char *oms_traceparent;
extern int	oms_maintenance_interval;
extern int	oms_log_min_interval;

/* trace.c: the check of a W3C traceparent */
extern const char *oms_traceparent_problem(const char *value);
extern bool oms_split_database_names(char *rawstring, List **names);

/*
 * log.c: structured log lines ("oms: event=... database=... key=value")
 * and their rate limit; see docs/architecture.md for the events.
 */
typedef struct OmsLogLimit
{
	bool		active;			/* the problem is ongoing */
	TimestampTz logged_at;		/* when its last line was logged */
	int			suppressed;		/* lines not logged since */
} OmsLogLimit;

struct StringInfoData;
extern void oms_log_set_database(const char *dbname);
extern void oms_log_begin(struct StringInfoData *buf, const char *event);
extern void oms_log_str(struct StringInfoData *buf, const char *key, const char *value);
extern void oms_log_int(struct StringInfoData *buf, const char *key, int64 value);
extern void oms_log_emit(int elevel, struct StringInfoData *buf);
extern void oms_log_emit_error(int elevel, struct StringInfoData *buf, ErrorData *edata);
extern int	oms_log_limit(OmsLogLimit *limit, TimestampTz now);
extern int	oms_log_limit_clear(OmsLogLimit *limit);

/* Most databases oms.database_name may list: one shared memory slot each. */
#define OMS_MAX_DATABASES 16

/* Longest last-error text kept per worker, terminator included. */
#define OMS_ERROR_LEN 256

/* shmem.c: the state the launcher, the workers and backends share */
extern void oms_shmem_init(void);
extern int	oms_shmem_slot_count(void);
extern const char *oms_shmem_slot_name(int slotno);
extern int	oms_shmem_slot_by_name(const char *dbname);
extern void oms_shmem_set_launcher_pid(pid_t pid);
extern bool oms_shmem_claim_slot(int slotno, int proc, Oid dboid, pid_t pid, int pgprocno);
extern void oms_shmem_release_slot(int slotno, int proc, pid_t pid);
extern pid_t oms_shmem_worker_pid(int slotno, int proc);
extern bool oms_shmem_any_worker(int slotno);
extern void oms_shmem_note_loop(int slotno, int units);
extern void oms_shmem_note_error(int slotno, const char *message);
extern void oms_shmem_set_idle(int slotno, bool idle);
extern void oms_shmem_mark_drop(int slotno, Oid dboid, TimestampTz until);
extern void oms_shmem_clear_drop(int slotno, Oid dboid);
extern bool oms_shmem_drop_in_progress(int slotno, Oid dboid, TimestampTz now);
extern void oms_shmem_wake_worker(Oid dboid);
extern void oms_shmem_wake_saga_worker(int slotno);

/* The relay's circuit breaker, as shown by oms_relay_status(). */
typedef enum OmsBreakerState
{
	OMS_BREAKER_CLOSED = 0,
	OMS_BREAKER_OPEN,
	OMS_BREAKER_HALF_OPEN
} OmsBreakerState;

extern void oms_shmem_relay_reset(int slotno);
extern void oms_shmem_relay_note_batch(int slotno, int64 published, int64 failed,
									   double ack_latency_ms, TimestampTz now);
extern void oms_shmem_relay_set_breaker(int slotno, OmsBreakerState state,
										TimestampTz opened_at);
extern void oms_shmem_relay_note_error(int slotno, const char *message);

/* launcher.c: starts the workers of each database, stops them for DROP DATABASE */
extern void oms_register_launcher(void);
extern void oms_install_utility_hook(void);
extern PGDLLEXPORT void oms_launcher_main(Datum main_arg);

/*
 * xact.c: the transaction bracket every piece of the workers' work runs
 * in, and whether the extension is there to be called
 */
typedef int (*OmsXactBody) (void *arg);

extern void oms_xact_init(int slotno, int proc);
extern bool oms_xact_extension_ready(void);
extern bool oms_xact_run(int slotno, MemoryContext err_cxt, const char *activity,
						 OmsXactBody body, void *arg, int *result, char **errmsg);
extern ErrorData *oms_xact_last_error(void);
extern bool oms_xact_run_ext(int slotno, MemoryContext err_cxt, const char *activity,
							 OmsXactBody body, void *arg, int *result,
							 char **errmsg, bool log_error);

/* worker.c: the per-database loops, which drive the relay and the inbox */
extern PGDLLEXPORT void oms_worker_main(Datum main_arg);
extern Datum oms_worker_main_arg(int slotno, int proc);

/* relay.c: the outbox relay, one batch per worker loop */
extern void oms_relay_init(int slotno, const char *dbname);
extern void oms_relay_run(int slotno, MemoryContext loop_cxt);
extern void oms_relay_idle(int slotno, MemoryContext loop_cxt);
extern long oms_relay_sleep_limit(long naptime);

/*
 * kafka_config.c: librdkafka properties from oms.kafka_config and
 * oms.kafka_config_file, which secrets are, and their redaction.  A file
 * is shared by the clients built from it; its fields are read-only.
 */
typedef struct OmsKafkaProperty
{
	char	   *name;
	char	   *value;
	int			line;			/* line in the file; 0 for oms.kafka_config */
} OmsKafkaProperty;

typedef struct OmsKafkaFile
{
	uint64		generation;		/* changes whenever what was read changes */
	char	   *path;			/* absolute; NULL when no file is set */
	char	   *error;			/* why the file is refused, or NULL */
	int			nprops;
	OmsKafkaProperty *props;
	/* private to kafka_config.c */
	MemoryContext cxt;
	char	   *content;
	size_t		content_len;
	char	   *parsed;
	int			refcount;
	struct OmsKafkaFile *next;
} OmsKafkaFile;

extern bool oms_kafka_is_secret_property(const char *name);
extern bool oms_kafka_valid_property_name(const char *name);
extern OmsKafkaProperty *oms_kafka_split_config(const char *config, int *nprops, char **error);
extern void oms_kafka_file_reloaded(void);
extern uint64 oms_kafka_file_generation(void);
extern OmsKafkaFile *oms_kafka_file_acquire(void);
extern void oms_kafka_file_release(OmsKafkaFile *file);
extern void oms_kafka_redact(char *text, size_t size);

/*
 * kafka_producer.c (and kafka.c, what it shares with the consumer): the
 * relay's Kafka producer.  Only the Kafka files include librdkafka's
 * header, so error codes travel as plain ints here.
 *
 * One report per event of a batch.  The delivery report callback runs on
 * the worker's own thread, inside oms_kafka_serve(), and only writes into
 * this preallocated array.
 */
typedef enum OmsKafkaReportStatus
{
	OMS_REPORT_NONE = 0,		/* not produced (left out of the settle) */
	OMS_REPORT_PENDING,			/* produced, no delivery report yet */
	OMS_REPORT_ACKED,			/* acknowledged by the broker */
	OMS_REPORT_FAILED			/* failed: err (and maybe detail) say why */
} OmsKafkaReportStatus;

/* Error codes of our own, outside librdkafka's range. */
#define OMS_KAFKA_ERR_NO_REPORT (-10001)	/* no report before the deadline */
#define OMS_KAFKA_ERR_TOO_LARGE (-10002)	/* over
											 * oms.kafka_max_message_bytes */
#define OMS_KAFKA_ERR_BROKERS_DOWN (-10003) /* given up: brokers unreachable */

typedef struct OmsKafkaReport
{
	OmsKafkaReportStatus status;
	int			err;			/* rd_kafka_resp_err_t or OMS_KAFKA_ERR_* */
	TimestampTz produced_at;
	TimestampTz reported_at;
} OmsKafkaReport;

typedef enum OmsKafkaState
{
	OMS_KAFKA_OFF,				/* no brokers configured: no producer */
	OMS_KAFKA_READY,			/* producer built from the current settings */
	OMS_KAFKA_BAD_CONFIG		/* the current settings are refused */
} OmsKafkaState;

extern void oms_kafka_init(const char *dbname);
extern OmsKafkaState oms_kafka_ensure(bool *changed, char *errbuf, size_t errlen);
extern int	oms_kafka_event_fd(void);
extern void oms_kafka_clear_wakeups(void);
extern void oms_kafka_serve(void);
extern void oms_kafka_begin_batch(OmsKafkaReport *reports, int nreports);
extern int	oms_kafka_pending(void);
extern void oms_kafka_end_batch(void);
extern int	oms_kafka_produce(int index, const char *topic,
							  const char *key, size_t keylen,
							  const char *value, size_t valuelen,
							  char *const *headers, int nheaders);
extern void oms_kafka_purge(void);
extern bool oms_kafka_unreachable(void);
extern bool oms_kafka_check_fatal(char *errbuf, size_t errlen);
extern bool oms_kafka_error_is_permanent(int err);
extern bool oms_kafka_error_never_sent(int err);
extern char *oms_kafka_error_text(int err);

/*
 * kafka_consumer.c: the inbox's reply consumer.  A polled message stays valid (the
 * pointers point into librdkafka's copy) until it is acknowledged, rewound
 * or the next poll.
 */
typedef struct OmsKafkaMessage
{
	int			err;			/* 0, or a consumer error
								 * (rd_kafka_resp_err_t) */
	const char *errtext;		/* the error's text, when err != 0 */
	const char *topic;
	int32		partition;
	int64		offset;
	const char *value;			/* not NUL-terminated; NULL when empty */
	size_t		valuelen;
	const char *id;				/* the ce_id header, not NUL-terminated, or
								 * NULL */
	size_t		idlen;
} OmsKafkaMessage;

extern OmsKafkaState oms_kafka_inbox_ensure(bool wanted, bool *changed,
											char *errbuf, size_t errlen);
extern bool oms_kafka_inbox_serve(char *errbuf, size_t errlen);
extern bool oms_kafka_inbox_poll(OmsKafkaMessage *m);
extern void oms_kafka_inbox_ack(void);
extern void oms_kafka_inbox_rewind(void);
extern void oms_kafka_inbox_commit(void);
extern uint32 oms_kafka_inbox_assignment_changes(void);
extern int64 oms_kafka_inbox_lag(int *npartitions);
extern const char *oms_kafka_err_name(int err);

/* inbox.c: the reply consumer's step in each worker loop */
extern void oms_inbox_init(int slotno, const char *dbname);
extern bool oms_inbox_run(int slotno, MemoryContext loop_cxt, int *applied);
extern void oms_inbox_idle(int slotno);
extern long oms_inbox_sleep_limit(long naptime);

/* shmem.c: the inbox's counters, shown by oms._inbox_shmem_status() */
typedef enum OmsInboxOutcome
{
	OMS_INBOX_APPLIED = 0,
	OMS_INBOX_DUPLICATE,
	OMS_INBOX_LATE,
	OMS_INBOX_REJECTED,
	OMS_INBOX_OTHER				/* a word oms._apply_payment_reply should not
								 * return */
} OmsInboxOutcome;

extern void oms_shmem_inbox_reset(int slotno);
extern void oms_shmem_inbox_set_state(int slotno, OmsKafkaState state);
extern void oms_shmem_inbox_note_reply(int slotno, OmsInboxOutcome outcome, TimestampTz now);
extern void oms_shmem_inbox_note_failure(int slotno, const char *message);
extern void oms_shmem_inbox_note_error(int slotno, const char *message);
extern void oms_shmem_inbox_set_lag(int slotno, int partitions, int64 lag, TimestampTz now);

/* input.c: the identifier rule of the API (see docs/api.md, "Identifiers") */
#define OMS_SKU_MAX_CHARS 100
extern const char *oms_identifier_problem(const char *what, const char *value, int len,
										  int max_chars, int *sqlstate);
struct JsonbValue;
extern const char *oms_json_type_name(struct JsonbValue *v);

/* guc.c: remote payment provider */
extern char *oms_kafka_payment_replies_topic;
extern char *oms_kafka_consumer_group;
extern bool oms_payment_provider_is_kafka(void);

#endif							/* OMS_H */
