/*-------------------------------------------------------------------------
 *
 * kafka_producer.h
 *	  kafka_producer.c: the relay's Kafka producer and the batches the
 *	  relay produces with it.
 *
 * One report per event of a batch.  The delivery report callback runs on
 * the worker's own thread, inside oms_kafka_serve(), and only writes into
 * the relay's preallocated array.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OMS_KAFKA_PRODUCER_H
#define OMS_KAFKA_PRODUCER_H

#include "datatype/timestamp.h"

#include "kafka.h"

typedef enum OmsKafkaReportStatus
{
	OMS_REPORT_NONE = 0,		/* not produced (left out of the settle) */
	OMS_REPORT_PENDING,			/* produced, no delivery report yet */
	OMS_REPORT_ACKED,			/* acknowledged by the broker */
	OMS_REPORT_FAILED			/* failed: err (and maybe detail) say why */
} OmsKafkaReportStatus;

typedef struct OmsKafkaReport
{
	OmsKafkaReportStatus status;
	int			err;			/* rd_kafka_resp_err_t or OMS_KAFKA_ERR_* */
	TimestampTz produced_at;
	TimestampTz reported_at;
} OmsKafkaReport;

extern OmsKafkaState oms_kafka_ensure(bool *changed, char *errbuf, size_t errlen);
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

#endif							/* OMS_KAFKA_PRODUCER_H */
