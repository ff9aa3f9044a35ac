/*
 * test_ticket.c — single-use tickets (auth/ticket.h): the format signs and
 * parses back, every changed byte is refused with the right reason, the
 * one-spelling rules hold, the MAC is reproduced independently (OpenSSL's
 * HMAC over the documented signed text), and the used set remembers,
 * forgets expired tickets oldest first and fails closed when full.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auth/secret.h"
#include "auth/ticket.h"
#include "auth/token.h"

static const int64_t NOW = 1800000000;            /* 2027-01-15 */
static const int64_t ISSUED = 1800000000000 - 5000; /* ms, a little before NOW */

static struct secret key_a, key_b;

static void init_keys(void)
{
    for (int i = 0; i < SECRET_BYTES; i++) {
        key_a.key[i] = (unsigned char)(i * 7 + 1);
        key_b.key[i] = (unsigned char)(i * 7 + 2);
    }
    key_a.id = secret_key_id(key_a.key);
    key_b.id = secret_key_id(key_b.key);
}

static int sign(const struct secret *s, const char *user, const char *device, int64_t expires,
                char *out)
{
    return ticket_sign(s, user, device, expires, ISSUED, out, TICKET_MAX + 1);
}

static enum ticket_status verify(const struct secret *s, const char *t, int64_t now,
                                 uint64_t revoked, struct ticket_fields *f)
{
    enum ticket_status st = ticket_parse(t, strlen(t), f);

    return st == TICKET_OK ? ticket_check(s, t, f, now, revoked) : st;
}

static void test_sign_parse_check_round_trip(void **state)
{
    char t[TICKET_MAX + 1];
    struct ticket_fields f;
    int n;

    (void)state;
    n = sign(&key_a, "alice@example.org", "tab.1", NOW + 60, t);
    assert_true(n > 0);
    assert_int_equal((size_t)n, strlen(t));
    assert_memory_equal(t, "t1.", 3);
    assert_int_equal(verify(&key_a, t, NOW, 0, &f), TICKET_OK);
    assert_string_equal(f.user, "alice@example.org");
    assert_int_equal(f.user_len, 17);
    assert_string_equal(f.device, "tab.1");
    assert_int_equal(f.expires, NOW + 60);
    assert_int_equal(f.issued_ms, ISSUED);
    assert_int_equal(f.key_id, key_a.id);
    /* Another key: bad signature; the same key as the previous one after a rotation: fine. */
    assert_int_equal(verify(&key_b, t, NOW, 0, &f), TICKET_BAD_SIGNATURE);
    {
        struct secret rotated = key_b;
        rotated.has_previous = 1;
        memcpy(rotated.previous, key_a.key, SECRET_BYTES);
        rotated.previous_id = key_a.id;
        assert_int_equal(verify(&rotated, t, NOW, 0, &f), TICKET_OK);
    }
}

/* The MAC is HMAC-SHA256 of everything before the last dot, as docs/auth.md says. */
static void test_mac_is_the_documented_one(void **state)
{
    char t[TICKET_MAX + 1], want[64];
    unsigned char mac[32];
    unsigned maclen = 0;
    const char *dot;

    (void)state;
    sign(&key_a, "bob", "d", NOW + 1, t);
    dot = strrchr(t, '.');
    HMAC(EVP_sha256(), key_a.key, SECRET_BYTES, (const unsigned char *)t, (size_t)(dot - t), mac,
         &maclen);
    assert_int_equal(maclen, 32);
    token_b64_encode(mac, 32, want);
    want[43] = '\0';
    assert_string_equal(dot + 1, want);
}

static void test_every_changed_character_is_refused(void **state)
{
    char t[TICKET_MAX + 1], m[TICKET_MAX + 1];
    struct ticket_fields f;
    size_t n;

    (void)state;
    n = (size_t)sign(&key_a, "carol", "phone", NOW + 60, t);
    for (size_t i = 0; i < n; i++) {
        static const char repl[] = "A0.-_z";
        for (size_t k = 0; k < sizeof(repl) - 1; k++) {
            enum ticket_status st;
            if (repl[k] == t[i])
                continue;
            memcpy(m, t, n + 1);
            m[i] = repl[k];
            st = verify(&key_a, m, NOW, 0, &f);
            if (st == TICKET_OK)
                fail_msg("changed byte %zu to '%c' and it still verifies: %s", i, repl[k], m);
            assert_true(st == TICKET_MALFORMED || st == TICKET_BAD_SIGNATURE);
        }
    }
}

