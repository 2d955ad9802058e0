/* test_files.c — temporary directories for tests that write files. */
#include "test_files.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cr_test.h"

void cr_test_temp_dir(char *buf, size_t len, const char *prefix)
{
    const char *base = getenv("TMPDIR");
    snprintf(buf, len, "%s/%s_XXXXXX", base && *base ? base : "/tmp", prefix);
    if (!mkdtemp(buf)) fail_msg("cannot create a temporary directory %s", buf);
}

void cr_test_remove_temp_dir(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        remove(path);
    }
    closedir(d);
    assert_int_equal(rmdir(dir), 0);
}
