/*-------------------------------------------------------------------------
 *
 * state.c
 *	  The state machines of oms: the one place that says which status may
 *	  follow which.
 *
 * Five machines: the order's life (oms.orders.status), its payment and
 * its fulfillment (oms.orders.payment_status and fulfillment_status, both
 * derived from the ledger), a shipment and a return.  Everything that knows
 * the moves reads the tables below: the triggers that guard every write of
 * a status column, oms_transition_allowed(), the views oms.order_transitions
 * and oms.status_transitions, and the Graphviz export behind the diagrams
 * in docs/.  Each SQL enum must list the same labels in the same order;
 * the install regression test compares them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/sysattr.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "nodes/bitmapset.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "guc.h"

typedef struct StatusDef
{
	const char *name;
	bool		initial;
	bool		terminal;
	const char *meaning;
} StatusDef;

typedef struct TransitionDef
{
	const char *from;
	const char *to;
	const char *event;			/* what causes it, for docs and the diagram */
} TransitionDef;

/*
 * One state machine: the statuses of one SQL enum (same labels, same
 * order) and the moves between them.
 */
typedef struct StateMachine
{
	const char *name;			/* order, payment, ..., return */
	const char *enum_type;		/* the SQL enum of its column */
	const StatusDef *states;
	int			nstates;
	const TransitionDef *transitions;
	int			ntransitions;
} StateMachine;

/* The order's life: oms.order_status. */
static const StatusDef order_states[] = {
	{"pending", true, false, "created, waiting for payment"},
	{"processing", false, false, "the fulfilment saga is running"},
	{"cancel_requested", false, false, "a cancel arrived while the saga runs; compensation pending"},
	{"confirmed", false, false, "reserved, paid and confirmed"},
	{"canceled", false, true, "canceled before fulfilment"},
	{"failed", false, true, "the saga failed and was compensated"},
	{"partially_refunded", false, false, "confirmed, part of the payment refunded"},
	{"refunded", false, true, "confirmed, the whole payment refunded"},
};

static const TransitionDef order_transitions[] = {
	{"pending", "processing", "pay"},
	{"pending", "canceled", "cancel"},
	{"processing", "confirmed", "confirm step (pivot)"},
	{"processing", "failed", "saga compensated"},
	{"processing", "cancel_requested", "cancel"},
	{"cancel_requested", "canceled", "saga compensated"},
	{"confirmed", "partially_refunded", "partial refund"},
	{"confirmed", "refunded", "full refund"},
	{"partially_refunded", "partially_refunded", "partial refund"},
	{"partially_refunded", "refunded", "refund of the rest"},
};

/*
 * The order's payment: oms.payment_status, derived from its payment's
 * captured and refunded amounts (src/sql/fulfillment.sql).
 */
static const StatusDef payment_states[] = {
	{"unpaid", true, false, "nothing captured"},
	{"paid", false, false, "the total is captured, nothing refunded"},
	{"partially_refunded", false, false, "part of the captured amount is refunded"},
	{"refunded", false, true, "everything captured is refunded"},
};

static const TransitionDef payment_transitions[] = {
	{"unpaid", "paid", "capture"},
	{"paid", "partially_refunded", "partial refund"},
	{"paid", "refunded", "full refund"},
	{"partially_refunded", "refunded", "refund of the rest"},
};

/*
 * The order's goods: oms.fulfillment_status, derived from the quantity
 * ledger of its lines (src/sql/fulfillment.sql says how).
 */
static const StatusDef fulfillment_states[] = {
	{"unfulfilled", true, false, "nothing shipped yet"},
	{"partially_fulfilled", false, false, "some units shipped, some still to ship"},
	{"fulfilled", false, false, "every unit not canceled shipped, not all delivered"},
	{"delivered", false, false, "every unit not canceled shipped and delivered"},
	{"partially_returned", false, false, "some delivered units came back"},
	{"returned", false, true, "every unit shipped came back, nothing left to ship"},
	{"canceled", false, true, "every unit canceled before shipping"},
};

