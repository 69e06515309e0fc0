/*-------------------------------------------------------------------------
 *
 * launcher.h
 *	  launcher.c: the launcher that keeps the workers of each database
 *	  running, and the DROP DATABASE hook that stops them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OMS_LAUNCHER_H
#define OMS_LAUNCHER_H

extern void oms_register_launcher(void);
extern void oms_install_utility_hook(void);
extern PGDLLEXPORT void oms_launcher_main(Datum main_arg);

#endif							/* OMS_LAUNCHER_H */
