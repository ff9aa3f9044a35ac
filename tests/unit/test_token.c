/*
 * test_token.c — tokens (src/auth/token.c) and the secret file
 * (src/auth/secret.c).
 *
 * Token tests check the contract from the outside: round trips, each kind
 * of tampering, and strictness. To prove the parser itself rejects a
 * non-canonical token (rather than the MAC happening not to match), forge()
 * signs arbitrary text with the real key using its own HMAC and base64url,
 * so those tokens carry a correct MAC and must still be TOKEN_MALFORMED.
 * Truncations and mutations are verified from exact-size heap copies without
 * a NUL, so ASan catches any read past 'len'.
 *
 * Secret tests run in a fresh mkdtemp directory removed at the end.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auth/secret.h"
#include "auth/token.h"

static const int64_t NOW = 1800000000; /* 2027-01-15 */

static struct secret key_a, key_b;

static void init_keys(void)
{
    for (int i = 0; i < SECRET_BYTES; i++) {
        key_a.key[i] = (unsigned char)(i * 7 + 1);
        key_b.key[i] = (unsigned char)(i * 7 + 2);
    }
}

/* An independent base64url encoder (no padding), for forge(). */
static void b64url(const unsigned char *in, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    unsigned bits = 0, nbits = 0;

    for (size_t i = 0; i < n; i++) {
        bits = bits << 8 | in[i];
        nbits += 8;
        while (nbits >= 6) {
            nbits -= 6;
            out[o++] = a[(bits >> nbits) & 63];
        }
    }
    if (nbits > 0)
        out[o++] = a[(bits << (6 - nbits)) & 63];
    out[o] = '\0';
}

/* Appends "." and a correct MAC over 'signed_part' (under key_a) into out. */
static void forge(const char *signed_part, char *out, size_t outlen)
{
    unsigned char mac[32];
    unsigned int maclen = 0;
    char enc[64];

    assert_non_null(HMAC(EVP_sha256(), key_a.key, SECRET_BYTES,
                         (const unsigned char *)signed_part, strlen(signed_part), mac, &maclen));
    assert_int_equal(maclen, 32);
    b64url(mac, 32, enc);
    assert_true((size_t)snprintf(out, outlen, "%s.%s", signed_part, enc) < outlen);
}

/* Verifies tok[0..len) from an exact-size heap copy, so ASan sees any overread. */
static enum token_status verify_exact(const struct secret *s, const char *tok, size_t len,
                                      int64_t now, enum token_kind *kind, char *subject,
                                      size_t subjlen, int64_t *expires)
{
    char *copy = malloc(len > 0 ? len : 1);
    enum token_status st;

    assert_non_null(copy);
    memcpy(copy, tok, len);
    st = token_verify(s, copy, len, now, kind, subject, subjlen, expires);
    free(copy);
    return st;
}

static enum token_status verify_str(const struct secret *s, const char *tok, int64_t now)
{
    char subject[256];
    enum token_kind kind;
    int64_t exp;

    return verify_exact(s, tok, strlen(tok), now, &kind, subject, sizeof(subject), &exp);
}

static void sign_ok(enum token_kind kind, const char *subject, int64_t expires, char *out)
{
    int n = token_sign(&key_a, kind, subject, expires, out, TOKEN_MAX);

    assert_true(n > 0);
    assert_int_equal((size_t)n, strlen(out));
}

/* ---- tokens ------------------------------------------------------------ */

static void test_round_trip_each_kind(void **state)
{
    static const enum token_kind kinds[] = {TOKEN_USER, TOKEN_PUBLISHER, TOKEN_ADMIN};
    char tok[TOKEN_MAX], subject[256];
    enum token_kind kind;
    int64_t exp;

    (void)state;
    for (size_t i = 0; i < 3; i++) {
        sign_ok(kinds[i], "alice", NOW + 60, tok);
        assert_int_equal(tok[3], (char)kinds[i]);
        assert_int_equal(verify_exact(&key_a, tok, strlen(tok), NOW, &kind, subject,
                                      sizeof(subject), &exp),
                         TOKEN_OK);
        assert_int_equal(kind, kinds[i]);
        assert_string_equal(subject, "alice");
        assert_int_equal(exp, NOW + 60);
    }
}

static void test_known_layout(void **state)
{
    struct secret k = key_a;
    char tok[TOKEN_MAX], want[TOKEN_MAX];
    struct token_fields f;

    (void)state;
    /* "alice" is YWxpY2U in base64url; the MAC is over everything before the last dot. */
    k.id = 0x1a2b3c4d;
    assert_true(token_sign_at(&k, TOKEN_USER, "alice", 1700000000, 1699999999123, tok,
                              sizeof(tok)) > 0);
    forge("v2.u.YWxpY2U.1700000000.1699999999123.1a2b3c4d", want, sizeof(want));
    assert_string_equal(tok, want);
    assert_int_equal(token_parse(tok, strlen(tok), &f), TOKEN_OK);
    assert_int_equal(f.version, 2);
    assert_int_equal(f.issued_ms, 1699999999123);
    assert_int_equal(f.key_id, 0x1a2b3c4d);
    assert_int_equal(token_check(&k, tok, &f, NOW - 200000000), TOKEN_OK);
    /* token_sign issues now, in milliseconds. */
    {
        int64_t before = token_now_ms(), after;
        sign_ok(TOKEN_USER, "alice", 0, tok);
        after = token_now_ms();
        assert_int_equal(token_parse(tok, strlen(tok), &f), TOKEN_OK);
        assert_true(f.issued_ms >= before && f.issued_ms <= after);
    }
}

