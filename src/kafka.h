/*-------------------------------------------------------------------------
 *
 * kafka.h
 *	  kafka.c: what the relay, the inbox and the worker use of the two
 *	  Kafka clients' shared core: the wake-up pipe, the state of a client
 *	  and the classification of Kafka errors.
 *
 * Only the Kafka files include librdkafka's header (through the private
 * kafka_int.h), so error codes travel as plain ints here.  The producer's
 * face is kafka_producer.h, the consumer's kafka_consumer.h.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OMS_KAFKA_H
#define OMS_KAFKA_H

/* Where a client stands against the current settings. */
typedef enum OmsKafkaState
{
	OMS_KAFKA_OFF,				/* not wanted or no brokers: no client */
	OMS_KAFKA_READY,			/* client built from the current settings */
	OMS_KAFKA_BAD_CONFIG		/* the current settings are refused */
} OmsKafkaState;

/* Error codes of our own, outside librdkafka's range. */
#define OMS_KAFKA_ERR_NO_REPORT (-10001)	/* no report before the deadline */
#define OMS_KAFKA_ERR_TOO_LARGE (-10002)	/* over
											 * oms.kafka_max_message_bytes */
#define OMS_KAFKA_ERR_BROKERS_DOWN (-10003) /* given up: brokers unreachable */

extern void oms_kafka_init(const char *dbname);
extern int	oms_kafka_event_fd(void);
extern void oms_kafka_clear_wakeups(void);
extern bool oms_kafka_error_is_permanent(int err);
extern bool oms_kafka_error_never_sent(int err);
extern char *oms_kafka_error_text(int err);
extern const char *oms_kafka_err_name(int err);

#endif							/* OMS_KAFKA_H */
