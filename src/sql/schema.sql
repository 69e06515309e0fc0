-- schema.sql: the oms schema, the order status type and the tables.
--
-- requires: roles

CREATE SCHEMA oms;
REVOKE ALL ON SCHEMA oms FROM PUBLIC;
GRANT USAGE ON SCHEMA oms TO oms_app, oms_reader, oms_admin;
COMMENT ON SCHEMA oms IS 'oms internals: orders, timeline, outbox, idempotency keys, reference data';

-- Tracing and logging helpers in C (src/log.c), needed by the tables and
-- the saga engine below.
CREATE FUNCTION oms._traceparent_problem(p_value text)
RETURNS text
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_traceparent_problem_sql'
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION oms._traceparent_problem(text) IS
	'Why a W3C traceparent is invalid (the check of SET oms.traceparent), or NULL when it is valid';

CREATE FUNCTION oms._log(p_level text, p_event text, VARIADIC p_fields text[])
RETURNS void
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_log_sql'
LANGUAGE c VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION oms._log(text, text, text[]) IS
	'Writes one structured line "oms: event=... database=... name=value ..." to the server log at level log or warning; fields alternate names and values, null values are left out';

-- Same labels, same order as the transition table in src/state.c.
CREATE TYPE oms.order_status AS ENUM (
	'pending',
	'processing',
	'cancel_requested',
	'confirmed',
	'canceled',
	'failed',
	'partially_refunded',
	'refunded'
);
COMMENT ON TYPE oms.order_status IS 'Order lifecycle status; allowed moves are in oms.order_transitions';

-- The two other dimensions of an order's status, derived from its payment
-- and its line ledger (src/sql/fulfillment.sql); labels and moves in
-- src/state.c, in the same order.
CREATE TYPE oms.payment_status AS ENUM ('unpaid', 'paid', 'partially_refunded', 'refunded');
COMMENT ON TYPE oms.payment_status IS
	'What the order''s payment stands at, derived from its captured and refunded amounts; moves in oms.status_transitions';
CREATE TYPE oms.fulfillment_status AS ENUM (
	'unfulfilled',
	'partially_fulfilled',
	'fulfilled',
	'delivered',
	'partially_returned',
	'returned',
	'canceled'
);
COMMENT ON TYPE oms.fulfillment_status IS
	'Where the order''s goods stand, derived from the quantity ledger of its lines; moves in oms.status_transitions';

CREATE TABLE oms.currencies (
	code		text PRIMARY KEY CHECK (code ~ '^[A-Z]{3}$'),
	exponent	smallint NOT NULL CHECK (exponent BETWEEN 0 AND 4),
	name		text NOT NULL
);
COMMENT ON TABLE oms.currencies IS 'ISO 4217 currencies accepted by oms, with the number of decimal places of their minor unit';

-- Time-ordered ids (src/input.c): inserts stay at the right edge of every
-- index keyed by an order, saga or payment id, however long the history.
CREATE FUNCTION oms._uuid_v7()
RETURNS uuid
LANGUAGE c VOLATILE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_uuid_v7';
COMMENT ON FUNCTION oms._uuid_v7() IS
	'A time-ordered UUID (version 7: Unix time in milliseconds, then random bits), the default id of orders, sagas, payments and refunds';

CREATE TABLE oms.orders (
	id			uuid PRIMARY KEY DEFAULT oms._uuid_v7(),
	customer_id	text NOT NULL CHECK (pg_catalog.length(customer_id) BETWEEN 1 AND 255),
	status		oms.order_status NOT NULL DEFAULT 'pending',
	-- Checked against oms.currencies by the API.  No foreign key: every
	-- new order would take a KEY SHARE lock on the same currency row,
	-- turning concurrent inserts into multixact traffic.
	currency	text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
	total		bigint NOT NULL CHECK (total >= 0),
	version		integer NOT NULL DEFAULT 1,
	metadata	jsonb NOT NULL DEFAULT '{}' CHECK (pg_catalog.jsonb_typeof(metadata) = 'object'),
	timeline_seq integer NOT NULL DEFAULT 0,
	event_seq	bigint NOT NULL DEFAULT 0,
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	-- Last columns: 0.4.0 added them (ALTER TABLE appends).
	payment_status oms.payment_status NOT NULL DEFAULT 'unpaid',
	fulfillment_status oms.fulfillment_status NOT NULL DEFAULT 'unfulfilled'
);
CREATE INDEX orders_customer_idx ON oms.orders (customer_id, created_at);
COMMENT ON TABLE oms.orders IS 'One row per order; status changes are guarded by the state machine trigger';
COMMENT ON COLUMN oms.orders.total IS 'Sum of the line totals in minor units of currency, computed by oms';
COMMENT ON COLUMN oms.orders.version IS 'Starts at 1 and grows by one on every status transition (set by the trigger)';
COMMENT ON COLUMN oms.orders.timeline_seq IS 'Sequence number of the last timeline entry of this order';
COMMENT ON COLUMN oms.orders.event_seq IS 'Sequence number of the last outbox event of this order';
COMMENT ON COLUMN oms.orders.payment_status IS
	'Derived from the order''s payment by a trigger on oms.payments; guarded by the payment machine';
