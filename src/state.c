/*-------------------------------------------------------------------------
 *
 * state.c
 *	  The order state machine: the one transition table of oms.
 *
 * Everything that knows which order status may follow which reads the
 * table below: the trigger that guards every write to oms.orders.status,
 * oms_transition_allowed(), the oms.order_transitions view and the Graphviz
 * export behind the diagram in docs/architecture.md.  The SQL enum
 * oms.order_status must list the same labels; the install regression test
 * compares the two.
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
#include "utils/timestamp.h"

#include "guc.h"

typedef struct OrderState
{
	const char *name;
	bool		initial;
	bool		terminal;
	const char *meaning;
} OrderState;

typedef struct OrderTransition
{
	const char *from;
	const char *to;
	const char *event;			/* what causes it, for docs and the diagram */
} OrderTransition;

/* Same labels, same order as the SQL enum oms.order_status. */
static const OrderState states[] = {
	{"pending", true, false, "created, waiting for payment"},
	{"processing", false, false, "the fulfilment saga is running"},
	{"cancel_requested", false, false, "a cancel arrived while the saga runs; compensation pending"},
	{"confirmed", false, false, "reserved, paid and confirmed"},
	{"canceled", false, true, "canceled before fulfilment"},
	{"failed", false, true, "the saga failed and was compensated"},
	{"partially_refunded", false, false, "confirmed, part of the payment refunded"},
	{"refunded", false, true, "confirmed, the whole payment refunded"},
};

static const OrderTransition transitions[] = {
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

#define NUM_STATES ((int) lengthof(states))
#define NUM_TRANSITIONS ((int) lengthof(transitions))

static const OrderState *
find_state(const char *name)
{
	for (int i = 0; i < NUM_STATES; i++)
	{
		if (strcmp(states[i].name, name) == 0)
			return &states[i];
	}
	return NULL;
}

static bool
transition_allowed(const char *from, const char *to)
{
	for (int i = 0; i < NUM_TRANSITIONS; i++)
	{
		if (strcmp(transitions[i].from, from) == 0 &&
			strcmp(transitions[i].to, to) == 0)
			return true;
	}
	return false;
}

/* Comma-separated list of the statuses that may follow "from", for errdetail. */
static char *
next_states(const char *from)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < NUM_TRANSITIONS; i++)
	{
		if (strcmp(transitions[i].from, from) != 0)
			continue;
		if (buf.len > 0)
			appendStringInfoString(&buf, ", ");
		appendStringInfoString(&buf, transitions[i].to);
	}
	return buf.data;
}

/* An oms.order_status label, checked against the table. */
static const char *
status_label(Datum status)
{
	char	   *label = DatumGetCString(DirectFunctionCall1(enum_out, status));

	if (find_state(label) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("order status \"%s\" is not in the oms transition table", label),
				 errdetail("The enum oms.order_status and the C transition table disagree."),
				 errhint("Reinstall the oms extension so that its SQL and library match.")));
	return label;
}

static void
raise_illegal_transition(const char *from, const char *to, const char *order_id)
{
	const OrderState *state = find_state(from);

	if (state->terminal)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("illegal order status transition from \"%s\" to \"%s\"", from, to),
				 errdetail("Order %s is %s, a final status.", order_id, from)));
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("illegal order status transition from \"%s\" to \"%s\"", from, to),
			 errdetail("Order %s is %s; it may move only to: %s.",
					   order_id, from, next_states(from))));
}

PG_FUNCTION_INFO_V1(oms_transition_allowed);

/*
 * oms_transition_allowed(from oms.order_status, to oms.order_status)
 */
Datum
oms_transition_allowed(PG_FUNCTION_ARGS)
{
	const char *from = status_label(PG_GETARG_DATUM(0));
	const char *to = status_label(PG_GETARG_DATUM(1));

	PG_RETURN_BOOL(transition_allowed(from, to));
}

PG_FUNCTION_INFO_V1(oms_order_states);

/*
 * oms._order_states(): status, initial, terminal, meaning
 */
Datum
oms_order_states(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < NUM_STATES; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		values[0] = CStringGetTextDatum(states[i].name);
		values[1] = BoolGetDatum(states[i].initial);
		values[2] = BoolGetDatum(states[i].terminal);
		values[3] = CStringGetTextDatum(states[i].meaning);
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

	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < NUM_TRANSITIONS; i++)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		values[0] = CStringGetTextDatum(transitions[i].from);
		values[1] = CStringGetTextDatum(transitions[i].to);
		values[2] = CStringGetTextDatum(transitions[i].event);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(oms_state_machine_dot);