/* The first format, without issue time or key id, is still accepted: as issued at 0. */
static void test_v1_tokens_still_work(void **state)
{
    char tok[TOKEN_MAX];
    struct token_fields f;

    (void)state;
    forge("v1.u.YWxpY2U.0", tok, sizeof(tok));
    assert_int_equal(verify_str(&key_a, tok, NOW), TOKEN_OK);
    assert_int_equal(token_parse(tok, strlen(tok), &f), TOKEN_OK);
    assert_int_equal(f.version, 1);
    assert_int_equal(f.issued_ms, 0);
    /* Revoked once the user's tokens are revoked at all. */
    assert_int_equal(token_revocation(&f, 1), TOKEN_REVOKED);
    assert_int_equal(token_revocation(&f, 0), TOKEN_OK);
}

/* After a rotation: the current key signs, both keys verify, each by its id. */
static void test_rotated_keys(void **state)
{
    struct secret before = key_a, after = key_b;
    char old_v2[TOKEN_MAX], old_v1[TOKEN_MAX], fresh[TOKEN_MAX], lie[TOKEN_MAX];
    struct token_fields f;

    (void)state;
    before.id = 0x11111111;
    after.id = 0x22222222;
    after.has_previous = 1;
    memcpy(after.previous, before.key, SECRET_BYTES);
    after.previous_id = before.id;
    assert_true(token_sign_at(&before, TOKEN_USER, "alice", 0, 5, old_v2, sizeof(old_v2)) > 0);
    forge("v1.u.YWxpY2U.0", old_v1, sizeof(old_v1)); /* key_a: the previous key now */
    assert_true(token_sign_at(&after, TOKEN_USER, "alice", 0, 6, fresh, sizeof(fresh)) > 0);
    assert_non_null(strstr(fresh, ".22222222."));
    assert_int_equal(verify_str(&after, old_v2, NOW), TOKEN_OK);
    assert_int_equal(verify_str(&after, old_v1, NOW), TOKEN_OK);
    assert_int_equal(verify_str(&after, fresh, NOW), TOKEN_OK);
    /* The old secret does not know the new key; dropping the previous key ends its tokens. */
    assert_int_equal(verify_str(&before, fresh, NOW), TOKEN_BAD_SIGNATURE);
    after.has_previous = 0;
    assert_int_equal(verify_str(&after, old_v2, NOW), TOKEN_BAD_SIGNATURE);
    assert_int_equal(verify_str(&after, old_v1, NOW), TOKEN_BAD_SIGNATURE);
    /* A token naming one key but signed by the other fails: the id picks the only key tried. */
    after.has_previous = 1;
    forge("v2.u.YWxpY2U.0.6.22222222", lie, sizeof(lie)); /* key_a's MAC, the current key's id */
    assert_int_equal(verify_str(&after, lie, NOW), TOKEN_BAD_SIGNATURE);
    forge("v2.u.YWxpY2U.0.6.33333333", lie, sizeof(lie)); /* no such key */
    assert_int_equal(verify_str(&after, lie, NOW), TOKEN_BAD_SIGNATURE);
    /* Upper-case hex and short ids are malformed: one spelling per token. */
    forge("v2.u.YWxpY2U.0.6.1111111A", lie, sizeof(lie));
    assert_int_equal(token_parse(lie, strlen(lie), &f), TOKEN_MALFORMED);
    forge("v2.u.YWxpY2U.0.6.1111111", lie, sizeof(lie));
    assert_int_equal(token_parse(lie, strlen(lie), &f), TOKEN_MALFORMED);
    forge("v2.u.YWxpY2U.0.06.11111111", lie, sizeof(lie));
    assert_int_equal(token_parse(lie, strlen(lie), &f), TOKEN_MALFORMED);
}

/* A user's tokens issued at or before its revocation time are revoked; later ones, and other kinds, not. */
static void test_revocation(void **state)
{
    char tok[TOKEN_MAX];
    struct token_fields f;

    (void)state;
    assert_true(token_sign_at(&key_a, TOKEN_USER, "bob", 0, 1000, tok, sizeof(tok)) > 0);
    assert_int_equal(token_parse(tok, strlen(tok), &f), TOKEN_OK);
    assert_int_equal(token_revocation(&f, 0), TOKEN_OK);
    assert_int_equal(token_revocation(&f, 999), TOKEN_OK);
    assert_int_equal(token_revocation(&f, 1000), TOKEN_REVOKED);
    assert_int_equal(token_revocation(&f, 5000), TOKEN_REVOKED);
    assert_true(token_sign_at(&key_a, TOKEN_ADMIN, "bob", 0, 1000, tok, sizeof(tok)) > 0);
    assert_int_equal(token_parse(tok, strlen(tok), &f), TOKEN_OK);
    assert_int_equal(token_revocation(&f, 5000), TOKEN_OK);
    assert_string_equal(token_status_str(TOKEN_REVOKED), "token revoked");
}

static void test_subjects_that_work(void **state)
{
    char big[TOKEN_SUBJECT_MAX + 1], tok[TOKEN_MAX], subject[256];
    const char *subjects[] = {"alice@example.com", "first.last", "with space", "Zo\xc3\xab \xe2\x9c\x93",
                              "a", "dots.and.dots.", "quote\"back\\slash", "tab\there", big};
    enum token_kind kind;
    int64_t exp;

    (void)state;
    memset(big, 'x', TOKEN_SUBJECT_MAX);
    big[TOKEN_SUBJECT_MAX] = '\0';
    for (size_t i = 0; i < sizeof(subjects) / sizeof(subjects[0]); i++) {
        sign_ok(TOKEN_USER, subjects[i], 0, tok);
        assert_true(strlen(tok) < TOKEN_MAX);
        /* base64url keeps the token free of dots, spaces and '+/=' from the subject. */
        assert_null(strpbrk(tok, " +/="));
        assert_int_equal(verify_exact(&key_a, tok, strlen(tok), NOW, &kind, subject,
                                      sizeof(subject), &exp),
                         TOKEN_OK);
        assert_string_equal(subject, subjects[i]);
        assert_int_equal(exp, 0);
    }
}

