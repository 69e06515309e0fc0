/*-------------------------------------------------------------------------
 *
 * oms.h
 *	  What belongs to the library as a whole rather than to one module:
 *	  the version it is built as, and the hint of the errors that want it
 *	  preloaded.
 *
 * Each module declares what it exports in the header named for its file
 * (guc.h for guc.c, shmem.h for shmem.c, ...), and each file includes
 * postgres.h first, then the headers of the modules it uses.  This header
 * pairs with oms.c, which uses every module, so no module header includes
 * it and a file includes it only for what it holds; OMS_VERSION itself
 * comes from the compiler's command line and is checked here, as oms.c
 * is always compiled.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OMS_H
#define OMS_H

/* The control file's default_version, passed on by the Makefile. */
#ifndef OMS_VERSION
#error "OMS_VERSION is not defined: build oms with its Makefile"
#endif

/* The hint of every error that needs oms in shared_preload_libraries. */
#define OMS_PRELOAD_HINT \
	"Add oms to shared_preload_libraries in postgresql.conf and restart the server."

#endif							/* OMS_H */
