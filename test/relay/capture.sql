-- test/relay/capture.sql: records every event the run writes to oms.outbox,
-- because the relay deletes each row once Kafka acknowledged it.  Installed
-- by the relay's tests in their own test database only (never by the
-- extension): an AFTER INSERT trigger copies each new outbox row (a replay
-- of a dead letter re-inserts the same id, counted in "inserts").
CREATE TABLE public.rl_produced (
	id			uuid PRIMARY KEY,
	aggregatetype text NOT NULL,
	aggregateid	uuid NOT NULL,
	seq			bigint NOT NULL,
	type		text NOT NULL,
	payload		jsonb NOT NULL,
	created_at	timestamptz NOT NULL,
	inserts		integer NOT NULL DEFAULT 1
);

CREATE FUNCTION public.rl_capture() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
	INSERT INTO public.rl_produced AS p (id, aggregatetype, aggregateid, seq, type, payload, created_at)
	VALUES (NEW.id, NEW.aggregatetype, NEW.aggregateid, NEW.seq, NEW.type, NEW.payload, NEW.created_at)
	ON CONFLICT (id) DO UPDATE SET inserts = p.inserts + 1;
	RETURN NULL;
END;
$$;

CREATE TRIGGER rl_capture AFTER INSERT ON oms.outbox
	FOR EACH ROW EXECUTE FUNCTION public.rl_capture();
