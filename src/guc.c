/*-------------------------------------------------------------------------
 *
 * guc.c
 *	  The oms.* configuration settings.
 *
 * Every setting lives under the "oms." prefix, which is reserved so that a
 * misspelt oms setting is reported instead of silently becoming a
 * placeholder.  docs/configuration.md describes each one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "utils/guc.h"

#include "oms.h"

/* How long an idempotency key replays its response, in seconds. */
int			oms_idempotency_ttl = 24 * 60 * 60;

/* Set by a superuser while restoring a dump: rows arrive in their final status. */
bool		oms_restoring = false;

/* Input limits: guard against absurd orders before any arithmetic. */
int			oms_max_order_items = 1000;
int			oms_max_item_quantity = 1000000;

void
oms_define_gucs(void)
{
	DefineCustomIntVariable("oms.idempotency_ttl",
							"How long an idempotency key replays the stored response.",
							"After this time oms_purge_idempotency_keys() removes the key and "
							"the key may be used for a new request.",
							&oms_idempotency_ttl,
							24 * 60 * 60, 1, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("oms.max_order_items",
							"Largest number of lines accepted in one order.",
							NULL,
							&oms_max_order_items,
							1000, 1, 100000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("oms.max_item_quantity",
							"Largest quantity accepted on one order line.",
							NULL,
							&oms_max_item_quantity,
							1000000, 1, INT_MAX,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("oms.restoring",
							 "Accepts orders inserted in any status, for restoring a dump.",
							 "While on, inserted orders keep the status and version they carry. "
							 "Status changes by UPDATE stay guarded.",
							 &oms_restoring,
							 false,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	MarkGUCPrefixReserved("oms");
}
