/*
 * test_tls.c — the record layer (src/tls/record.c) and an established
 * connection's input (src/tls/server.c) without a socket: every version and
 * cipher seals what it opens, and refuses a record that was changed,
 * replayed, cut or too long. Interoperability with real TLS stacks is
 * tests/e2e/test_tls.py; this is the part that must fail closed.
 *
 * Both directions get the same keys here (the secrets and key block are made
 * symmetric), so a record sealed as the server opens as if the client sent it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tls/record.h"
#include "tls/tls.h"

static const uint8_t secret[48] = {3, 1, 4, 1, 5, 9, 2, 6};

/* The six (version, cipher) pairs: 1..3 TLS 1.3, 4..6 TLS 1.2. */
static void setup(struct tls_rec *r, int which)
{
    enum tls_cipher c = (enum tls_cipher)((which - 1) % 3 + 1);

    if (which <= 3) {
        assert_int_equal(tls_rec_init13(r, c, secret, secret, 32), 0);
    } else {
        uint8_t cr[32] = {1}, sr[32] = {2};
        assert_int_equal(tls_rec_init12(r, c, 0, secret, 48, cr, sr), 0);
        /* Make the server's keys the client's, so our seal opens as the client's record. */
        memcpy(r->server_key, r->client_key, sizeof(r->client_key));
        memcpy(r->server_iv, r->client_iv, sizeof(r->client_iv));
    }
}

static size_t seal(struct tls_rec *r, uint8_t type, const char *text, uint8_t *out)
{
    size_t n = tls_rec_seal(r, type, (const uint8_t *)text, strlen(text), out);
    assert_true(n > 0);
    return n;
}

static void test_every_cipher_opens_what_it_seals(void **state)
{
    (void)state;
    for (int which = 1; which <= 6; which++) {
        struct tls_rec r;
        uint8_t rec[256], type = 0, *p;
        size_t n, len;
        const char *why = NULL;

        setup(&r, which);
        for (int i = 0; i < 3; i++) { /* sequence numbers move on both sides */
            n = seal(&r, TLS_CT_APPDATA, "GET /healthz HTTP/1.1\r\n\r\n", rec);
            assert_int_equal(tls_rec_length(rec, n), n);
            assert_int_equal(tls_rec_open(&r, rec, n, &type, &p, &len, &why), 0);
            assert_int_equal(type, TLS_CT_APPDATA);
            assert_int_equal(len, 25);
            assert_memory_equal(p, "GET /healthz HTTP/1.1\r\n\r\n", 25);
        }
    }
}

static void test_changed_replayed_or_cut_records_are_refused(void **state)
{
    (void)state;
    for (int which = 1; which <= 6; which++) {
        struct tls_rec r, before;
        uint8_t rec[256], copy[256], type, *p;
        size_t n, len;
        const char *why = NULL;

        setup(&r, which);
        n = seal(&r, TLS_CT_APPDATA, "hello", rec);
        before = r;
        /* Every single bit flipped after the header: the tag does not match. */
        for (size_t i = TLS_REC_HEADER; i < n; i++) {
            memcpy(copy, rec, n);
            copy[i] ^= 0x01;
            r = before;
            assert_int_equal(tls_rec_open(&r, copy, n, &type, &p, &len, &why), -1);
            assert_string_equal(why, "record does not authenticate");
        }
        /* The record type in the header is authenticated too (TLS 1.3: must be 23). */
        memcpy(copy, rec, n);
        copy[0] = TLS_CT_HANDSHAKE;
        r = before;
        assert_int_equal(tls_rec_open(&r, copy, n, &type, &p, &len, &why), -1);
        /* Opened once, a replay of the same record fails: its sequence number is spent. */
        r = before;
        memcpy(copy, rec, n);
        assert_int_equal(tls_rec_open(&r, copy, n, &type, &p, &len, &why), 0);
        memcpy(copy, rec, n);
        assert_int_equal(tls_rec_open(&r, copy, n, &type, &p, &len, &why), -1);
        /* A length that does not match the bytes. */
        r = before;
        assert_int_equal(tls_rec_open(&r, rec, n - 1, &type, &p, &len, &why), -1);
        assert_string_equal(why, "truncated record");
    }
}

static void test_tls13_padding_and_types(void **state)
{
    struct tls_rec r;
    uint8_t rec[128], type, *p;
    size_t n, len;
    const char *why;

    (void)state;
    setup(&r, 1);
    n = seal(&r, TLS_CT_ALERT, "\x01", rec); /* any inner type is carried */
    assert_int_equal(tls_rec_open(&r, rec, n, &type, &p, &len, &why), 0);
    assert_int_equal(type, TLS_CT_ALERT);
    assert_int_equal(len, 1);
    /* Outer type other than application data after the handshake. */
    n = seal(&r, TLS_CT_APPDATA, "x", rec);
    rec[0] = TLS_CT_CCS;
    assert_int_equal(tls_rec_open(&r, rec, n, &type, &p, &len, &why), -1);
    assert_string_equal(why, "unencrypted record after the handshake");
}