static void test_sign_rejects(void **state)
{
    char big[TOKEN_SUBJECT_MAX + 2], tok[TOKEN_MAX];

    (void)state;
    memset(big, 'x', TOKEN_SUBJECT_MAX + 1);
    big[TOKEN_SUBJECT_MAX + 1] = '\0';
    assert_int_equal(token_sign(&key_a, TOKEN_USER, "", 0, tok, sizeof(tok)), -EINVAL);
    assert_int_equal(token_sign(&key_a, TOKEN_USER, big, 0, tok, sizeof(tok)), -EINVAL);
    assert_int_equal(token_sign(&key_a, TOKEN_USER, NULL, 0, tok, sizeof(tok)), -EINVAL);
    assert_int_equal(token_sign(&key_a, (enum token_kind)'x', "a", 0, tok, sizeof(tok)), -EINVAL);
    assert_int_equal(token_sign(&key_a, TOKEN_USER, "a", -1, tok, sizeof(tok)), -EINVAL);
}

static void test_sign_buffer_size(void **state)
{
    char big[TOKEN_SUBJECT_MAX + 1], tok[TOKEN_MAX], small[TOKEN_MAX];
    int n;

    (void)state;
    memset(big, 0xff, TOKEN_SUBJECT_MAX);
    big[TOKEN_SUBJECT_MAX] = '\0';
    /* The longest token possible still fits TOKEN_MAX. */
    n = token_sign(&key_a, TOKEN_PUBLISHER, big, INT64_MAX, tok, sizeof(tok));
    assert_true(n > 0 && n < TOKEN_MAX);
    assert_int_equal(verify_str(&key_a, tok, NOW), TOKEN_OK);
    /* Exactly n + 1 bytes fits; n bytes does not. */
    assert_int_equal(token_sign(&key_a, TOKEN_PUBLISHER, big, INT64_MAX, small, (size_t)n + 1), n);
    assert_string_equal(small, tok);
    assert_int_equal(token_sign(&key_a, TOKEN_PUBLISHER, big, INT64_MAX, small, (size_t)n),
                     -ENOSPC);
}

static void test_tampered_kind(void **state)
{
    char tok[TOKEN_MAX];

    (void)state;
    sign_ok(TOKEN_USER, "alice", 0, tok);
    tok[3] = 'a'; /* a valid kind: the MAC catches it */
    assert_int_equal(verify_str(&key_a, tok, NOW), TOKEN_BAD_SIGNATURE);
    tok[3] = 'p';
    assert_int_equal(verify_str(&key_a, tok, NOW), TOKEN_BAD_SIGNATURE);
    tok[3] = 'x'; /* not a kind at all */
    assert_int_equal(verify_str(&key_a, tok, NOW), TOKEN_MALFORMED);
    tok[3] = 'U';
    assert_int_equal(verify_str(&key_a, tok, NOW), TOKEN_MALFORMED);
}

static void test_tampered_subject(void **state)
{
    char tok[TOKEN_MAX], forged[TOKEN_MAX], enc[32];
    const char *mac;

    (void)state;
    sign_ok(TOKEN_USER, "alice", 0, tok);
    mac = strrchr(tok, '.');
    /* Same token with "mallory" as subject and alice's MAC. */
    b64url((const unsigned char *)"mallory", 7, enc);
    snprintf(forged, sizeof(forged), "v1.u.%s.0%s", enc, mac);
    assert_int_equal(verify_str(&key_a, forged, NOW), TOKEN_BAD_SIGNATURE);
    /* A subject that is not base64url. */
    snprintf(forged, sizeof(forged), "v1.u.al*ce.0%s", mac);
    assert_int_equal(verify_str(&key_a, forged, NOW), TOKEN_MALFORMED);
}

static void test_tampered_expiry(void **state)
{
    char tok[TOKEN_MAX], forged[TOKEN_MAX];
    const char *mac;

    (void)state;
    sign_ok(TOKEN_USER, "alice", NOW + 10, tok);
    mac = strrchr(tok, '.');
    snprintf(forged, sizeof(forged), "v1.u.YWxpY2U.%lld%s", (long long)NOW + 100000, mac);
    assert_int_equal(verify_str(&key_a, forged, NOW), TOKEN_BAD_SIGNATURE);
    snprintf(forged, sizeof(forged), "v1.u.YWxpY2U.0%s", mac); /* "never" */
    assert_int_equal(verify_str(&key_a, forged, NOW), TOKEN_BAD_SIGNATURE);
    snprintf(forged, sizeof(forged), "v1.u.YWxpY2U.0%lld%s", (long long)NOW + 10, mac);
    assert_int_equal(verify_str(&key_a, forged, NOW), TOKEN_MALFORMED);
}

static void test_tampered_mac(void **state)
{
    char tok[TOKEN_MAX];
    char *mac;
    size_t len;

    (void)state;
    sign_ok(TOKEN_USER, "alice", 0, tok);
    mac = strrchr(tok, '.') + 1;
    len = strlen(tok);
    mac[0] = mac[0] == 'A' ? 'B' : 'A';
    assert_int_equal(verify_str(&key_a, tok, NOW), TOKEN_BAD_SIGNATURE);
    /* The last of 43 characters carries 2 unused bits: 'B' (000001) is non-canonical. */
    mac[42] = 'B';
    assert_int_equal(verify_str(&key_a, tok, NOW), TOKEN_MALFORMED);
    mac[42] = '=';
    assert_int_equal(verify_str(&key_a, tok, NOW), TOKEN_MALFORMED);
    tok[len - 1] = '\0'; /* 42 characters */
    assert_int_equal(verify_str(&key_a, tok, NOW), TOKEN_MALFORMED);
}

