/*
 * fuzz_as_ping.c — libFuzzer target for what an ActiveSync client sends
 * nudge before any check of who it is: the Ping WBXML body and the query
 * (both forms). The first input byte chooses which.
 *
 * Besides "no crash, no sanitizer report", it checks the decoder's
 * contract: an accepted document never claims more kept folders than the
 * capacity, and every kept Id is a non-empty C string within AS_ID_MAX.
 * An accepted document is also re-encoded as an answer (the encoder must
 * take any Id the decoder lets through).
 *
 *   make fuzz         builds build-fuzz/fuzz_as_ping (clang, -fsanitize=fuzzer,address)
 *   make fuzz-smoke   a short run (20000 inputs) from fuzz/corpus/as_ping
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "activesync/query.h"
#include "activesync/wbxml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];

    if (size == 0)
        return 0;
    if (data[0] & 1) {
        struct as_query q;
        if (size - 1 <= AS_QUERY_MAX)
            (void)as_query_parse((const char *)data + 1, size - 1, &q, err, sizeof(err));
        return 0;
    }
    {
        struct as_folder f[8];
        struct as_ping_req pq = {.folders = f, .cap = 8};
        if (as_wbxml_decode_ping(data + 1, size - 1, &pq, err, sizeof(err)) == 0) {
            const char *ids[8];
            size_t kept = pq.nfolders < pq.cap ? pq.nfolders : pq.cap, len;
            struct as_ping_answer a = {.status = 2, .folders = ids, .nfolders = kept};
            uint8_t *b;
            for (size_t i = 0; i < kept; i++) {
                size_t l = strlen(f[i].id);
                if (l == 0 || l > AS_ID_MAX)
                    abort();
                ids[i] = f[i].id;
            }
            b = as_wbxml_encode_ping(&a, &len);
            free(b);
        }
    }
    return 0;
}
