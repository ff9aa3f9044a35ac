/*
 * fuzz_state_id.c — the stream event id (Last-Event-ID, pushState) reader
 * of src/stream/state_id.c, on anything a client can send, and the round
 * trip: an id written for names taken from the input reads back exactly.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/jsonw.h"
#include "stream/state_id.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1), *names, *p;
    struct store_folder f[8] = {{"INBOX", 0}, {"Sent", 0}, {"a,b", 0}, {"%", 0}};
    struct store_folder back[8];
    size_t n = 4;
    struct jsonw w;
    size_t len;
    char *id;

    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    /* Garbage: read, never crash; a failed read leaves every state unknown. */
    if (state_id_read(text, f, n) < 0)
        for (size_t i = 0; i < n; i++)
            if (f[i].state != STATE_ID_UNKNOWN)
                abort();
    /* Round trip: names are the input's NUL-free pieces split at newlines. */
    names = strndup(text, size);
    n = 0;
    for (p = strtok(names, "\n"); p && n < 8; p = strtok(NULL, "\n")) {
        size_t k;
        for (k = 0; k < n && strcmp(f[k].name, p) != 0; k++)
            ;
        if (k < n || p[0] == '\r')
            continue;
        f[n].name = p;
        f[n].state = (uint64_t)n * 1000003u + strlen(p);
        n++;
    }
    jw_init(&w);
    jw_raw(&w, STATE_ID_PREFIX, 2);
    for (size_t i = 0; i < n; i++)
        state_id_entry(&w, f[i].name, f[i].state, i == 0);
    id = jw_take(&w, &len);
    for (size_t i = 0; i < n; i++)
        back[i] = (struct store_folder){f[i].name, STATE_ID_UNKNOWN};
    if (n > 0 && strchr(id, '\r') == NULL) {
        if (state_id_read(id, back, n) < 0)
            abort();
        for (size_t i = 0; i < n; i++)
            if (back[i].state != f[i].state)
                abort();
    }
    free(id);
    free(names);
    free(text);
    return 0;
}
