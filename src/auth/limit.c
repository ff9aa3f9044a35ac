/* limit.c — failed sign-ins per key in fixed windows; see limit.h. */
#include "auth/limit.h"

#include "common/util.h"

void auth_limit_init(struct auth_limit *l, _Atomic uint64_t *slots, uint64_t seed, unsigned max,
                     unsigned window)
{
    l->slots = slots;
    l->seed = seed;
    l->max = max;
    l->window = window ? window : 1;
}

void auth_limit_share(struct auth_limit *l, const struct auth_limit *like, unsigned max)
{
    *l = *like;
    l->max = max;
}

static _Atomic uint64_t *slot_of(const struct auth_limit *l, const void *key, size_t len)
{
    return &l->slots[util_hash(l->seed, key, len) % AUTH_LIMIT_SLOTS];
}

unsigned auth_limit_check(const struct auth_limit *l, const void *key, size_t len, uint64_t now)
{
    uint64_t w = now / l->window, v;

    if (l->max == 0)
        return 0;
    v = atomic_load_explicit(slot_of(l, key, len), memory_order_relaxed);
    if (v >> 32 != (w & 0xffffffffu) || (v & 0xffffffffu) < l->max)
        return 0;
    return (unsigned)((w + 1) * l->window - now);
}

unsigned auth_limit_fail(struct auth_limit *l, const void *key, size_t len, uint64_t now)
{
    _Atomic uint64_t *s = slot_of(l, key, len);
    uint64_t w = (now / l->window) & 0xffffffffu, v, next;

    if (l->max == 0)
        return 0;
    v = atomic_load_explicit(s, memory_order_relaxed);
    do {
        /* A slot of an older window starts again at one. */
        next = v >> 32 == w ? v + ((v & 0xffffffffu) < 0xffffffffu) : (w << 32 | 1);
    } while (!atomic_compare_exchange_weak_explicit(s, &v, next, memory_order_relaxed,
                                                    memory_order_relaxed));
    if ((next & 0xffffffffu) != l->max)
        return 0;
    return (unsigned)(((now / l->window) + 1) * l->window - now);
}