static void test_key_update_changes_the_keys(void **state)
{
    struct tls_rec a, b;
    uint8_t rec[128], copy[128], type, *p;
    size_t n, len;
    const char *why;

    (void)state;
    setup(&a, 2);
    b = a;
    assert_int_equal(tls_rec_update(&a, 0), 0); /* our write key moves on */
    assert_memory_not_equal(a.server_key, b.server_key, 32);
    n = seal(&a, TLS_CT_APPDATA, "after", rec);
    /* The old read key no longer opens it (a failed open spoils the bytes: on a copy); the updated one does. */
    memcpy(copy, rec, n);
    assert_int_equal(tls_rec_open(&b, copy, n, &type, &p, &len, &why), -1);
    assert_int_equal(tls_rec_update(&b, 1), 0); /* the same secret, one step on, as the peer does */
    assert_int_equal(tls_rec_open(&b, rec, n, &type, &p, &len, &why), 0);
    /* TLS 1.2 has no KeyUpdate. */
    setup(&a, 4);
    assert_int_equal(tls_rec_update(&a, 1), -1);
}

/* Through tls_conn_input: records split across reads, pipelined, and close_notify. */
static int no_send(void *arg, char *owned, size_t len)
{
    (void)arg;
    (void)len;
    free(owned);
    return 0;
}

static void test_connection_input_joins_split_records(void **state)
{
    struct tls_out out = {.send = no_send, .arg = NULL};
    struct tls_rec r;
    struct tls_conn *t;
    uint8_t wire[512], chunk[512];
    size_t n = 0, plain_len;
    char *plain, got[128] = "";
    const char *why = NULL;
    long rc = 0;

    (void)state;
    setup(&r, 3);
    t = tls_conn_established(&r);
    assert_non_null(t);
    n += seal(&r, TLS_CT_APPDATA, "first ", wire + n);
    n += seal(&r, TLS_CT_APPDATA, "second", wire + n);
    n += tls_rec_seal(&r, TLS_CT_ALERT, (const uint8_t *)"\x01\x00", 2, wire + n);
    /* One byte per read: every record is incomplete until its last byte. */
    for (size_t i = 0; i < n; i++) {
        chunk[0] = wire[i];
        rc = tls_conn_input(t, (char *)chunk, 1, &plain, &plain_len, &out, &why);
        if (plain_len)
            strncat(got, plain, plain_len);
        if (rc < 0)
            break;
        tls_conn_done(t);
    }
    assert_int_equal(rc, TLS_EOF);
    assert_string_equal(got, "first second");
    tls_conn_free(t);
}

static void test_export_and_import_carry_a_partial_record(void **state)
{
    struct tls_out out = {.send = no_send, .arg = NULL};
    static char blob[TLS_EXPORT_MAX];
    struct tls_rec r;
    struct tls_conn *t, *moved;
    uint8_t wire[256];
    size_t n, plain_len, blen;
    char *plain;
    const char *why;

    (void)state;
    setup(&r, 4);
    t = tls_conn_established(&r);
    n = seal(&r, TLS_CT_APPDATA, "moved along", wire);
    assert_int_equal(tls_conn_input(t, (char *)wire, 7, &plain, &plain_len, &out, &why), 0);
    blen = tls_conn_export(t, blob, sizeof(blob));
    assert_true(blen > 0);
    tls_conn_free(t);
    moved = tls_conn_import(blob, blen);
    assert_non_null(moved);
    assert_int_equal(tls_conn_input(moved, (char *)wire + 7, n - 7, &plain, &plain_len, &out,
                                    &why),
                     11);
    assert_memory_equal(plain, "moved along", 11);
    tls_conn_free(moved);
    /* A blob cut short or with another magic is refused. */
    assert_null(tls_conn_import(blob, blen - 1));
    blob[0] ^= 1;
    assert_null(tls_conn_import(blob, blen));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_cipher_opens_what_it_seals),
        cmocka_unit_test(test_changed_replayed_or_cut_records_are_refused),
        cmocka_unit_test(test_tls13_padding_and_types),
        cmocka_unit_test(test_key_update_changes_the_keys),
        cmocka_unit_test(test_connection_input_joins_split_records),
        cmocka_unit_test(test_export_and_import_carry_a_partial_record),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
