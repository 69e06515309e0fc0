/*-------------------------------------------------------------------------
 *
 * kafka_consumer.h
 *	  kafka_consumer.c: the inbox's reply consumer.
 *
 * A polled message stays valid (its pointers point into librdkafka's copy)
 * until it is acknowledged, rewound or the next poll.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OMS_KAFKA_CONSUMER_H
#define OMS_KAFKA_CONSUMER_H

#include "kafka.h"

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

#endif							/* OMS_KAFKA_CONSUMER_H */