static void test_wrong_secret(void **state)
{
    char tok[TOKEN_MAX];

    (void)state;
    sign_ok(TOKEN_ADMIN, "ops", 0, tok);
    assert_int_equal(verify_str(&key_b, tok, NOW), TOKEN_BAD_SIGNATURE);
    assert_int_equal(verify_str(&key_a, tok, NOW), TOKEN_OK);
}

/*
 * Each thread reuses one HMAC context and re-keys it only when the secret
 * changes: alternate secrets, many MACs, two threads at once, and every
 * MAC must equal an independent HMAC-SHA256 under the secret it was made with.
 */
static void *sign_alternating(void *arg)
{
    const char *who = arg;

    for (int i = 0; i < 200; i++) {
        const struct secret *s = i % 3 == 0 ? &key_b : &key_a;
        char tok[TOKEN_MAX], subject[64], want[64];
        unsigned char mac[32];
        unsigned int maclen = 0;
        const char *dot;
        int n;

        snprintf(subject, sizeof(subject), "%s%d", who, i);
        n = token_sign(s, TOKEN_USER, subject, NOW + i, tok, sizeof(tok));
        if (n <= 0)
            return "token_sign failed";
        dot = strrchr(tok, '.');
        if (HMAC(EVP_sha256(), s->key, SECRET_BYTES, (const unsigned char *)tok,
                 (size_t)(dot - tok), mac, &maclen) == NULL || maclen != 32)
            return "HMAC failed";
        b64url(mac, 32, want);
        if (strcmp(dot + 1, want) != 0)
            return "a MAC differs from HMAC-SHA256 under its secret";
        if (verify_str(s, tok, NOW) != TOKEN_OK)
            return "a token did not verify under its own secret";
        if (verify_str(s == &key_a ? &key_b : &key_a, tok, NOW) != TOKEN_BAD_SIGNATURE)
            return "a token verified under the other secret";
    }
    return NULL;
}

static void test_mac_context_follows_the_secret(void **state)
{
    pthread_t t;
    void *other = NULL;
    const char *here;

    (void)state;
    assert_int_equal(pthread_create(&t, NULL, sign_alternating, "bob"), 0);
    here = sign_alternating("alice");
    assert_int_equal(pthread_join(t, &other), 0);
    assert_null(here);
    assert_null(other);
}

/*
 * token_parse reads the fields the way token_verify does, without the MAC:
 * every subject length (each tail of the base64url decoder), every
 * character, and the rejections: a character outside the alphabet at any
 * place, unused bits set in the last character, a kind that is no kind.
 * token_check then decides what token_verify would.
 */
static void test_parse_then_check(void **state)
{
    char subject[TOKEN_SUBJECT_MAX + 1], raw[64], enc[128], part[TOKEN_MAX], tok[TOKEN_MAX];
    struct token_fields f;
    enum token_kind kind;
    int64_t exp;

    (void)state;
    for (size_t len = 1; len <= 40; len++) {
        size_t elen;
        for (size_t i = 0; i < len; i++)
            raw[i] = (char)(1 + (i * 37 + len * 11) % 255); /* every byte but NUL, over the loop */
        raw[len] = '\0';
        b64url((const unsigned char *)raw, len, enc);
        elen = strlen(enc);
        snprintf(part, sizeof(part), "v1.u.%s.%lld", enc, (long long)NOW + (long long)len);
        forge(part, tok, sizeof(tok));
        assert_int_equal(token_parse(tok, strlen(tok), &f), TOKEN_OK);
        assert_int_equal(f.kind, TOKEN_USER);
        assert_string_equal(f.subject, raw);
        assert_int_equal(f.subject_len, len);
        assert_int_equal(f.expires, NOW + (int64_t)len);
        assert_int_equal(f.signed_len, strlen(part));
        assert_int_equal(token_check(&key_a, tok, &f, NOW), TOKEN_OK);
        assert_int_equal(token_check(&key_b, tok, &f, NOW), TOKEN_BAD_SIGNATURE);
        assert_int_equal(token_check(&key_a, tok, &f, NOW + (int64_t)len + 1), TOKEN_EXPIRED);
        assert_int_equal(verify_str(&key_a, tok, NOW), TOKEN_OK);
        /* Too small a subject buffer for token_verify. */
        assert_int_equal(verify_exact(&key_a, tok, strlen(tok), NOW, &kind, subject, len, &exp),
                         TOKEN_MALFORMED);
        /* A character outside the alphabet, at each place of the subject. */
        for (size_t at = 0; at < elen; at++) {
            char bad[TOKEN_MAX];
            memcpy(bad, tok, strlen(tok) + 1);
            bad[5 + at] = at % 2 ? '+' : '/';
            assert_int_equal(token_parse(bad, strlen(bad), &f), TOKEN_MALFORMED);
        }
        /* Unused low bits set in a last character that has them. */
        if (len % 3 != 0) {
            char bad[TOKEN_MAX];
            memcpy(bad, tok, strlen(tok) + 1);
            bad[5 + elen - 1] = enc[elen - 1] == 'B' ? 'C' : 'B'; /* 'B' and 'C': low bits set */
            assert_int_equal(token_parse(bad, strlen(bad), &f), TOKEN_MALFORMED);
        }
    }
    sign_ok(TOKEN_PUBLISHER, "mta", 0, tok);
    assert_int_equal(token_parse(tok, strlen(tok), &f), TOKEN_OK);
    assert_int_equal(f.kind, TOKEN_PUBLISHER);
    assert_string_equal(f.subject, "mta");
    assert_int_equal(f.expires, 0);
    /* A parse does not check the MAC: token_check does. */
    tok[strlen(tok) - 2] = tok[strlen(tok) - 2] == 'A' ? 'B' : 'A';
    assert_int_equal(token_parse(tok, strlen(tok), &f), TOKEN_OK);
    assert_int_equal(token_check(&key_a, tok, &f, NOW), TOKEN_BAD_SIGNATURE);
    assert_int_equal(verify_str(&key_a, tok, NOW), TOKEN_BAD_SIGNATURE);
    tok[3] = 'x';
    assert_int_equal(token_parse(tok, strlen(tok), &f), TOKEN_MALFORMED);
    assert_int_equal(token_parse("v1.u.", 5, &f), TOKEN_MALFORMED);
}