static void test_malformed(void **state)
{
    char t[TICKET_MAX + 1], m[2 * TICKET_MAX];
    struct ticket_fields f;
    size_t n;

    (void)state;
    n = (size_t)sign(&key_a, "dave", "d1", NOW + 60, t);
    assert_int_equal(ticket_parse("", 0, &f), TICKET_MALFORMED);
    assert_int_equal(ticket_parse(NULL, 0, &f), TICKET_MALFORMED);
    assert_int_equal(ticket_parse(t, n - 1, &f), TICKET_MALFORMED);
    /* A token is no ticket, and the other way round. */
    {
        char tok[TOKEN_MAX];
        struct token_fields tf;
        token_sign(&key_a, TOKEN_USER, "dave", NOW + 60, tok, sizeof(tok));
        assert_int_equal(ticket_parse(tok, strlen(tok), &f), TICKET_MALFORMED);
        assert_int_equal(token_parse(t, n, &tf), TOKEN_MALFORMED);
    }
    /* Each field: a trailing dot, a missing field, a leading zero, 0 expiry, upper-case hex. */
    snprintf(m, sizeof(m), "%s.", t);
    assert_int_equal(ticket_parse(m, strlen(m), &f), TICKET_MALFORMED);
    snprintf(m, sizeof(m), "t2%s", t + 2);
    assert_int_equal(ticket_parse(m, strlen(m), &f), TICKET_MALFORMED);
    {
        /* Split at the dots and rebuild with one field replaced. */
        char copy[TICKET_MAX + 1], *fields[8], *p = copy;
        static const struct {
            int idx;
            const char *val;
        } bad[] = {
            {1, ""},           /* empty user */
            {1, "AA"},         /* decodes to a NUL byte */
            {1, "ZGF2ZQ="},    /* padding */
            {1, "ZGF2ZR"},     /* unused bits set */
            {2, ""},           /* empty device */
            {3, "0"},          /* expires 0 */
            {3, "01800000060"},/* leading zero */
            {3, "-1"},
            {3, "99999999999999999999"}, /* past INT64_MAX */
            {4, ""},
            {5, "AAAAAAAAAAAAAAAAAAAAA"},  /* a nonce of 21 characters */
            {5, "AAAAAAAAAAAAAAAAAAAAAB"}, /* non-zero unused bits */
            {6, "ABCDEF12"},   /* upper-case key id */
            {6, "abcdef1"},
        };
        memcpy(copy, t, n + 1);
        for (int i = 0; i < 8; i++) {
            fields[i] = p;
            p = strchr(p, '.');
            if (i < 7) {
                assert_non_null(p);
                *p++ = '\0';
            }
        }
        for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
            size_t len = 0;
            for (int i = 0; i < 8; i++)
                len += (size_t)snprintf(m + len, sizeof(m) - len, "%s%s", i ? "." : "",
                                        i == bad[b].idx ? bad[b].val : fields[i]);
            if (ticket_parse(m, len, &f) != TICKET_MALFORMED)
                fail_msg("accepted field %d = '%s': %s", bad[b].idx, bad[b].val, m);
        }
    }
    /* Longer than TICKET_MAX. */
    memset(m, 'A', TICKET_MAX + 1);
    memcpy(m, "t1.", 3);
    assert_int_equal(ticket_parse(m, TICKET_MAX + 1, &f), TICKET_MALFORMED);
}

static void test_sign_bounds(void **state)
{
    char t[TICKET_MAX + 1], user[TOKEN_SUBJECT_MAX + 2], dev[TICKET_DEVICE_MAX + 2];
    struct ticket_fields f;
    int n;

    (void)state;
    memset(user, 'u', sizeof(user));
    memset(dev, 'd', sizeof(dev));
    user[TOKEN_SUBJECT_MAX] = '\0';
    dev[TICKET_DEVICE_MAX] = '\0';
    /* The longest user and device, with the longest numbers, fit TICKET_MAX. */
    n = ticket_sign(&key_a, user, dev, INT64_MAX, INT64_MAX, t, sizeof(t));
    assert_true(n > 0 && n <= TICKET_MAX);
    assert_int_equal(ticket_parse(t, (size_t)n, &f), TICKET_OK);
    assert_int_equal(ticket_sign(&key_a, user, dev, INT64_MAX, INT64_MAX, t, (size_t)n), -ENOSPC);
    user[TOKEN_SUBJECT_MAX] = 'u';
    user[TOKEN_SUBJECT_MAX + 1] = '\0';
    assert_int_equal(ticket_sign(&key_a, user, "d", NOW, ISSUED, t, sizeof(t)), -EINVAL);
    dev[TICKET_DEVICE_MAX] = 'd';
    dev[TICKET_DEVICE_MAX + 1] = '\0';
    assert_int_equal(ticket_sign(&key_a, "u", dev, NOW, ISSUED, t, sizeof(t)), -EINVAL);
    assert_int_equal(ticket_sign(&key_a, "", "d", NOW, ISSUED, t, sizeof(t)), -EINVAL);
    assert_int_equal(ticket_sign(&key_a, "u", "", NOW, ISSUED, t, sizeof(t)), -EINVAL);
    assert_int_equal(ticket_sign(&key_a, "u", "d", 0, ISSUED, t, sizeof(t)), -EINVAL);
    assert_int_equal(ticket_sign(&key_a, "u", "d", NOW, -1, t, sizeof(t)), -EINVAL);
}

