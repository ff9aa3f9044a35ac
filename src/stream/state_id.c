/* state_id.c — the text of a stream's event id; see state_id.h. */
#include "stream/state_id.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/jsonw.h"
#include "common/util.h"
#include "common/xalloc.h"

void state_id_entry(struct jsonw *w, const char *name, uint64_t state, int first)
{
    char num[UTIL_U64_DIGITS + 1], esc[4];

    if (!first)
        jw_raw(w, ",", 1);
    for (const char *p = name; *p; p++) {
        if (*p == '%' || *p == ',' || *p == '=' || *p == '+' || *p == ' ') {
            snprintf(esc, sizeof(esc), "%%%02X", (unsigned char)*p);
            jw_raw(w, esc, 3);
        } else {
            jw_raw(w, p, 1);
        }
    }
    jw_raw(w, "=", 1);
    jw_raw(w, num, util_u64_dec(num, state));
}

int state_id_read(const char *h, struct store_folder *f, size_t n)
{
    size_t len = strlen(h);
    char *buf, *p, *next;
    int rc = -1;

    if (strncmp(h, STATE_ID_PREFIX, 2) != 0 || len > 64 * 1024) {
        buf = NULL;
        goto fail;
    }
    buf = xstrdup(h + 2);
    for (p = buf; p && *p; p = next) {
        char *eq, *end;
        uint64_t st;
        long nl;
        next = strchr(p, ',');
        if (next)
            *next++ = '\0';
        eq = strchr(p, '=');
        if (eq == NULL)
            goto fail;
        *eq = '\0';
        nl = util_url_decode(p, strlen(p));
        if (nl <= 0)
            goto fail;
        p[nl] = '\0';
        errno = 0;
        st = strtoull(eq + 1, &end, 10);
        if (eq[1] < '0' || eq[1] > '9' || *end != '\0' || errno != 0)
            goto fail;
        for (size_t i = 0; i < n; i++)
            if (strcmp(f[i].name, p) == 0)
                f[i].state = st;
    }
    rc = 0;
fail:
    free(buf);
    if (rc < 0)
        for (size_t i = 0; i < n; i++)
            f[i].state = STATE_ID_UNKNOWN;
    return rc;
}
