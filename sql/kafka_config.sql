-- kafka_config: oms.kafka_config refuses secret-bearing librdkafka
-- properties (they go in oms.kafka_config_file), with an error that does
-- not quote the value, and ALTER SYSTEM then writes nothing.  The file
-- itself is read by the worker only: test/t/023_kafka_secrets.pl.
\set SHOW_CONTEXT never
\set VERBOSITY default

SELECT count(*) AS auto_conf_lines FROM pg_file_settings WHERE name LIKE 'oms.kafka_config%';

-- Names librdkafka 2.0.2 flags as sensitive, and any name with "password" or "secret".
ALTER SYSTEM SET oms.kafka_config = 'compression.type=lz4, sasl.password=not-a-real-one';
ALTER SYSTEM SET oms.kafka_config = 'ssl.key.password=x';
ALTER SYSTEM SET oms.kafka_config = 'ssl.keystore.password=x';
ALTER SYSTEM SET oms.kafka_config = 'ssl.key.pem=x';
ALTER SYSTEM SET oms.kafka_config = 'ssl.key.location=/k.pem';
ALTER SYSTEM SET oms.kafka_config = 'ssl.ca.pem=x';
ALTER SYSTEM SET oms.kafka_config = 'sasl.username=oms';
ALTER SYSTEM SET oms.kafka_config = 'sasl.oauthbearer.config=principal=oms';
ALTER SYSTEM SET oms.kafka_config = 'sasl.oauthbearer.client.secret=x';
ALTER SYSTEM SET oms.kafka_config = 'some.future.Secret.thing=x';
-- Parsed as the worker applies it: blanks and case do not hide a name,
-- and an item after a continued value is still seen.
ALTER SYSTEM SET oms.kafka_config = 'debug=broker,topic,  SASL.Password = x';
ALTER SYSTEM SET oms.kafka_config = 'linger.ms, sasl.password=x';
-- A name that is no property name is not quoted: it may be a secret itself.
ALTER SYSTEM SET oms.kafka_config = 'my password is abc=x';

-- Nothing was written.
SELECT count(*) AS auto_conf_lines FROM pg_file_settings WHERE name LIKE 'oms.kafka_config%';

-- Both settings are superuser-only to read, and server-wide.
SHOW oms.kafka_config_file;
SET oms.kafka_config_file = 'kafka.properties';
CREATE ROLE oms_kafka_config_probe;
SET ROLE oms_kafka_config_probe;
SHOW oms.kafka_config_file;
SELECT count(*) AS visible FROM pg_settings WHERE name LIKE 'oms.kafka_config%';
RESET ROLE;
DROP ROLE oms_kafka_config_probe;
