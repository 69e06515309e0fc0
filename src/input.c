/*-------------------------------------------------------------------------
 *
 * input.c
 *	  What the API accepts: the rule for identifiers (customer ids, SKUs,
 *	  idempotency keys, correlation ids) and the limits of free-form JSON
 *	  arguments (metadata, payment result details).
 *
 * One rule per kind of input, applied by every function that takes one,
 * so that a value one function accepts is never refused by another (stock
 * for a SKU nobody can order, say).  An identifier:
 *
 *	  - has 1 to N characters (N depends on the kind);
 *	  - contains no control character (U+0000 to U+001F, U+007F to U+009F);
 *	  - neither starts nor ends with white space or an invisible character:
 *		the Unicode White_Space characters, and U+180E, U+200B, U+2060 and
 *		U+FEFF, which copy and paste carry along unseen.
 *
 * The characters are judged as Unicode code points whatever the database
 * encoding, so U+00A0 and U+3000 are white space alike.  docs/api.md
 * states the rule once ("Identifiers").
 *
 * Free-form JSON is stored and published with every event of its order, so
 * it is held to a size (as JSON text) and a nesting depth well below what
 * the outbox relay can publish: an argument accepted here never becomes an
 * event that can never be delivered.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "guc.h"
#include "input.h"

PG_FUNCTION_INFO_V1(oms_check_identifier);
PG_FUNCTION_INFO_V1(oms_check_json_argument);

/* Deepest nesting of free-form JSON: an object in an object ... 32 levels. */
#define JSON_MAX_DEPTH 32

static bool
is_control(pg_wchar c)
{
	return c < 0x20 || (c >= 0x7f && c <= 0x9f);
}

/* White space (Unicode White_Space) and invisible characters. */
static bool
is_blank(pg_wchar c)
{
	return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 ||
		c == 0x1680 || c == 0x180e || (c >= 0x2000 && c <= 0x200b) ||
		c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
		c == 0x2060 || c == 0x3000 || c == 0xfeff;
}

/*
 * The value as Unicode code points; *count is their number.  A database in
 * another encoding than UTF-8 is converted first, so the rule means the
 * same characters everywhere.
 */
static pg_wchar *
code_points(const char *value, int len, int *count)
{
	const char *utf8 = value;
	int			utf8len = len;
	pg_wchar   *chars;

	if (GetDatabaseEncoding() != PG_UTF8)
	{
		utf8 = pg_server_to_any(value, len, PG_UTF8);
		utf8len = strlen(utf8);
	}
	chars = palloc(sizeof(pg_wchar) * (utf8len + 1));
	*count = pg_encoding_mb2wchar_with_len(PG_UTF8, utf8, chars, utf8len);
	return chars;
}

/*
 * Why an identifier breaks the rule, as an errdetail-ready sentence about
 * "what" (the argument's name), or NULL when it does not; *sqlstate is the
 * code to raise.  The length is judged first, so a huge value costs no
 * decoding.
 */
const char *
oms_identifier_problem(const char *what, const char *value, int len, int max_chars,
					   int *sqlstate)
{
	int			nchars = pg_mbstrlen_with_len(value, len);
	pg_wchar   *chars;
	int			count;

	*sqlstate = ERRCODE_INVALID_PARAMETER_VALUE;
	if (nchars == 0)
		return psprintf("%s is empty.", what);
	if (nchars > max_chars)
	{
		*sqlstate = ERRCODE_STRING_DATA_RIGHT_TRUNCATION;
		return psprintf("%s has at most %d characters, got %d.", what, max_chars, nchars);
	}
	chars = code_points(value, len, &count);
	for (int i = 0; i < count; i++)
	{
		if (is_control(chars[i]))
			return psprintf("%s contains the control character U+%04X at character %d.",
							what, chars[i], i + 1);
	}
	if (is_blank(chars[0]))
	{
		for (int i = 1; i < count; i++)
		{
			if (!is_blank(chars[i]))
				return psprintf("%s starts with the white space or invisible character U+%04X.",
								what, chars[0]);
		}
		return psprintf("%s consists of white space only.", what);
	}
	if (is_blank(chars[count - 1]))
		return psprintf("%s ends with the white space or invisible character U+%04X.",
						what, chars[count - 1]);
	return NULL;
}

/*
 * oms._check_identifier(p_name text, p_value text, p_max_chars integer)
 * RETURNS void: raises 22004 for NULL, 22001 for too long, 22023 for an
 * empty value or one that breaks the rule above.  Not STRICT: NULL is an
 * error with a name.
 */
