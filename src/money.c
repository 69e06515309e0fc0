/*-------------------------------------------------------------------------
 *
 * money.c
 *	  Order lines in, priced order lines out: validation of the items
 *	  document and the money arithmetic on it.
 *
 * Amounts are integers in the currency's minor unit (cents for USD, yen
 * for JPY).  Line totals and the order total are computed here from
 * quantity and unit price, never taken from the caller, and every
 * multiplication and addition is checked: an order whose total does not
 * fit in a bigint is refused instead of wrapping.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/int.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "common/jsonapi.h"
#include "nodes/pg_list.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/jsonfuncs.h"
#include "utils/numeric.h"

#include "guc.h"
#include "input.h"

typedef struct PricedItem
{
	char	   *sku;
	int64		quantity;
	int64		unit_price;
	int64		line_total;
} PricedItem;

static void
bad_item(int position, const char *detail_fmt, const char *value)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid order item %d", position),
			 errdetail_internal(detail_fmt, value)));
}

/*
 * A JSON number that must be an integer in [min, max].  JSON has no
 * integer type, so 2.5 and 1e30 arrive as numerics and are refused here
 * rather than rounded or wrapped.
 */
static int64
item_integer(JsonbValue *v, int position, const char *field, int64 min, int64 max)
{
	Numeric		num;
	char	   *text;
	bool		in_range;

	if (v->type != jbvNumeric)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid order item %d", position),
				 errdetail("Field \"%s\" must be a JSON integer, not %s.",
						   field, oms_json_type_name(v))));

	num = v->val.numeric;
	text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(num)));
	if (numeric_is_nan(num) || numeric_is_inf(num) ||
		!DatumGetBool(DirectFunctionCall2(numeric_eq, NumericGetDatum(num),
										  DirectFunctionCall2(numeric_trunc, NumericGetDatum(num),
															  Int32GetDatum(0)))))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid order item %d", position),
				 errdetail("Field \"%s\" must be a whole number, got %s.", field, text)));

	in_range = DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(num),
												 NumericGetDatum(int64_to_numeric(min)))) >= 0 &&
		DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(num),
										  NumericGetDatum(int64_to_numeric(max)))) <= 0;
	if (!in_range)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid order item %d", position),
				 errdetail("Field \"%s\" must be between " INT64_FORMAT " and " INT64_FORMAT ", got %s.",
						   field, min, max, text)));
	return DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(num)));
}

static char *
item_sku(JsonbValue *v, int position)
{
	const char *problem;
	int			sqlstate;

	if (v->type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid order item %d", position),
				 errdetail("Field \"sku\" must be a JSON string, not %s.", oms_json_type_name(v))));

	/* The same rule as every other SKU argument (src/input.c). */
	problem = oms_identifier_problem("Field \"sku\"", v->val.string.val, v->val.string.len,
									 OMS_SKU_MAX_CHARS, &sqlstate);
	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid order item %d", position),
				 errdetail_internal("%s", problem),
				 errhint("A SKU has 1 to %d characters, no control characters and no white space at either end.",
						 OMS_SKU_MAX_CHARS)));
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* One element of the items array: an object with exactly sku, quantity, unit_price. */
static void
parse_item(JsonbValue *elem, int position, PricedItem *item)
{
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	v;
	bool		have_sku = false,
				have_quantity = false,
				have_price = false;

	if (elem->type != jbvBinary || !JsonContainerIsObject(elem->val.binary.data))
		bad_item(position, "Each item must be a JSON object, not %s.", oms_json_type_name(elem));

	it = JsonbIteratorInit(elem->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *key;
		JsonbIteratorToken vtok PG_USED_FOR_ASSERTS_ONLY;

		if (tok != WJB_KEY)
			continue;
		key = pnstrdup(v.val.string.val, v.val.string.len);
		vtok = JsonbIteratorNext(&it, &v, true);
		Assert(vtok == WJB_VALUE);

		if (strcmp(key, "sku") == 0)
		{
			item->sku = item_sku(&v, position);
			have_sku = true;
		}
		else if (strcmp(key, "quantity") == 0)
		{
			item->quantity = item_integer(&v, position, "quantity", 1, oms_max_item_quantity);
			have_quantity = true;
		}
		else if (strcmp(key, "unit_price") == 0)
		{
			item->unit_price = item_integer(&v, position, "unit_price", 0, PG_INT64_MAX);
			have_price = true;
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid order item %d", position),
					 errdetail("Unknown field \"%s\".", key),
					 errhint("An item has exactly the fields sku, quantity and unit_price.")));
	}

	if (!have_sku || !have_quantity || !have_price)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid order item %d", position),
				 errdetail("Missing field \"%s\".",
						   !have_sku ? "sku" : !have_quantity ? "quantity" : "unit_price"),
				 errhint("An item has exactly the fields sku, quantity and unit_price.")));

	if (pg_mul_s64_overflow(item->quantity, item->unit_price, &item->line_total))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("line total of order item %d is out of range", position),
				 errdetail("Quantity " INT64_FORMAT " times unit price " INT64_FORMAT " does not fit in a bigint.",
						   item->quantity, item->unit_price)));
}

