/*-------------------------------------------------------------------------
 *
 * oms.h
 *	  Declarations shared between the C files of the oms extension.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OMS_H
#define OMS_H

#include "postgres.h"

/* guc.c: settings under the reserved "oms." prefix */
extern int	oms_idempotency_ttl;
extern bool oms_restoring;
extern int	oms_max_order_items;
extern int	oms_max_item_quantity;

extern void oms_define_gucs(void);

#endif							/* OMS_H */
