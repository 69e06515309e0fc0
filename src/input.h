/*-------------------------------------------------------------------------
 *
 * input.h
 *	  input.c: the identifier rule of the API (docs/api.md,
 *	  "Identifiers") for the C code that takes identifiers itself.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OMS_INPUT_H
#define OMS_INPUT_H

#include "utils/jsonb.h"

/* Longest SKU, in characters. */
#define OMS_SKU_MAX_CHARS 100

extern const char *oms_identifier_problem(const char *what, const char *value, int len,
										  int max_chars, int *sqlstate);
extern const char *oms_json_type_name(JsonbValue *v);

#endif							/* OMS_INPUT_H */
