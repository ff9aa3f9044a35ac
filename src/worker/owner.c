/* owner.c — which worker owns a user; see worker.h. */
#include "worker/worker.h"

#include <stddef.h>

unsigned worker_owner(const char *user, size_t len, unsigned count)
{
    /* FNV-1a, 64 bits: simple, stable, and even enough for ids like "u12345". */
    uint64_t h = 14695981039346656037ULL;

    if (count <= 1)
        return 0;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)user[i];
        h *= 1099511628211ULL;
    }
    /* Mix the high bits in: FNV's low bits follow the last byte too closely. */
    h ^= h >> 29;
    return (unsigned)(h % count);
}