static void test_expiry(void **state)
{
    char tok[TOKEN_MAX];

    (void)state;
    sign_ok(TOKEN_USER, "alice", NOW - 1, tok);
    assert_int_equal(verify_str(&key_a, tok, NOW), TOKEN_EXPIRED);
    /* Signature is checked before expiry. */
    assert_int_equal(verify_str(&key_b, tok, NOW), TOKEN_BAD_SIGNATURE);
    sign_ok(TOKEN_USER, "alice", NOW, tok); /* valid through its last second */
    assert_int_equal(verify_str(&key_a, tok, NOW), TOKEN_OK);
    assert_int_equal(verify_str(&key_a, tok, NOW + 1), TOKEN_EXPIRED);
}

static void test_expires_zero_never_expires(void **state)
{
    char tok[TOKEN_MAX];

    (void)state;
    sign_ok(TOKEN_PUBLISHER, "mail1", 0, tok);
    assert_int_equal(verify_str(&key_a, tok, INT64_MAX), TOKEN_OK);
    sign_ok(TOKEN_PUBLISHER, "mail1", INT64_MAX, tok);
    assert_int_equal(verify_str(&key_a, tok, INT64_MAX), TOKEN_OK);
}

static void test_every_truncation_fails(void **state)
{
    char tok[TOKEN_MAX];
    size_t len;

    (void)state;
    sign_ok(TOKEN_USER, "alice@example.com", NOW + 3600, tok);
    len = strlen(tok);
    for (size_t n = 0; n < len; n++) {
        assert_int_not_equal(verify_exact(&key_a, tok, n, NOW, NULL, NULL, 0, NULL), TOKEN_OK);
        /* And every suffix. */
        assert_int_not_equal(
            verify_exact(&key_a, tok + len - n, n, NOW, NULL, NULL, 0, NULL), TOKEN_OK);
    }
    assert_int_equal(verify_exact(&key_a, tok, len, NOW, NULL, NULL, 0, NULL), TOKEN_OK);
}

static void test_every_byte_change_fails(void **state)
{
    static const char subst[] = "AB_-.0=\0\xff";
    char tok[TOKEN_MAX];
    size_t len;

    (void)state;
    sign_ok(TOKEN_USER, "bob", NOW + 3600, tok);
    len = strlen(tok);
    for (size_t i = 0; i < len; i++) {
        for (size_t j = 0; j < sizeof(subst) - 1; j++) {
            char saved = tok[i];
            if (subst[j] == saved)
                continue;
            tok[i] = subst[j];
            assert_int_not_equal(verify_exact(&key_a, tok, len, NOW, NULL, NULL, 0, NULL),
                                 TOKEN_OK);
            tok[i] = saved;
        }
    }
}

static void test_extra_bytes_fail(void **state)
{
    char tok[TOKEN_MAX + 8], more[TOKEN_MAX + 16];

    (void)state;
    sign_ok(TOKEN_USER, "bob", 0, tok);
    snprintf(more, sizeof(more), "%s.", tok);
    assert_int_equal(verify_str(&key_a, more, NOW), TOKEN_MALFORMED);
    snprintf(more, sizeof(more), "%sA", tok);
    assert_int_equal(verify_str(&key_a, more, NOW), TOKEN_MALFORMED);
    snprintf(more, sizeof(more), " %s", tok);
    assert_int_equal(verify_str(&key_a, more, NOW), TOKEN_MALFORMED);
    snprintf(more, sizeof(more), "%s\n", tok);
    assert_int_equal(verify_str(&key_a, more, NOW), TOKEN_MALFORMED);
}

static void test_garbage(void **state)
{
    static const char *const garbage[] = {
        "", "v", "v1", "v1.", "v1.u", "v1.u.", "v1.u..", "v1.u..0.", "v1.u.YQ", "v1.u.YQ.0",
        "v1.u.YQ.0.", "v2.u.YQ.0.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "Bearer v1.u.YQ.0.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "....................",
        "v1.u.YQ.0.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.", "\xff\xfe\xfd", "null",
        "v1.u.YQ.0.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"};
    char huge[TOKEN_MAX + 100];

    (void)state;
    for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++)
        assert_int_equal(verify_str(&key_a, garbage[i], NOW), TOKEN_MALFORMED);
    memset(huge, 'A', sizeof(huge));
    assert_int_equal(verify_exact(&key_a, huge, sizeof(huge), NOW, NULL, NULL, 0, NULL),
                     TOKEN_MALFORMED);
    assert_int_equal(token_verify(&key_a, NULL, 0, NOW, NULL, NULL, 0, NULL), TOKEN_MALFORMED);
}

