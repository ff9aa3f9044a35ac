/* store.c — the table of store backends, chosen by name. */
#include "store/store.h"

#include <string.h>

static const struct store_backend *const backends[] = {
    &store_sqlite_backend,
    &store_mem_backend,
};

const struct store_backend *store_backend_find(const char *name)
{
    for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
        if (strcmp(backends[i]->name, name) == 0)
            return backends[i];
    return NULL;
}

const char *store_backend_names(void)
{
    return "sqlite, memory";
}
