/*-------------------------------------------------------------------------
 *
 * kafka_config.h
 *	  kafka_config.c: librdkafka properties from oms.kafka_config and
 *	  oms.kafka_config_file, which of them are secrets, and their
 *	  redaction.  A file is shared by the clients built from it; its fields
 *	  are read-only.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OMS_KAFKA_CONFIG_H
#define OMS_KAFKA_CONFIG_H

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

#endif							/* OMS_KAFKA_CONFIG_H */