static const TransitionDef fulfillment_transitions[] = {
	{"unfulfilled", "partially_fulfilled", "ship part"},
	{"unfulfilled", "fulfilled", "ship everything"},
	{"unfulfilled", "canceled", "cancel the rest"},
	{"partially_fulfilled", "fulfilled", "ship or cancel the rest"},
	{"partially_fulfilled", "delivered", "cancel the rest"},
	{"partially_fulfilled", "partially_returned", "return received"},
	{"fulfilled", "delivered", "deliver the rest"},
	{"fulfilled", "partially_returned", "return received"},
	{"delivered", "partially_returned", "return received"},
	{"delivered", "returned", "return of everything received"},
	{"partially_returned", "returned", "the rest returned or canceled"},
};

/* A shipment: oms.shipment_status. */
static const StatusDef shipment_states[] = {
	{"pending", true, false, "created, units set aside, not handed to the carrier"},
	{"shipped", false, false, "handed to the carrier"},
	{"delivered", false, true, "the carrier delivered it"},
	{"canceled", false, true, "canceled before shipping; its units can ship again"},
};

static const TransitionDef shipment_transitions[] = {
	{"pending", "shipped", "ship"},
	{"pending", "canceled", "cancel shipment"},
	{"shipped", "delivered", "mark delivered"},
};

/* A return (RMA): oms.return_status. */
static const StatusDef return_states[] = {
	{"requested", true, false, "requested for delivered units, waiting for them"},
	{"received", false, false, "units received; the refund saga runs"},
	{"refunded", false, true, "the received units are refunded"},
	{"rejected", false, true, "refused; nothing comes back"},
};

static const TransitionDef return_transitions[] = {
	{"requested", "received", "receive"},
	{"requested", "rejected", "reject"},
	{"received", "refunded", "refund saga completed"},
};

#define MACHINE(name, type, prefix) \
	{name, type, prefix##_states, lengthof(prefix##_states), \
	 prefix##_transitions, lengthof(prefix##_transitions)}

static const StateMachine machines[] = {
	MACHINE("order", "oms.order_status", order),
	MACHINE("payment", "oms.payment_status", payment),
	MACHINE("fulfillment", "oms.fulfillment_status", fulfillment),
	MACHINE("shipment", "oms.shipment_status", shipment),
	MACHINE("return", "oms.return_status", return),
};

#define ORDER_MACHINE (&machines[0])

static const StateMachine *
find_machine(const char *name)
{
	for (int i = 0; i < (int) lengthof(machines); i++)
	{
		if (strcmp(machines[i].name, name) == 0)
			return &machines[i];
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown state machine \"%s\"", name),
			 errhint("The state machines are order, payment, fulfillment, shipment and return.")));
	return NULL;				/* keep compiler quiet */
}

static const StatusDef *
find_state(const StateMachine *m, const char *name)
{
	for (int i = 0; i < m->nstates; i++)
	{
		if (strcmp(m->states[i].name, name) == 0)
			return &m->states[i];
	}
	return NULL;
}

static bool
transition_allowed(const StateMachine *m, const char *from, const char *to)
{
	for (int i = 0; i < m->ntransitions; i++)
	{
		if (strcmp(m->transitions[i].from, from) == 0 &&
			strcmp(m->transitions[i].to, to) == 0)
			return true;
	}
	return false;
}

/* Comma-separated list of the statuses that may follow "from", for errdetail. */
static char *
next_states(const StateMachine *m, const char *from)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < m->ntransitions; i++)
	{
		if (strcmp(m->transitions[i].from, from) != 0)
			continue;
		if (buf.len > 0)
			appendStringInfoString(&buf, ", ");
		appendStringInfoString(&buf, m->transitions[i].to);
	}
	return buf.data;
}