COMMENT ON COLUMN oms.orders.fulfillment_status IS
	'Derived from the line ledger by a trigger on oms.order_items; guarded by the fulfillment machine';

CREATE TABLE oms.order_items (
	order_id	uuid NOT NULL REFERENCES oms.orders (id) ON DELETE CASCADE,
	line_no		integer NOT NULL CHECK (line_no > 0),
	sku			text NOT NULL CHECK (pg_catalog.length(sku) BETWEEN 1 AND 100),
	quantity	integer NOT NULL CHECK (quantity > 0),
	unit_price	bigint NOT NULL CHECK (unit_price >= 0),
	line_total	bigint NOT NULL,
	-- Last columns: 0.4.0 added the quantity ledger (ALTER TABLE appends).
	quantity_canceled integer NOT NULL DEFAULT 0 CHECK (quantity_canceled >= 0),
	quantity_fulfilling integer NOT NULL DEFAULT 0 CHECK (quantity_fulfilling >= 0),
	quantity_shipped integer NOT NULL DEFAULT 0 CHECK (quantity_shipped >= 0),
	quantity_delivered integer NOT NULL DEFAULT 0 CHECK (quantity_delivered >= 0),
	quantity_returning integer NOT NULL DEFAULT 0 CHECK (quantity_returning >= 0),
	quantity_returned integer NOT NULL DEFAULT 0 CHECK (quantity_returned >= 0),
	quantity_refunded integer NOT NULL DEFAULT 0 CHECK (quantity_refunded >= 0),
	PRIMARY KEY (order_id, line_no),
	CHECK (line_total = quantity * unit_price),
	CONSTRAINT order_items_ship_check
		CHECK (quantity_canceled + quantity_fulfilling + quantity_shipped <= quantity),
	CONSTRAINT order_items_deliver_check CHECK (quantity_delivered <= quantity_shipped),
	CONSTRAINT order_items_return_check CHECK (quantity_returning + quantity_returned <= quantity_delivered),
	CONSTRAINT order_items_refund_check CHECK (quantity_refunded <= quantity_canceled + quantity_returned)
);
COMMENT ON TABLE oms.order_items IS
	'Order lines with their quantity ledger; amounts in minor units of the order currency';
COMMENT ON COLUMN oms.order_items.quantity IS 'Units ordered';
COMMENT ON COLUMN oms.order_items.quantity_canceled IS 'Units canceled before shipping (their stock given back)';
COMMENT ON COLUMN oms.order_items.quantity_fulfilling IS 'Units in pending shipments, not handed to a carrier yet';
COMMENT ON COLUMN oms.order_items.quantity_shipped IS 'Units in shipments handed to a carrier';
COMMENT ON COLUMN oms.order_items.quantity_delivered IS 'Shipped units the carrier delivered';
COMMENT ON COLUMN oms.order_items.quantity_returning IS 'Delivered units in open return requests';
COMMENT ON COLUMN oms.order_items.quantity_returned IS 'Delivered units received back';
COMMENT ON COLUMN oms.order_items.quantity_refunded IS 'Canceled or returned units refunded through a refund saga';

