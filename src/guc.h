/*-------------------------------------------------------------------------
 *
 * guc.h
 *	  guc.c: the oms.* settings other files read, and their limits.
 *
 * Settings that only SQL reads (with current_setting()) are not here.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OMS_GUC_H
#define OMS_GUC_H

#include "nodes/pg_list.h"

/* Most databases oms.database_name may list: one shared memory slot each. */
#define OMS_MAX_DATABASES 16

/* Most processes oms.saga_workers may ask for per database. */
#define OMS_MAX_SAGA_WORKERS 8

/* Largest oms.relay_batch_size: the relay's report array is this long. */
#define OMS_RELAY_MAX_BATCH 10000

/* The API's input limits */
extern bool oms_restoring;
extern int	oms_max_order_items;
extern int	oms_max_item_quantity;
extern int	oms_max_metadata_bytes;

/* The workers */
extern char *oms_database_name;
extern bool oms_worker_enabled;
extern int	oms_worker_naptime;
extern int	oms_worker_batch_size;
extern int	oms_saga_workers;
extern int	oms_maintenance_interval;
extern int	oms_log_min_interval;

/* Kafka: the relay's producer and the inbox's reply consumer */
extern char *oms_kafka_brokers;
extern char *oms_kafka_config;
extern char *oms_kafka_config_file;
extern int	oms_relay_batch_size;
extern int	oms_relay_ack_timeout;
extern int	oms_kafka_max_message_bytes;
extern int	oms_relay_breaker_failures;
extern int	oms_relay_breaker_cooldown;
extern char *oms_kafka_payment_replies_topic;
extern char *oms_kafka_consumer_group;

extern void oms_define_gucs(void);
extern bool oms_split_database_names(char *rawstring, List **names);
extern bool oms_payment_provider_is_kafka(void);

#endif							/* OMS_GUC_H */
