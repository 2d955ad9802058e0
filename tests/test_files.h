/* test_files.h — temporary directories for tests that write files. */
#ifndef CR_TEST_FILES_H
#define CR_TEST_FILES_H

#include <stddef.h>

/* Creates a fresh directory $TMPDIR/PREFIX_XXXXXX (or under /tmp) and writes its path
 * into buf; fails the current test if it cannot. */
void cr_test_temp_dir(char *buf, size_t len, const char *prefix);
/* Removes every entry of dir (files, FIFOs, links; one level), then dir itself. */
void cr_test_remove_temp_dir(const char *dir);

#endif