static void
check_items_document(Jsonb *items)
{
	int			count;

	if (!JB_ROOT_IS_ARRAY(items) || JB_ROOT_IS_SCALAR(items))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("items must be a JSON array"),
				 errhint("Pass items as '[{\"sku\": \"SKU-1\", \"quantity\": 1, \"unit_price\": 1999}]'.")));

	count = JB_ROOT_COUNT(items);
	if (count == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("items must contain at least one item")));
	if (count > oms_max_order_items)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("too many order items"),
				 errdetail("An order may have at most %d items, got %d.", oms_max_order_items, count),
				 errhint("The limit is set by oms.max_order_items.")));
}

static void
check_unique_skus(PricedItem *items, int count)
{
	/* Orders are small (oms.max_order_items); a quadratic scan is fine. */
	for (int i = 1; i < count; i++)
	{
		for (int j = 0; j < i; j++)
		{
			if (strcmp(items[i].sku, items[j].sku) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid order item %d", i + 1),
						 errdetail("SKU \"%s\" already appears in item %d.", items[i].sku, j + 1),
						 errhint("List each SKU once with its total quantity.")));
		}
	}
}

static Datum
priced_items_jsonb(PricedItem *items, int count, int64 total)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"items\": [");
	for (int i = 0; i < count; i++)
	{
		if (i > 0)
			appendStringInfoString(&buf, ", ");
		appendStringInfo(&buf, "{\"line_no\": %d, \"sku\": ", i + 1);
		escape_json(&buf, items[i].sku);
		appendStringInfo(&buf,
						 ", \"quantity\": " INT64_FORMAT ", \"unit_price\": " INT64_FORMAT
						 ", \"line_total\": " INT64_FORMAT "}",
						 items[i].quantity, items[i].unit_price, items[i].line_total);
	}
	appendStringInfo(&buf, "], \"total\": " INT64_FORMAT "}", total);

	return DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));
}

/*
 * Duplicate field names in the items' objects, found while the text is
 * parsed: jsonb keeps only the last of them, so {"sku": "A", "sku": "B"}
 * would silently become "B".
 */
typedef struct ItemFields
{
	int			depth;			/* nesting depth of the parser */
	bool		root_is_array;
	int			position;		/* 1-based element of the root array */
	List	   *names;			/* field names of the current item */
} ItemFields;

static void
fields_array_start(void *state)
{
	ItemFields *f = (ItemFields *) state;

	if (++f->depth == 1)
		f->root_is_array = true;
}

static void
fields_object_start(void *state)
{
	ItemFields *f = (ItemFields *) state;

	if (++f->depth == 2)
		f->names = NIL;
}

static void
fields_end(void *state)
{
	((ItemFields *) state)->depth--;
}

static void
fields_element_start(void *state, bool isnull)
{
	ItemFields *f = (ItemFields *) state;

	if (f->depth == 1)
		f->position++;
}

static void
fields_field_start(void *state, char *fname, bool isnull)
{
	ItemFields *f = (ItemFields *) state;
	ListCell   *lc;

	if (f->depth != 2 || !f->root_is_array)
		return;
	foreach(lc, f->names)
	{
		if (strcmp(lfirst(lc), fname) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid order item %d", f->position),
					 errdetail("Field \"%s\" appears more than once.", fname),
					 errhint("An item has exactly the fields sku, quantity and unit_price, each once.")));
	}
	f->names = lappend(f->names, fname);
}

PG_FUNCTION_INFO_V1(oms_items_from_text);

/*
 * oms._items_from_text(items text) RETURNS jsonb
 *
 * The items document as the caller wrote it, checked for duplicate field
 * names in its items, as jsonb.  Invalid JSON raises 22P02 like a cast.
 */
Datum
oms_items_from_text(PG_FUNCTION_ARGS)
{
	text	   *items = PG_GETARG_TEXT_PP(0);
	JsonLexContext *lex;
	JsonSemAction sem = {0};
	ItemFields	fields = {0};
	JsonParseErrorType result;

	lex = makeJsonLexContextCstringLen(VARDATA_ANY(items), VARSIZE_ANY_EXHDR(items),
									   GetDatabaseEncoding(), true);
	sem.semstate = &fields;
	sem.array_start = fields_array_start;
	sem.array_end = fields_end;
	sem.object_start = fields_object_start;
	sem.object_end = fields_end;
	sem.array_element_start = fields_element_start;
	sem.object_field_start = fields_field_start;
	result = pg_parse_json(lex, &sem);
	if (result != JSON_SUCCESS)
		json_ereport_error(result, lex);

	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(text_to_cstring(items))));
}

PG_FUNCTION_INFO_V1(oms_price_items);

/*
 * oms._price_items(items jsonb) RETURNS jsonb
 *
 * Validates the caller's items and returns
 * {"items": [{"line_no", "sku", "quantity", "unit_price", "line_total"}...], "total": n}.
 */
Datum
oms_price_items(PG_FUNCTION_ARGS)
{
	Jsonb	   *doc = PG_GETARG_JSONB_P(0);
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	v;
	PricedItem *items;
	int			count = 0;
	int64		total = 0;

	check_items_document(doc);
	items = palloc0(sizeof(PricedItem) * JB_ROOT_COUNT(doc));

	it = JsonbIteratorInit(&doc->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok != WJB_ELEM)
			continue;
		parse_item(&v, count + 1, &items[count]);
		if (pg_add_s64_overflow(total, items[count].line_total, &total))
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("order total is out of range"),
					 errdetail("The sum of the line totals does not fit in a bigint.")));
		count++;
	}
	check_unique_skus(items, count);

	PG_RETURN_DATUM(priced_items_jsonb(items, count, total));
}