/* Tokens with a correct MAC whose text is not canonical must still be refused. */
static void test_correct_mac_but_malformed(void **state)
{
    static const char *const bad[] = {
        "v1.u.YR.0",          /* 'a' is YQ: YR sets unused bits */
        "v1.u.YQ==.0",        /* padding */
        "v1.u.YQ=.0",
        "v1.u.Y.0",           /* 4k+1 characters */
        "v1.u.AA.0",          /* decodes to a NUL byte */
        "v1.u.YQBi.0",        /* "a\0b" */
        "v1.u..0",            /* empty subject */
        "v1.u.YQ+/.0",        /* standard base64 alphabet */
        "v1.u.YQ.01",         /* leading zero */
        "v1.u.YQ.00",
        "v1.u.YQ.+1",
        "v1.u.YQ.-1",
        "v1.u.YQ. 1",
        "v1.u.YQ.1e3",
        "v1.u.YQ.",
        "v1.u.YQ.9223372036854775808", /* INT64_MAX + 1 */
        "v1.u.YQ.99999999999999999999",
        "v1.x.YQ.0",
        "v1.U.YQ.0",
        "v1.uu.YQ.0",
        "V1.u.YQ.0",
        "v2.u.YQ.0",
        "v1.u.YQ.0.0",        /* one field too many */
    };
    char tok[TOKEN_MAX * 2];
    char sub256[TOKEN_MAX], prefix[TOKEN_MAX + 16];
    unsigned char raw[256];

    (void)state;
    forge("v1.u.YQ.0", tok, sizeof(tok)); /* the forge itself is right */
    assert_int_equal(verify_str(&key_a, tok, NOW), TOKEN_OK);
    forge("v1.u.YQ.9223372036854775807", tok, sizeof(tok));
    assert_int_equal(verify_str(&key_a, tok, NOW), TOKEN_OK);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        forge(bad[i], tok, sizeof(tok));
        assert_int_equal(verify_str(&key_a, tok, NOW), TOKEN_MALFORMED);
    }
    /* 256-byte subject. */
    memset(raw, 'x', sizeof(raw));
    b64url(raw, sizeof(raw), sub256);
    snprintf(prefix, sizeof(prefix), "v1.u.%s.0", sub256);
    forge(prefix, tok, sizeof(tok));
    assert_int_equal(verify_str(&key_a, tok, NOW), TOKEN_MALFORMED);
    /* 255 bytes is fine. */
    b64url(raw, 255, sub256);
    snprintf(prefix, sizeof(prefix), "v1.u.%s.0", sub256);
    forge(prefix, tok, sizeof(tok));
    assert_int_equal(verify_str(&key_a, tok, NOW), TOKEN_OK);
}

static void test_verify_outputs(void **state)
{
    char tok[TOKEN_MAX], small[6], fits[7];
    enum token_kind kind = TOKEN_USER;

    (void)state;
    sign_ok(TOKEN_ADMIN, "abcdef", 0, tok);
    /* NULL outputs are allowed. */
    assert_int_equal(token_verify(&key_a, tok, strlen(tok), NOW, &kind, NULL, 0, NULL), TOKEN_OK);
    assert_int_equal(kind, TOKEN_ADMIN);
    /* A subject buffer too small is refused, never overrun. */
    assert_int_equal(token_verify(&key_a, tok, strlen(tok), NOW, NULL, small, sizeof(small), NULL),
                     TOKEN_MALFORMED);
    assert_int_equal(token_verify(&key_a, tok, strlen(tok), NOW, NULL, fits, sizeof(fits), NULL),
                     TOKEN_OK);
    assert_string_equal(fits, "abcdef");
}

static void test_status_strings(void **state)
{
    (void)state;
    assert_string_equal(token_status_str(TOKEN_OK), "ok");
    assert_string_equal(token_status_str(TOKEN_MALFORMED), "malformed token");
    assert_string_equal(token_status_str(TOKEN_BAD_SIGNATURE), "bad signature");
    assert_string_equal(token_status_str(TOKEN_EXPIRED), "token expired");
}

static void test_durations(void **state)
{
    static const struct {
        const char *in;
        int64_t want; /* 0: must be rejected */
    } cases[] = {
        {"90", 90},
        {"90s", 90},
        {"15m", 900},
        {"12h", 43200},
        {"30d", 2592000},
        {"1w", 604800},
        {"1s", 1},
        {"090s", 90},
        {"5200w", 5200LL * 604800},      /* 99.7 years */
        {"36525d", 36525LL * 86400},     /* 100 years: the limit */
        {"36526d", 0},
        {"3155760001", 0},
        {"0", 0},
        {"0s", 0},
        {"0w", 0},
        {"", 0},
        {"s", 0},
        {"-5", 0},
        {"+5", 0},
        {" 5", 0},
        {"5 ", 0},
        {"5 s", 0},
        {"5ss", 0},
        {"5S", 0},
        {"5y", 0},
        {"1.5h", 0},
        {"1h30m", 0},
        {"0x10", 0},
        {"99999999999999999999999", 0},
        {"9223372036854775807", 0},
        {"9223372036854775807w", 0},
    };
    int64_t v;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        v = -1;
        if (cases[i].want == 0) {
            if (token_parse_duration(cases[i].in, &v) != -EINVAL)
                fail_msg("duration '%s' accepted", cases[i].in);
        } else {
            if (token_parse_duration(cases[i].in, &v) != 0 || v != cases[i].want)
                fail_msg("duration '%s' gave %lld", cases[i].in, (long long)v);
        }
    }
    assert_int_equal(token_parse_duration(NULL, &v), -EINVAL);
}

/* ---- secret file ------------------------------------------------------- */