CREATE TABLE oms.order_events (
	order_id	uuid NOT NULL REFERENCES oms.orders (id) ON DELETE CASCADE,
	seq			integer NOT NULL CHECK (seq > 0),
	occurred_at	timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	event_type	text NOT NULL,
	from_status	oms.order_status,
	to_status	oms.order_status,
	data		jsonb NOT NULL DEFAULT '{}',
	traceparent	text,
	PRIMARY KEY (order_id, seq)
);
COMMENT ON TABLE oms.order_events IS 'Append-only order timeline: one row per thing that happened to an order';
COMMENT ON COLUMN oms.order_events.traceparent IS
	'W3C trace context of the request that caused the entry (oms.traceparent, or the saga''s for saga work); NULL when none';

-- Column names follow Debezium's outbox event router, so a Debezium
-- connector can read this table as well as the oms relay.
CREATE TABLE oms.outbox (
	id			uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
	aggregatetype text NOT NULL,
	aggregateid	uuid NOT NULL,
	type		text NOT NULL,
	payload		jsonb NOT NULL,
	seq			bigint NOT NULL CHECK (seq > 0),
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	attempts	integer NOT NULL DEFAULT 0,
	next_attempt_at timestamptz NOT NULL DEFAULT '-infinity',
	last_error	text,
	traceparent	text,
	UNIQUE (aggregatetype, aggregateid, seq)
);
-- Rows live for milliseconds when the relay runs: vacuum by row count, not
-- by a fraction of a table that is usually almost empty, so the space of
-- published rows is reused and the table stays flat.
ALTER TABLE oms.outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
							autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 10000,
							autovacuum_vacuum_cost_delay = 0);
-- The relay publishes oldest first; the index keeps a claim cheap however
-- long the backlog is.
CREATE INDEX outbox_created_idx ON oms.outbox (created_at);
-- Events that failed at least once: the few a claim must check for
-- "is an earlier event of this order backing off?".
CREATE INDEX outbox_failed_idx ON oms.outbox (aggregatetype, aggregateid, seq) WHERE attempts > 0;
COMMENT ON TABLE oms.outbox IS 'Transactional outbox: events written in the same transaction as the change they announce';
COMMENT ON COLUMN oms.outbox.attempts IS 'Failed publish attempts so far';
COMMENT ON COLUMN oms.outbox.next_attempt_at IS 'Not published again before this time (backoff after a failed attempt)';
COMMENT ON COLUMN oms.outbox.last_error IS 'Why the last publish attempt failed';
COMMENT ON COLUMN oms.outbox.traceparent IS
	'W3C trace context of the request that caused the event; the relay sends it as the Kafka header traceparent';
COMMENT ON COLUMN oms.outbox.seq IS 'Gap-free per-aggregate sequence, so consumers can detect missing or reordered events';

CREATE TABLE oms.idempotency_keys (
	key			text PRIMARY KEY CHECK (pg_catalog.length(key) BETWEEN 1 AND 255),
	function_name text NOT NULL,
	request_hash bytea NOT NULL,
	response	jsonb,
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	expires_at	timestamptz NOT NULL
);
-- Keys arrive in expires_at order, so a BRIN index serves the purge at a
-- fraction of a B-tree's cost on every insert.
CREATE INDEX idempotency_keys_expires_idx ON oms.idempotency_keys USING brin (expires_at);
COMMENT ON TABLE oms.idempotency_keys IS 'One row per idempotency key: which call used it, a hash of its arguments and its stored response';

-- pg_dump must save the data of these tables: the extension creates them,
-- so without this a dump would restore an empty order book.
SELECT pg_catalog.pg_extension_config_dump('oms.orders', '');
SELECT pg_catalog.pg_extension_config_dump('oms.order_items', '');
SELECT pg_catalog.pg_extension_config_dump('oms.order_events', '');
SELECT pg_catalog.pg_extension_config_dump('oms.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('oms.idempotency_keys', '');

-- Privileges of the objects above: nothing for PUBLIC, each role what it
-- needs (the roles come from roles.sql, checks.sql verifies).
GRANT SELECT ON oms.currencies, oms.orders, oms.order_items, oms.order_events, oms.outbox, oms.idempotency_keys TO oms_reader;
-- Reference data: oms_format_money runs with the caller's rights.
GRANT SELECT ON oms.currencies TO oms_app;
REVOKE ALL ON FUNCTION oms._log(text, text, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._traceparent_problem(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._uuid_v7() FROM PUBLIC;