static void test_two_tickets_differ(void **state)
{
    char a[TICKET_MAX + 1], b[TICKET_MAX + 1];

    (void)state;
    sign(&key_a, "erin", "d", NOW + 60, a);
    sign(&key_a, "erin", "d", NOW + 60, b);
    assert_string_not_equal(a, b); /* the nonce */
}

static void test_expiry_and_revocation(void **state)
{
    char t[TICKET_MAX + 1];
    struct ticket_fields f;

    (void)state;
    sign(&key_a, "frank", "d", NOW, t);
    assert_int_equal(verify(&key_a, t, NOW, 0, &f), TICKET_OK);        /* through its second */
    assert_int_equal(verify(&key_a, t, NOW + 1, 0, &f), TICKET_EXPIRED);
    assert_int_equal(verify(&key_a, t, NOW, (uint64_t)ISSUED, &f), TICKET_REVOKED);
    assert_int_equal(verify(&key_a, t, NOW, (uint64_t)ISSUED - 1, &f), TICKET_OK);
    /* A forged expired ticket is a bad signature, not an expired one. */
    t[strlen(t) - 10] = t[strlen(t) - 10] == 'A' ? 'B' : 'A';
    assert_int_equal(verify(&key_a, t, NOW + 1, 0, &f), TICKET_BAD_SIGNATURE);
    assert_string_equal(ticket_status_str(TICKET_USED), "ticket already used");
    assert_string_equal(ticket_status_str(TICKET_EXPIRED), "ticket expired");
}

/* A checked ticket's fields, issued at 'issued_ms', expiring at 'expires'. */
static void fields_of(struct ticket_fields *f, int64_t expires, int64_t issued_ms)
{
    char t[TICKET_MAX + 1];

    assert_true(ticket_sign(&key_a, "gina", "d", expires, issued_ms, t, sizeof(t)) > 0);
    assert_int_equal(ticket_parse(t, strlen(t), f), TICKET_OK);
}

static void test_spent_once(void **state)
{
    struct ticket_spent *sp = ticket_spent_new(10, ISSUED - 1000);
    struct ticket_fields a, b, old;
    unsigned retry = 0;

    (void)state;
    fields_of(&a, NOW + 60, ISSUED);
    fields_of(&b, NOW + 60, ISSUED);
    fields_of(&old, NOW + 60, ISSUED - 1001);
    assert_int_equal(ticket_spend(sp, &a, NOW, &retry), TICKET_OK);
    assert_int_equal(ticket_spend(sp, &a, NOW, &retry), TICKET_USED);
    assert_int_equal(ticket_spend(sp, &b, NOW, &retry), TICKET_OK);
    assert_int_equal(ticket_spend(sp, &a, NOW + 60, &retry), TICKET_USED);
    /* Issued before the set began: nobody knows whether it was used. */
    assert_int_equal(ticket_spend(sp, &old, NOW, &retry), TICKET_STALE);
    assert_int_equal(ticket_spent_count(sp), 2);
    /* Past their expiry they are forgotten (the check refuses them before this anyway). */
    fields_of(&old, NOW + 200, ISSUED);
    assert_int_equal(ticket_spend(sp, &old, NOW + 61, &retry), TICKET_OK);
    assert_int_equal(ticket_spent_count(sp), 1);
    ticket_spent_free(sp);
}

static void test_spent_full_fails_closed(void **state)
{
    struct ticket_spent *sp = ticket_spent_new(3, 0);
    struct ticket_fields f[5];
    unsigned retry = 0;

    (void)state;
    for (int i = 0; i < 5; i++)
        fields_of(&f[i], NOW + 10 + i, ISSUED);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ticket_spend(sp, &f[i], NOW, &retry), TICKET_OK);
    assert_int_equal(ticket_spend(sp, &f[3], NOW, &retry), TICKET_FULL);
    assert_int_equal(retry, 11); /* the oldest expires at NOW + 10: free at NOW + 11 */
    /* A used one is still told apart when full. */
    assert_int_equal(ticket_spend(sp, &f[0], NOW, &retry), TICKET_USED);
    assert_int_equal(ticket_spend(sp, &f[3], NOW + 11, &retry), TICKET_OK);
    assert_int_equal(ticket_spend(sp, &f[4], NOW + 11, &retry), TICKET_FULL);
    assert_int_equal(retry, 1);
    assert_int_equal(ticket_spend(sp, &f[1], NOW + 11, &retry), TICKET_USED);
    assert_int_equal(ticket_spent_count(sp), 3);
    ticket_spent_free(sp);
    ticket_spent_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_parse_check_round_trip),
        cmocka_unit_test(test_mac_is_the_documented_one),
        cmocka_unit_test(test_every_changed_character_is_refused),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_sign_bounds),
        cmocka_unit_test(test_two_tickets_differ),
        cmocka_unit_test(test_expiry_and_revocation),
        cmocka_unit_test(test_spent_once),
        cmocka_unit_test(test_spent_full_fails_closed),
    };

    init_keys();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
