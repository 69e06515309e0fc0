/*-------------------------------------------------------------------------
 *
 * kafka_int.h
 *	  What the three Kafka files share, and nothing else includes: the
 *	  client core (kafka.c), the relay's producer (kafka_producer.c) and the
 *	  inbox's reply consumer (kafka_consumer.c).  The only header that
 *	  includes librdkafka's.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OMS_KAFKA_INT_H
#define OMS_KAFKA_INT_H

#include <librdkafka/rdkafka.h>

#include "kafka.h"
#include "kafka_config.h"

/*
 * Longest wait, when a client is destroyed, for the reports of its purged
 * messages (producer) or for leaving the group (consumer).
 */
#define KAFKA_DESTROY_WAIT_MS 500

/* Client errors noted by an error callback, waiting to be logged. */
typedef struct ClientErrors
{
	int			code;
	int			unlogged;
	char		reason[512];
} ClientErrors;

/*
 * One client kept in line with the settings by kafka_client_ensure: what
 * it was built from, the last settings librdkafka refused and why, and how
 * to make, test and destroy it.
 */
typedef struct KafkaClient
{
	char	   *settings;		/* of the live client; NULL when none */
	char	   *refused_settings;
	char		refused_reason[512];
	char	   *(*current_settings) (void); /* palloc'd in the caller's
											 * context */
	bool		(*usable) (void);	/* a live client that need not be rebuilt */
	bool		(*create) (char *errbuf, size_t errlen);
	void		(*destroy) (void);
} KafkaClient;

/* kafka.c */
extern int	kafka_wake_pipe[2];
extern char kafka_dbname[NAMEDATALEN];
extern OmsKafkaState kafka_client_ensure(KafkaClient *client, bool wanted, bool *changed,
										 char *errbuf, size_t errlen);
extern void kafka_note_client_error(ClientErrors *errors, int err, const char *reason);
extern bool kafka_log_allowed(void);
extern void kafka_serve_log_queue(rd_kafka_queue_t *queue, const char *who);
extern void kafka_log_client_errors(ClientErrors *errors, const char *who);
extern bool kafka_set_property(rd_kafka_conf_t *conf, const char *name, const char *value,
							   char *errbuf, size_t errlen);
extern bool kafka_apply_user_properties(rd_kafka_conf_t *conf, const char *config,
										const char *const *reserved, char *errbuf, size_t errlen);
extern OmsKafkaFile *kafka_apply_file_properties(rd_kafka_conf_t *conf, const char *const *reserved,
												 char *errbuf, size_t errlen);


#endif							/* OMS_KAFKA_INT_H */