/* A label of the machine's enum, checked against its table. */
static const char *
status_label(const StateMachine *m, Datum status)
{
	char	   *label = DatumGetCString(DirectFunctionCall1(enum_out, status));

	if (find_state(m, label) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("%s status \"%s\" is not in the oms transition table", m->name, label),
				 errdetail("The enum %s and the C transition table disagree.", m->enum_type),
				 errhint("Reinstall the oms extension so that its SQL and library match.")));
	return label;
}

static void
raise_illegal_transition(const StateMachine *m, const char *from, const char *to,
						 const char *what, const char *id)
{
	char	   *noun = pstrdup(what);

	/* "Order ..." starts the sentence of errdetail. */
	noun[0] = pg_toupper((unsigned char) noun[0]);
	what = noun;
	if (find_state(m, from)->terminal)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("illegal %s status transition from \"%s\" to \"%s\"", m->name, from, to),
				 errdetail("%s %s is %s, a final status.", what, id, from)));
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("illegal %s status transition from \"%s\" to \"%s\"", m->name, from, to),
			 errdetail("%s %s is %s; it may move only to: %s.",
					   what, id, from, next_states(m, from))));
}

PG_FUNCTION_INFO_V1(oms_transition_allowed);

/*
 * oms_transition_allowed(from oms.order_status, to oms.order_status)
 */
Datum
oms_transition_allowed(PG_FUNCTION_ARGS)
{
	const char *from = status_label(ORDER_MACHINE, PG_GETARG_DATUM(0));
	const char *to = status_label(ORDER_MACHINE, PG_GETARG_DATUM(1));

	PG_RETURN_BOOL(transition_allowed(ORDER_MACHINE, from, to));
}

PG_FUNCTION_INFO_V1(oms_machine_transition_allowed);

/*
 * oms_transition_allowed(machine text, from text, to text): any machine,
 * statuses as text; false for a label the machine does not have.
 */