/*
 * oms_state_machine_dot(): the transition table as a Graphviz digraph.
 * The initial status is bold, final statuses have a double border.
 */
Datum
oms_state_machine_dot(PG_FUNCTION_ARGS)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf,
						   "digraph order_status {\n"
						   "\trankdir=LR;\n"
						   "\tnode [shape=box, style=rounded, fontname=\"Helvetica\"];\n"
						   "\tedge [fontname=\"Helvetica\", fontsize=10];\n");
	for (int i = 0; i < NUM_STATES; i++)
	{
		appendStringInfo(&buf, "\t%s", states[i].name);
		if (states[i].initial)
			appendStringInfoString(&buf, " [style=\"rounded,bold\"]");
		else if (states[i].terminal)
			appendStringInfoString(&buf, " [peripheries=2]");
		appendStringInfoString(&buf, ";\n");
	}
	for (int i = 0; i < NUM_TRANSITIONS; i++)
		appendStringInfo(&buf, "\t%s -> %s [label=\"%s\"];\n",
						 transitions[i].from, transitions[i].to,
						 transitions[i].event);
	appendStringInfoString(&buf, "}\n");

	PG_RETURN_TEXT_P(cstring_to_text(buf.data));
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
column_number(TupleDesc desc, const char *name)
{
	int			attnum = SPI_fnumber(desc, name);

	if (attnum <= 0)
		elog(ERROR, "oms.orders has no column \"%s\"", name);
	return attnum;
}

PG_FUNCTION_INFO_V1(oms_order_status_guard);

/*
 * BEFORE INSERT OR UPDATE row trigger on oms.orders, enabled ALWAYS so that
 * it also fires under session_replication_role = replica.
 *
 * A new order must start in the initial status with version 1, unless
 * oms.restoring is on (a superuser restoring a dump).  An update
 * that changes the status must follow the transition table and bumps
 * version; writing the same status again counts as a transition only when
 * the table has that self-loop.  Version is owned by this trigger: any other
 * value written to it is replaced.
 */
Datum
oms_order_status_guard(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	HeapTuple	newtuple;
	int			status_att;
	int			version_att;
	int			updated_att;
	int			id_att;
	bool		isnull;
	const char *to;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		elog(ERROR, "oms_order_status_guard must be a BEFORE INSERT OR UPDATE row trigger");

	desc = trigdata->tg_relation->rd_att;
	status_att = column_number(desc, "status");
	version_att = column_number(desc, "version");
	updated_att = column_number(desc, "updated_at");
	id_att = column_number(desc, "id");

	newtuple = TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) ?
		trigdata->tg_trigtuple : trigdata->tg_newtuple;

	to = status_label(heap_getattr(newtuple, status_att, desc, &isnull));

	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) && oms_restoring)
	{
		/* A restored row carries the status and version it had. */
	}
	else if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
	{
		if (!find_state(to)->initial)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("a new order must start in status \"%s\", not \"%s\"",
							states[0].name, to)));
		newtuple = set_column(newtuple, desc, version_att, Int32GetDatum(1));
	}
	else
	{
		HeapTuple	oldtuple = trigdata->tg_trigtuple;
		const char *from = status_label(heap_getattr(oldtuple, status_att, desc, &isnull));
		int32		version = DatumGetInt32(heap_getattr(oldtuple, version_att, desc, &isnull));
		bool		status_written = bms_is_member(status_att - FirstLowInvalidHeapAttributeNumber,
												   trigdata->tg_updatedcols);
		bool		changes;

		/* A self-loop is a transition only when the UPDATE names the status. */
		changes = strcmp(from, to) != 0 ||
			(status_written && transition_allowed(from, to));

		if (changes && !transition_allowed(from, to))
		{
			char	   *id = DatumGetCString(DirectFunctionCall1(uuid_out,
																 heap_getattr(oldtuple, id_att, desc, &isnull)));

			raise_illegal_transition(from, to, id);
		}
		if (changes)
			version++;
		newtuple = set_column(newtuple, desc, version_att, Int32GetDatum(version));
		newtuple = set_column(newtuple, desc, updated_att,
							  TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()));
	}

	return PointerGetDatum(newtuple);
}
