/*-------------------------------------------------------------------------
 *
 * oms.c
 *	  Library entry point: refuses to load outside shared_preload_libraries,
 *	  defines the oms.* settings, asks for shared memory, registers the
 *	  background worker launcher and installs the DROP DATABASE hook.
 *
 * oms is loaded once per server so that its settings, its shared memory
 * and its background workers exist in every backend from the start.
 * Loading it any other way would leave sessions with different views of
 * the settings and no shared memory, so it is refused with a hint saying
 * how to fix it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"

#include "oms.h"
#include "guc.h"
#include "launcher.h"
#include "shmem.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("oms must be loaded via shared_preload_libraries"),
				 errhint(OMS_PRELOAD_HINT)));

	oms_define_gucs();
	oms_shmem_init();
	oms_install_utility_hook();
	oms_register_launcher();
}