static char tmpdir[64];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int secret_setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/nudge-test-token-XXXXXX");
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int secret_teardown(void **state)
{
    (void)state;
    return nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void path_in_tmp(char *out, size_t n, const char *name)
{
    assert_true((size_t)snprintf(out, n, "%s/%s", tmpdir, name) < n);
}

static void write_file(const char *path, const char *content, size_t len, mode_t mode)
{
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, mode);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static void test_secret_create_and_reload(void **state)
{
    char path[PATH_MAX], err[512], sub[PATH_MAX], text[80], tok[TOKEN_MAX];
    struct secret a, b;
    struct stat st;
    int created = -1, fd;
    ssize_t n;

    (void)state;
    path_in_tmp(sub, sizeof(sub), "create");
    assert_int_equal(mkdir(sub, 0700), 0);
    assert_true((size_t)snprintf(path, sizeof(path), "%s/secret", sub) < sizeof(path));

    assert_int_equal(secret_load(path, 1, &created, &a, err, sizeof(err)), 0);
    assert_int_equal(created, 1);
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0600);
    /* 64 lower-case hex digits and a newline, and no temporary file left behind. */
    fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    n = read(fd, text, sizeof(text));
    close(fd);
    assert_int_equal(n, 65);
    assert_int_equal(text[64], '\n');
    assert_int_equal(strspn(text, "0123456789abcdef"), 64);
    assert_int_equal(count_entries(sub), 1);

    assert_int_equal(secret_load(path, 1, &created, &b, err, sizeof(err)), 0);
    assert_int_equal(created, 0);
    assert_memory_equal(a.key, b.key, SECRET_BYTES);
    assert_int_equal(secret_load(path, 0, NULL, &b, err, sizeof(err)), 0);
    assert_memory_equal(a.key, b.key, SECRET_BYTES);

    /* Tokens signed with the created secret verify with the reloaded one. */
    assert_true(token_sign(&a, TOKEN_USER, "alice", 0, tok, sizeof(tok)) > 0);
    assert_int_equal(token_verify(&b, tok, strlen(tok), NOW, NULL, NULL, 0, NULL), TOKEN_OK);
}

static void test_secret_two_creations_differ(void **state)
{
    char p1[PATH_MAX], p2[PATH_MAX], err[512];
    struct secret a, b;

    (void)state;
    path_in_tmp(p1, sizeof(p1), "s1");
    path_in_tmp(p2, sizeof(p2), "s2");
    assert_int_equal(secret_load(p1, 1, NULL, &a, err, sizeof(err)), 0);
    assert_int_equal(secret_load(p2, 1, NULL, &b, err, sizeof(err)), 0);
    assert_memory_not_equal(a.key, b.key, SECRET_BYTES);
}

static void test_secret_refuses_readable_file(void **state)
{
    static const mode_t modes[] = {0644, 0640, 0604, 0660, 0601};
    char path[PATH_MAX], err[512], want[PATH_MAX + 32];
    struct secret s;
    int created = -1;

    (void)state;
    path_in_tmp(path, sizeof(path), "readable");
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        write_file(path,
                   "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", 65,
                   modes[i]);
        err[0] = '\0';
        assert_int_equal(secret_load(path, 1, &created, &s, err, sizeof(err)), -1);
        assert_int_equal(created, 0);
        snprintf(want, sizeof(want), "chmod 600 %s", path);
        assert_non_null(strstr(err, want));
        assert_true(strncmp(err, path, strlen(path)) == 0);
        assert_null(strchr(err, '\n'));
    }
    /* 0400 is fine. */
    assert_int_equal(chmod(path, 0400), 0);
    assert_int_equal(secret_load(path, 0, NULL, &s, err, sizeof(err)), 0);
    assert_int_equal(s.key[0], 0x00);
    assert_int_equal(s.key[1], 0x11);
    assert_int_equal(s.key[31], 0xff);
}

static void test_secret_refuses_bad_content(void **state)
{
    static const struct {
        const char *content;
        const char *reason;
    } bad[] = {
        {"", "empty file"},
        {"\n", "got 1 byte"},
        {"00112233", "got 8 bytes"},
        {"00112233445566778899aabbccddeeff00112233445566778899aabbccddeef\n", "byte 64"},
        {"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff0\n", "more than"},
        {"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n\n", "more than"},
        {"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\r\n", "more than"},
        {"00112233445566778899aabbccddeeff00112233445566778899aabbccddeefg\n", "byte 64"},
        {"x0112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", "byte 1"},
        {" 00112233445566778899aabbccddeeff00112233445566778899aabbccddeef", "byte 1"},
    };
    char path[PATH_MAX], err[512];
    struct secret s;

    (void)state;
    path_in_tmp(path, sizeof(path), "bad");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        write_file(path, bad[i].content, strlen(bad[i].content), 0600);
        err[0] = '\0';
        if (secret_load(path, 1, NULL, &s, err, sizeof(err)) != -1)
            fail_msg("content #%zu accepted", i);
        if (strstr(err, path) == NULL || strstr(err, bad[i].reason) == NULL ||
            strstr(err, "64 hexadecimal characters") == NULL)
            fail_msg("content #%zu: unexpected message: %s", i, err);
    }
    /* Upper case and a missing newline are accepted. */
    write_file(path, "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF", 64, 0600);
    assert_int_equal(secret_load(path, 0, NULL, &s, err, sizeof(err)), 0);
    assert_int_equal(s.key[10], 0xaa);
}