Datum
oms_check_identifier(PG_FUNCTION_ARGS)
{
	char	   *name;
	text	   *value;
	int			max_chars;
	const char *problem;
	int			sqlstate;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(2))
		elog(ERROR, "oms._check_identifier needs a name and a length");
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	max_chars = PG_GETARG_INT32(2);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", name)));

	value = PG_GETARG_TEXT_PP(1);
	problem = oms_identifier_problem(name, VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value),
									 max_chars, &sqlstate);
	if (problem == NULL)
		PG_RETURN_VOID();
	if (VARSIZE_ANY_EXHDR(value) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", name)));
	if (sqlstate == ERRCODE_STRING_DATA_RIGHT_TRUNCATION)
		ereport(ERROR,
				(errcode(sqlstate),
				 errmsg("%s is too long", name),
				 errdetail_internal("%s", problem)));
	ereport(ERROR,
			(errcode(sqlstate),
			 errmsg("invalid %s", name),
			 errdetail_internal("%s", problem),
			 errhint("An identifier has no control characters and no white space at either end; see \"Identifiers\" in docs/api.md.")));
	PG_RETURN_VOID();
}

/* The JSON type of a value, as jsonb_typeof says it. */
const char *
oms_json_type_name(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return "null";
		case jbvString:
			return "string";
		case jbvNumeric:
			return "number";
		case jbvBool:
			return "boolean";
		case jbvBinary:
			return JsonContainerIsArray(v->val.binary.data) ? "array" : "object";
		default:
			return "unknown";
	}
}

/* The JSON type of a whole document. */
static const char *
document_type_name(Jsonb *value)
{
	JsonbValue	v;

	if (JB_ROOT_IS_SCALAR(value))
	{
		JsonbExtractScalar(&value->root, &v);
		return oms_json_type_name(&v);
	}
	return JB_ROOT_IS_ARRAY(value) ? "array" : "object";
}

/* How deep a jsonb value nests: 1 for a scalar, an empty array or object. */
static int
jsonb_depth(Jsonb *value)
{
	JsonbIterator *it = JsonbIteratorInit(&value->root);
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			depth = 0;
	int			deepest = 1;

	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		if (tok == WJB_BEGIN_ARRAY || tok == WJB_BEGIN_OBJECT)
		{
			depth++;
			deepest = Max(deepest, depth);
		}
		else if (tok == WJB_END_ARRAY || tok == WJB_END_OBJECT)
			depth--;
	}
	return deepest;
}

/*
 * oms._check_json_argument(p_name text, p_value jsonb, p_max_bytes integer)
 * RETURNS void: raises 22004 for NULL, 22023 when the value is not a JSON
 * object, 54000 when its JSON text is longer than p_max_bytes or it nests
 * deeper than JSON_MAX_DEPTH.  The empty object, the usual value, costs
 * nothing.
 */
Datum
oms_check_json_argument(PG_FUNCTION_ARGS)
{
	char	   *name;
	Jsonb	   *value;
	int			max_bytes;
	int			depth;
	char	   *json;
	size_t		bytes;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(2))
		elog(ERROR, "oms._check_json_argument needs a name and a size");
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	max_bytes = PG_GETARG_INT32(2);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", name)));
	value = PG_GETARG_JSONB_P(1);

	if (!JB_ROOT_IS_OBJECT(value))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object", name),
				 errdetail("Got a JSON %s.", document_type_name(value))));
	if (JB_ROOT_COUNT(value) == 0)
		PG_RETURN_VOID();

	/*
	 * Printing a huge value only to measure it is wasted: its JSON text is
	 * never shorter than an eighth of its stored size (a number of one digit,
	 * the worst case, takes 8 bytes or less stored).
	 */
	if (VARSIZE(value) / 8 > (Size) max_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%s is too large", name),
				 errdetail("%s has at most %d bytes as JSON text, got more than %zu.",
						   name, max_bytes, (size_t) VARSIZE(value) / 8),
				 errhint("Keep large data outside the order and store a reference to it.")));
	json = JsonbToCString(NULL, &value->root, VARSIZE(value));
	bytes = strlen(json);
	pfree(json);
	if (bytes > (size_t) max_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%s is too large", name),
				 errdetail("%s has at most %d bytes as JSON text, got %zu.", name, max_bytes, bytes),
				 errhint("Keep large data outside the order and store a reference to it.")));

	depth = jsonb_depth(value);
	if (depth > JSON_MAX_DEPTH)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%s is nested too deeply", name),
				 errdetail("%s nests at most %d levels of arrays and objects, got %d.",
						   name, JSON_MAX_DEPTH, depth)));
	PG_RETURN_VOID();
}

/*
 * Room the relay needs in a Kafka message besides the order document: the
 * event's own fields (a reason, an error) and its headers.
 */
#define EVENT_RESERVE_BYTES 16384

/*
 * The most an order document can take as JSON text besides its metadata
 * and lines (ids, customer_id of 255 characters of up to 4 bytes, status,
 * currency, amounts, times, field names), and the most one line can take
 * (a SKU of 100 characters of up to 4 bytes, four integers, field names).
 */
#define DOCUMENT_FIXED_BYTES 2048
#define DOCUMENT_LINE_BYTES 560

PG_FUNCTION_INFO_V1(oms_check_publishable);

/*
 * oms._check_publishable(p_document jsonb) RETURNS void: raises 54000 when
 * an order document is too large for every event of the order to fit in
 * oms.kafka_max_message_bytes.  The relay would dead-letter such an event
 * for good, leaving a gap in the order's stream; refusing the order is
 * better.  Checked once, at creation: later events carry the same document.
 */