Datum
oms_machine_transition_allowed(PG_FUNCTION_ARGS)
{
	const StateMachine *m = find_machine(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	const char *from = text_to_cstring(PG_GETARG_TEXT_PP(1));
	const char *to = text_to_cstring(PG_GETARG_TEXT_PP(2));

	PG_RETURN_BOOL(transition_allowed(m, from, to));
}

PG_FUNCTION_INFO_V1(oms_order_states);

/*
 * oms._order_states(): status, initial, terminal, meaning
 */
Datum
oms_order_states(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	const StateMachine *m = ORDER_MACHINE;

	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < m->nstates; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		values[0] = CStringGetTextDatum(m->states[i].name);
		values[1] = BoolGetDatum(m->states[i].initial);
		values[2] = BoolGetDatum(m->states[i].terminal);
		values[3] = CStringGetTextDatum(m->states[i].meaning);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(oms_order_transitions);

/*
 * oms._order_transitions(): from_status, to_status, event
 */
Datum
oms_order_transitions(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	const StateMachine *m = ORDER_MACHINE;

	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < m->ntransitions; i++)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		values[0] = CStringGetTextDatum(m->transitions[i].from);
		values[1] = CStringGetTextDatum(m->transitions[i].to);
		values[2] = CStringGetTextDatum(m->transitions[i].event);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(oms_machine_states);

/*
 * oms._machine_states(): machine, status, initial, terminal, meaning, for
 * every machine in table order.
 */
Datum
oms_machine_states(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	for (int k = 0; k < (int) lengthof(machines); k++)
	{
		const StateMachine *m = &machines[k];

		for (int i = 0; i < m->nstates; i++)
		{
			Datum		values[5];
			bool		nulls[5] = {false, false, false, false, false};

			values[0] = CStringGetTextDatum(m->name);
			values[1] = CStringGetTextDatum(m->states[i].name);
			values[2] = BoolGetDatum(m->states[i].initial);
			values[3] = BoolGetDatum(m->states[i].terminal);
			values[4] = CStringGetTextDatum(m->states[i].meaning);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(oms_machine_transitions);

/*
 * oms._machine_transitions(): machine, from_status, to_status, event.
 */
Datum
oms_machine_transitions(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	for (int k = 0; k < (int) lengthof(machines); k++)
	{
		const StateMachine *m = &machines[k];

		for (int i = 0; i < m->ntransitions; i++)
		{
			Datum		values[4];
			bool		nulls[4] = {false, false, false, false};

			values[0] = CStringGetTextDatum(m->name);
			values[1] = CStringGetTextDatum(m->transitions[i].from);
			values[2] = CStringGetTextDatum(m->transitions[i].to);
			values[3] = CStringGetTextDatum(m->transitions[i].event);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}
	return (Datum) 0;
}

/*
 * A machine as a Graphviz digraph.  The initial status is bold, final
 * statuses have a double border.
 */
static text *
machine_dot(const StateMachine *m)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf,
					 "digraph %s_status {\n"
					 "\trankdir=LR;\n"
					 "\tnode [shape=box, style=rounded, fontname=\"Helvetica\"];\n"
					 "\tedge [fontname=\"Helvetica\", fontsize=10];\n",
					 m->name);
	for (int i = 0; i < m->nstates; i++)
	{
		appendStringInfo(&buf, "\t%s", m->states[i].name);
		if (m->states[i].initial)
			appendStringInfoString(&buf, " [style=\"rounded,bold\"]");
		else if (m->states[i].terminal)
			appendStringInfoString(&buf, " [peripheries=2]");
		appendStringInfoString(&buf, ";\n");
	}
	for (int i = 0; i < m->ntransitions; i++)
		appendStringInfo(&buf, "\t%s -> %s [label=\"%s\"];\n",
						 m->transitions[i].from, m->transitions[i].to,
						 m->transitions[i].event);
	appendStringInfoString(&buf, "}\n");
	return cstring_to_text(buf.data);
}

PG_FUNCTION_INFO_V1(oms_state_machine_dot);

/*
 * oms_state_machine_dot(): the order's life as a Graphviz digraph;
 * oms_state_machine_dot(machine): any machine.
 */
Datum
oms_state_machine_dot(PG_FUNCTION_ARGS)
{
	const StateMachine *m = ORDER_MACHINE;

	if (PG_NARGS() > 0)
		m = find_machine(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_TEXT_P(machine_dot(m));
}

/* Replace one column of a tuple being written. */
static HeapTuple
set_column(HeapTuple tuple, TupleDesc desc, int attnum, Datum value)
{
	int			col = attnum;
	bool		isnull = false;

	return heap_modify_tuple_by_cols(tuple, desc, 1, &col, &value, &isnull);
}

static int
column_number(Relation rel, const char *name)
{
	int			attnum = SPI_fnumber(RelationGetDescr(rel), name);

	if (attnum <= 0)
		elog(ERROR, "%s has no column \"%s\"", RelationGetRelationName(rel), name);
	return attnum;
}

/*
 * The status a row is written with, checked against machine m: a new row
 * starts in the initial status (unless oms.restoring is on: a superuser
 * restoring a dump), a changed status follows the table.  Writing the same
 * status again counts as a transition only when the UPDATE names the column
 * and the table has that self-loop.  Returns whether this is a transition.
 * A column the table does not have yet (a database whose extension is
 * older than the library) is no transition.
 */
static bool
check_status_column(TriggerData *trigdata, const StateMachine *m, const char *column,
					const char *what, const char *id_column)
{
	Relation	rel = trigdata->tg_relation;
	TupleDesc	desc = RelationGetDescr(rel);
	int			att = SPI_fnumber(desc, column);
	HeapTuple	newtuple;
	const char *from;
	const char *to;
	bool		isnull;
	bool		written;
	bool		changes;

	if (att <= 0)
		return false;
	newtuple = TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) ?
		trigdata->tg_trigtuple : trigdata->tg_newtuple;
	to = status_label(m, heap_getattr(newtuple, att, desc, &isnull));
	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
	{
		if (!oms_restoring && !find_state(m, to)->initial)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("a new %s must start in %s \"%s\", not \"%s\"",
							what, m == ORDER_MACHINE ? "status" : psprintf("%s status", m->name),
							m->states[0].name, to)));
		return false;
	}
	from = status_label(m, heap_getattr(trigdata->tg_trigtuple, att, desc, &isnull));
	written = bms_is_member(att - FirstLowInvalidHeapAttributeNumber, trigdata->tg_updatedcols);
	changes = strcmp(from, to) != 0 || (written && transition_allowed(m, from, to));
	if (changes && !transition_allowed(m, from, to))
	{
		Datum		id = heap_getattr(trigdata->tg_trigtuple, column_number(rel, id_column), desc, &isnull);

		raise_illegal_transition(m, from, to, what,
								 DatumGetCString(DirectFunctionCall1(uuid_out, id)));
	}
	return changes;
}

static void
check_trigger_context(FunctionCallInfo fcinfo, const char *name)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		elog(ERROR, "%s must be a BEFORE INSERT OR UPDATE row trigger", name);
}

PG_FUNCTION_INFO_V1(oms_order_status_guard);

/*
 * BEFORE INSERT OR UPDATE row trigger on oms.orders, enabled ALWAYS so that
 * it also fires under session_replication_role = replica.
 *
 * Checks the order's three status dimensions (status, payment_status,
 * fulfillment_status) against their machines.  A new order starts with
 * version 1; each transition of a dimension adds one to version.  Version is owned
 * by this trigger: any other value written to it is replaced.
 */
Datum
oms_order_status_guard(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	desc;
	HeapTuple	newtuple;
	int32		version;
	bool		isnull;
	int			changes;

	check_trigger_context(fcinfo, "oms_order_status_guard");
	rel = trigdata->tg_relation;
	desc = RelationGetDescr(rel);

	/*
	 * One version per transition: two dimensions moved by one write count
	 * two.
	 */
	changes = check_status_column(trigdata, &machines[0], "status", "order", "id");
	changes += check_status_column(trigdata, find_machine("payment"), "payment_status", "order", "id");
	changes += check_status_column(trigdata, find_machine("fulfillment"), "fulfillment_status", "order", "id");

	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
	{
		newtuple = trigdata->tg_trigtuple;
		/* A restored row carries the version it had. */
		if (!oms_restoring)
			newtuple = set_column(newtuple, desc, column_number(rel, "version"), Int32GetDatum(1));
		return PointerGetDatum(newtuple);
	}

	version = DatumGetInt32(heap_getattr(trigdata->tg_trigtuple, column_number(rel, "version"),
										 desc, &isnull));
	version += changes;
	newtuple = set_column(trigdata->tg_newtuple, desc, column_number(rel, "version"),
						  Int32GetDatum(version));
	newtuple = set_column(newtuple, desc, column_number(rel, "updated_at"),
						  TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()));
	return PointerGetDatum(newtuple);
}

PG_FUNCTION_INFO_V1(oms_status_guard);

/*
 * BEFORE INSERT OR UPDATE row trigger of the tables with one status column
 * (oms.shipments, oms.returns), enabled ALWAYS.  Arguments: the machine,
 * the status column, what the row is (for messages) and its id column.
 */
Datum
oms_status_guard(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Trigger    *trigger;

	check_trigger_context(fcinfo, "oms_status_guard");
	trigger = trigdata->tg_trigger;
	if (trigger->tgnargs != 4)
		elog(ERROR, "oms_status_guard takes 4 arguments: machine, column, noun, id column");
	check_status_column(trigdata, find_machine(trigger->tgargs[0]), trigger->tgargs[1],
						trigger->tgargs[2], trigger->tgargs[3]);
	return PointerGetDatum(TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) ?
						   trigdata->tg_trigtuple : trigdata->tg_newtuple);
}