/* A rotated file: the new key first, the previous second; both load, with their ids. */
static void test_secret_rotation(void **state)
{
    static const char two[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n"
                              "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100\n";
    char path[PATH_MAX], err[512], tok[TOKEN_MAX];
    struct secret s, r, again;

    (void)state;
    path_in_tmp(path, sizeof(path), "rotated");
    write_file(path, two, strlen(two), 0600);
    assert_int_equal(secret_load(path, 0, NULL, &s, err, sizeof(err)), 0);
    assert_int_equal(s.key[0], 0x00);
    assert_true(s.has_previous);
    assert_int_equal(s.previous[0], 0xff);
    assert_int_equal(s.id, secret_key_id(s.key));
    assert_int_equal(s.previous_id, secret_key_id(s.previous));
    assert_true(s.id != s.previous_id);
    /* Without the last newline too; a bad byte in the second line is named by its place. */
    write_file(path, two, strlen(two) - 1, 0600);
    assert_int_equal(secret_load(path, 0, NULL, &s, err, sizeof(err)), 0);
    {
        char bad[sizeof(two)];
        memcpy(bad, two, sizeof(two));
        bad[70] = 'x';
        write_file(path, bad, strlen(bad), 0600);
        assert_int_equal(secret_load(path, 0, NULL, &s, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "byte 71 "));
    }
    /* Rotating: a new current key, the old current becomes the previous, the oldest is dropped. */
    write_file(path, two, strlen(two), 0600);
    assert_int_equal(secret_load(path, 0, NULL, &s, err, sizeof(err)), 0);
    assert_int_equal(token_sign(&s, TOKEN_USER, "alice", 0, tok, sizeof(tok)) > 0, 1);
    assert_int_equal(secret_rotate(path, &r, err, sizeof(err)), 0);
    assert_int_equal(secret_load(path, 0, NULL, &again, err, sizeof(err)), 0);
    assert_memory_equal(again.key, r.key, SECRET_BYTES);
    assert_memory_equal(again.previous, s.key, SECRET_BYTES);
    assert_int_equal(again.previous_id, s.id);
    assert_memory_not_equal(again.key, s.key, SECRET_BYTES);
    /* A token of the key before still verifies after the rotation. */
    assert_int_equal(verify_str(&again, tok, NOW), TOKEN_OK);
    {
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
    }
    /* Rotating a file that is not there, or is bad, fails and says where. */
    path_in_tmp(path, sizeof(path), "not-there");
    assert_int_equal(secret_rotate(path, &r, err, sizeof(err)), -1);
    assert_non_null(strstr(err, path));
}

static void test_secret_missing(void **state)
{
    char path[PATH_MAX], err[512], nodir[PATH_MAX];
    struct secret s;
    int created = -1;

    (void)state;
    path_in_tmp(path, sizeof(path), "absent");
    assert_int_equal(secret_load(path, 0, &created, &s, err, sizeof(err)), -1);
    assert_int_equal(created, 0);
    assert_true(strncmp(err, path, strlen(path)) == 0);
    assert_non_null(strstr(err, "nudged creates it on first start"));
    assert_non_null(strstr(err, "--secret-file"));
    assert_non_null(strstr(err, "-c nudged.conf"));
    assert_int_equal(access(path, F_OK), -1); /* not created */

    /* create=1 does not make parent directories. */
    path_in_tmp(nodir, sizeof(nodir), "no/such/dir/secret");
    assert_int_equal(secret_load(nodir, 1, &created, &s, err, sizeof(err)), -1);
    assert_int_equal(created, 0);
    assert_non_null(strstr(err, nodir));
    assert_non_null(strstr(err, "cannot create"));
}

static void test_secret_not_a_file(void **state)
{
    char path[PATH_MAX], err[512];
    struct secret s;

    (void)state;
    path_in_tmp(path, sizeof(path), "dir");
    assert_int_equal(mkdir(path, 0700), 0);
    assert_int_equal(secret_load(path, 1, NULL, &s, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not a regular file"));
}

int main(void)
{
    const struct CMUnitTest token_tests[] = {
        cmocka_unit_test(test_round_trip_each_kind),
        cmocka_unit_test(test_known_layout),
        cmocka_unit_test(test_v1_tokens_still_work),
        cmocka_unit_test(test_rotated_keys),
        cmocka_unit_test(test_revocation),
        cmocka_unit_test(test_subjects_that_work),
        cmocka_unit_test(test_sign_rejects),
        cmocka_unit_test(test_sign_buffer_size),
        cmocka_unit_test(test_tampered_kind),
        cmocka_unit_test(test_tampered_subject),
        cmocka_unit_test(test_tampered_expiry),
        cmocka_unit_test(test_tampered_mac),
        cmocka_unit_test(test_wrong_secret),
        cmocka_unit_test(test_mac_context_follows_the_secret),
        cmocka_unit_test(test_parse_then_check),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_expires_zero_never_expires),
        cmocka_unit_test(test_every_truncation_fails),
        cmocka_unit_test(test_every_byte_change_fails),
        cmocka_unit_test(test_extra_bytes_fail),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_correct_mac_but_malformed),
        cmocka_unit_test(test_verify_outputs),
        cmocka_unit_test(test_status_strings),
        cmocka_unit_test(test_durations),
    };
    const struct CMUnitTest secret_tests[] = {
        cmocka_unit_test(test_secret_create_and_reload),
        cmocka_unit_test(test_secret_two_creations_differ),
        cmocka_unit_test(test_secret_refuses_readable_file),
        cmocka_unit_test(test_secret_refuses_bad_content),
        cmocka_unit_test(test_secret_missing),
        cmocka_unit_test(test_secret_rotation),
        cmocka_unit_test(test_secret_not_a_file),
    };
    int failed;

    init_keys();
    failed = cmocka_run_group_tests_name("token", token_tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("secret", secret_tests, secret_setup, secret_teardown);
    return failed != 0;
}