Datum
oms_check_publishable(PG_FUNCTION_ARGS)
{
	Jsonb	   *document;
	char	   *json;
	int64		bytes;
	int64		limit = (int64) oms_kafka_max_message_bytes - EVENT_RESERVE_BYTES;

	/*
	 * With the usual settings no order can be that large: then the document
	 * need not be printed to be measured on every order.
	 */
	if ((int64) oms_max_order_items * DOCUMENT_LINE_BYTES + oms_max_metadata_bytes +
		DOCUMENT_FIXED_BYTES <= limit)
		PG_RETURN_VOID();

	document = PG_GETARG_JSONB_P(0);
	json = JsonbToCString(NULL, &document->root, VARSIZE(document));
	bytes = strlen(json);
	if (bytes > limit)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("order is too large to publish"),
				 errdetail("Its document has " INT64_FORMAT " bytes as JSON text; its events must fit in oms.kafka_max_message_bytes (%d) less %d bytes for their other fields and headers.",
						   bytes, oms_kafka_max_message_bytes, EVENT_RESERVE_BYTES),
				 errhint("Split the order, or raise oms.kafka_max_message_bytes along with the brokers' limit.")));
	pfree(json);
	PG_RETURN_VOID();
}

/*
 * oms._uuid_v7() RETURNS uuid: a time-ordered UUID (RFC 9562 version 7):
 * the Unix time in milliseconds in the first 48 bits, then the version,
 * 74 random bits and the variant.  The default of the ids of the tables an
 * order writes to: random version 4 ids put every insert into a random
 * leaf of every index keyed by an order id (orders, order_items,
 * order_events, sagas, saga_steps, payments, reservations), so that once
 * the indexes outgrow memory, history makes inserts slower, and after each
 * checkpoint nearly every insert writes a full page image.  Time-ordered
 * ids keep those inserts at the right edge of each index.  Here, not in a
 * file of its own, because ids are what the API hands out and takes back.
 */
#include "utils/timestamp.h"
#include "utils/uuid.h"

/* The 12 rand_a bits of a version 7 id hold at most this many partitions. */
#define OMS_PARTITION_BITS_MAX 4096

/* Fills uuid with a fresh version 7 id. */
static void
fill_uuid_v7(pg_uuid_t *uuid)
{
	/* cppcheck-suppress shadowFunction ; SQL now() is not called here */
	TimestampTz now = GetCurrentTimestamp();
	uint64		ms;
	int			i;

	if (!pg_strong_random(uuid->data, UUID_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random values")));

	/* TimestampTz counts microseconds from 2000-01-01. */
	ms = (uint64) (now / 1000) +
		(uint64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;
	for (i = 5; i >= 0; i--)
	{
		uuid->data[i] = (unsigned char) (ms & 0xff);
		ms >>= 8;
	}
	uuid->data[6] = (uuid->data[6] & 0x0f) | 0x70;	/* version 7 */
	uuid->data[8] = (uuid->data[8] & 0x3f) | 0x80;	/* variant 10 */
}

PG_FUNCTION_INFO_V1(oms_uuid_v7);

Datum
oms_uuid_v7(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *uuid = palloc(sizeof(pg_uuid_t));

	fill_uuid_v7(uuid);
	PG_RETURN_UUID_P(uuid);
}

/*
 * oms._uuid_v7(partition integer, partition_count integer) RETURNS uuid: a
 * version 7 id whose 12 rand_a bits carry a partition of a sharded cluster,
 * so the router finds an order's shard from its id alone, and every id an
 * order hands out (shipments, returns, sagas) finds it the same way.  Only
 * the low log2(partition_count) bits are set; the bits above stay random,
 * so a cluster that later doubles its partitions splits each one in two.
 * A NULL partition gives a plain random id (an unsharded node).
 */
PG_FUNCTION_INFO_V1(oms_uuid_v7_in);

Datum
oms_uuid_v7_in(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *uuid = palloc(sizeof(pg_uuid_t));
	int32		count;
	uint32		mask;
	uint32		bits;

	fill_uuid_v7(uuid);
	if (PG_ARGISNULL(0))
		PG_RETURN_UUID_P(uuid);
	count = PG_ARGISNULL(1) ? OMS_PARTITION_BITS_MAX : PG_GETARG_INT32(1);
	if (count < 1 || count > OMS_PARTITION_BITS_MAX || (count & (count - 1)) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("partition count must be a power of two between 1 and %d", OMS_PARTITION_BITS_MAX)));
	mask = (uint32) count - 1;
	bits = (((uint32) (uuid->data[6] & 0x0f) << 8) | uuid->data[7]) & ~mask;
	bits |= (uint32) PG_GETARG_INT32(0) & mask;
	uuid->data[6] = 0x70 | (unsigned char) (bits >> 8);
	uuid->data[7] = (unsigned char) (bits & 0xff);
	PG_RETURN_UUID_P(uuid);
}
