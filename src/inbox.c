/* inbox.c: placeholder until the reply consumer lands. */
#include "postgres.h"
