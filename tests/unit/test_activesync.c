/*
 * test_activesync.c — the Ping WBXML codec and the ActiveSync query parser,
 * with libwbxml2 (Debian's, a decoder we did not write) as the referee for
 * what our encoder writes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <wbxml/wbxml.h>

#include "activesync/query.h"
#include "activesync/wbxml.h"

/* xml2wbxml -a -n of <Ping><HeartbeatInterval>480</..><Folders><Folder><Id>INBOX</Id><Class>Email</Class>.. */
static const uint8_t ping_480_inbox[] = {
    0x03, 0x01, 0x6a, 0x00, 0x00, 0x0d, 0x45, 0x48, 0x03, 0x34, 0x38, 0x30, 0x00, 0x01, 0x49,
    0x4a, 0x4b, 0x03, 0x49, 0x4e, 0x42, 0x4f, 0x58, 0x00, 0x01, 0x4c, 0x03, 0x45, 0x6d, 0x61,
    0x69, 0x6c, 0x00, 0x01, 0x01, 0x01, 0x01};

static int decode(const uint8_t *b, size_t n, struct as_ping_req *q, struct as_folder *f,
                  size_t cap, char *err)
{
    q->folders = f;
    q->cap = cap;
    return as_wbxml_decode_ping(b, n, q, err, 200);
}

static void decodes_a_full_ping(void **state)
{
    struct as_folder f[4];
    struct as_ping_req q;
    char err[200];

    (void)state;
    assert_int_equal(decode(ping_480_inbox, sizeof(ping_480_inbox), &q, f, 4, err), 0);
    assert_int_equal(q.heartbeat, 480);
    assert_int_equal(q.nfolders, 1);
    assert_string_equal(f[0].id, "INBOX");
    assert_string_equal(f[0].cls, "Email");
}

static void decodes_an_empty_ping_element(void **state)
{
    static const uint8_t b[] = {0x03, 0x01, 0x6a, 0x00, 0x00, 0x0d, 0x05};
    struct as_folder f[1];
    struct as_ping_req q;
    char err[200];

    (void)state;
    assert_int_equal(decode(b, sizeof(b), &q, f, 1, err), 0);
    assert_int_equal(q.heartbeat, 0);
    assert_int_equal(q.has_folders, 0);
}

static void counts_folders_beyond_capacity(void **state)
{
    uint8_t b[512];
    size_t n = 0;
    struct as_folder f[2];
    struct as_ping_req q;
    char err[200];

    (void)state;
    memcpy(b, "\x03\x01\x6a\x00\x00\x0d\x45\x49", 8);
    n = 8;
    for (int i = 0; i < 5; i++) {
        n += (size_t)sprintf((char *)b + n, "\x4a\x4b\x03%d", i) + 1;
        b[n++] = 0x01;
        b[n++] = 0x01;
    }
    b[n++] = 0x01;
    b[n++] = 0x01;
    assert_int_equal(decode(b, n, &q, f, 2, err), 0);
    assert_int_equal(q.nfolders, 5);
    assert_string_equal(f[1].id, "1");
}

/* Every prefix of a good document is refused, with a message. */
static void refuses_every_truncation(void **state)
{
    struct as_folder f[4];
    struct as_ping_req q;
    char err[200];

    (void)state;
    for (size_t n = 0; n < sizeof(ping_480_inbox); n++) {
        err[0] = '\0';
        assert_int_equal(decode(ping_480_inbox, n, &q, f, 4, err), -1);
        assert_true(strlen(err) > 10);
    }
}

static void refuses_wrong_documents(void **state)
{
    static const struct {
        const char *b;
        size_t n;
        const char *want;
    } cases[] = {
        {"\x04\x01\x6a\x00\x00\x0d\x05", 7, "version"},
        {"\x03\x01\x04\x00\x00\x0d\x05", 7, "charset"},
        {"\x03\x01\x6a\x00\x00\x0e\x05", 7, "code page 14"},
        {"\x03\x01\x6a\x00\x00\x0d\x47\x03\x31\x00\x01", 11, "root must be Ping"},
        {"\x03\x01\x6a\x00\x00\x0d\x45\x48\x03x\x00\x01\x01", 13, "HeartbeatInterval"},
        {"\x03\x01\x6a\x00\x00\x0d\x45\x49\x01\x01", 10, "no Folder"},
        {"\x03\x01\x6a\x00\x00\x0d\x45\x49\x4a\x4c\x03\x45\x00\x01\x01\x01\x01", 17, "without an Id"},
        {"\x03\x01\x6a\x00\x00\x0d\x05\x05", 8, "after the Ping"},
        {"\x03\x01\x6a\x00\x00\x0d\xc5", 7, "attributes"},
        {"\x03\x01\x6a\x00\x00\x0d\x45\x48\x03\x31\x00\x01\x48\x03\x31\x00\x01\x01", 18, "each once"},
    };
    struct as_folder f[4];
    struct as_ping_req q;
    char err[200];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(decode((const uint8_t *)cases[i].b, cases[i].n, &q, f, 4, err), -1);
        if (strstr(err, cases[i].want) == NULL)
            fail_msg("case %zu: \"%s\" does not say \"%s\"", i, err, cases[i].want);
    }
}

static void survives_random_bytes(void **state)
{
    uint8_t b[64];
    struct as_folder f[4];
    struct as_ping_req q;
    char err[200];

    (void)state;
    srand(19);
    for (int i = 0; i < 20000; i++) {
        size_t n = (size_t)(rand() % (int)sizeof(b));
        for (size_t j = 0; j < n; j++)
            b[j] = (uint8_t)rand();
        if (n > 6 && i % 2) /* a valid header, so the body is reached */
            memcpy(b, "\x03\x01\x6a\x00\x00\x0d", 6);
        (void)decode(b, n, &q, f, 4, err);
    }
}

/* Our answer, decoded by libwbxml2 into XML. */
static char *referee(const uint8_t *b, size_t n)
{
    WBXMLConvWBXML2XML *conv = NULL;
    WB_UTINY *xml = NULL;
    WB_ULONG xlen = 0;

    assert_int_equal(wbxml_conv_wbxml2xml_create(&conv), WBXML_OK);
    wbxml_conv_wbxml2xml_set_language(conv, WBXML_LANG_ACTIVESYNC);
    wbxml_conv_wbxml2xml_set_gen_type(conv, WBXML_GEN_XML_COMPACT);
    assert_int_equal(wbxml_conv_wbxml2xml_run(conv, (WB_UTINY *)b, (WB_ULONG)n, &xml, &xlen),
                     WBXML_OK);
    wbxml_conv_wbxml2xml_destroy(conv);
    return (char *)xml;
}

static void encodes_what_libwbxml2_reads(void **state)
{
    static const char *const ids[] = {"INBOX", "Sent&<x>"};
    struct as_ping_answer a = {0};
    struct {
        unsigned status;
        const char *want;
    } cases[] = {
        {1, "<Ping xmlns=\"Ping:\"><Status>1</Status></Ping>"},
        {2, "<Ping xmlns=\"Ping:\"><Status>2</Status><Folders><Folder>INBOX</Folder>"
            "<Folder>Sent&amp;&lt;x&gt;</Folder></Folders></Ping>"},
        {5, "<Ping xmlns=\"Ping:\"><Status>5</Status><HeartbeatInterval>60</HeartbeatInterval></Ping>"},
        {6, "<Ping xmlns=\"Ping:\"><Status>6</Status><MaxFolders>200</MaxFolders></Ping>"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n;
        uint8_t *b;
        char *xml;
        memset(&a, 0, sizeof(a));
        a.status = cases[i].status;
        if (a.status == 2) {
            a.folders = ids;
            a.nfolders = 2;
        }
        a.heartbeat = a.status == 5 ? 60 : 0;
        a.max_folders = a.status == 6 ? 200 : 0;
        b = as_wbxml_encode_ping(&a, &n);
        assert_memory_equal(b, "\x03\x01\x6a\x00", 4);
        xml = referee(b, n);
        if (strstr(xml, cases[i].want) == NULL)
            fail_msg("status %u: %s", a.status, xml);
        free(xml);
        free(b);
    }
}

/* ---- the query ---------------------------------------------------- */

static void parses_the_plain_query(void **state)
{
    const char *q = "Cmd=Ping&User=DOM%5Calice&DeviceId=ABC123&DeviceType=iPhone";
    struct as_query aq;
    char err[200];

    (void)state;
    assert_int_equal(as_query_parse(q, strlen(q), &aq, err, sizeof(err)), 0);
    assert_int_equal(aq.cmd, AS_CMD_PING);
    assert_int_equal(aq.base64, 0);
    assert_string_equal(aq.user, "DOM\\alice");
    assert_string_equal(aq.device, "ABC123");
    assert_string_equal(aq.device_type, "iPhone");
}

static void names_other_commands(void **state)
{
    const char *q = "Cmd=Sync&User=a&DeviceId=D&DeviceType=T";
    struct as_query aq;
    char err[200];

    (void)state;
    assert_int_equal(as_query_parse(q, strlen(q), &aq, err, sizeof(err)), 0);
    assert_int_equal(aq.cmd, 0);
    q = "Cmd=Frobnicate&DeviceId=D";
    assert_int_equal(as_query_parse(q, strlen(q), &aq, err, sizeof(err)), 0);
    assert_int_equal(aq.cmd, -1);
}

/*
 * MS-ASHTTP 2.2.1.1.1.1's structure: version 141, Ping, locale 0x0409,
 * device id "ABCD", policy key 4 bytes, device type "SP", User "alice".
 */
static const unsigned char b64_bin[] = {141, 18, 0x09, 0x04, 4, 'A', 'B', 'C', 'D', 4, 1, 2, 3, 4,
                                        2, 'S', 'P', 8, 5, 'a', 'l', 'i', 'c', 'e'};

static void b64(const unsigned char *in, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
        out[o++] = i + 1 < n ? a[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? a[v & 63] : '=';
    }
    out[o] = '\0';
}

static void parses_the_base64_query(void **state)
{
    struct as_query aq;
    char q[128], err[200];

    (void)state;
    b64(b64_bin, sizeof(b64_bin), q);
    assert_int_equal(as_query_parse(q, strlen(q), &aq, err, sizeof(err)), 0);
    assert_int_equal(aq.base64, 1);
    assert_int_equal(aq.cmd, AS_CMD_PING);
    assert_int_equal(aq.version, 141);
    assert_string_equal(aq.device, "ABCD");
    assert_string_equal(aq.device_type, "SP");
    assert_string_equal(aq.user, "alice");
    assert_int_equal(aq.policy_key, 0x04030201);
}

static void keeps_a_binary_device_id_in_hex(void **state)
{
    static const unsigned char bin[] = {121, 18, 0, 0, 3, 0x00, 0xff, 0x10, 0, 1, 'X'};
    struct as_query aq;
    char q[64], err[200];

    (void)state;
    b64(bin, sizeof(bin), q);
    assert_int_equal(as_query_parse(q, strlen(q), &aq, err, sizeof(err)), 0);
    assert_string_equal(aq.device, "00ff10");
    assert_string_equal(aq.user, "");
}

static void refuses_every_truncated_base64_query(void **state)
{
    struct as_query aq;
    char q[128], err[200];

    (void)state;
    /* Cutting inside the parameters, the device id or the type: never accepted as whole. */
    for (size_t n = 0; n < sizeof(b64_bin) - 1; n++) {
        if (n == 14 || n == 17) /* ends right after the type or after a whole parameter: valid */
            continue;
        b64(b64_bin, n, q);
        err[0] = '\0';
        if (as_query_parse(q, strlen(q), &aq, err, sizeof(err)) == 0)
            fail_msg("accepted %zu bytes", n);
        assert_true(strlen(err) > 10);
    }
}

static void refuses_garbage_queries(void **state)
{
    static const char *const qs[] = {"", "!!!!", "Cmd=Ping", "Cmd=Ping&DeviceId=%zz", "A", "AAAAA"};
    struct as_query aq;
    char err[200];

    (void)state;
    for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++)
        assert_int_equal(as_query_parse(qs[i], strlen(qs[i]), &aq, err, sizeof(err)), -1);
}

static void writes_versions(void **state)
{
    char v[8];

    (void)state;
    assert_int_equal(as_query_version_text(121, v, sizeof(v)), 0);
    assert_string_equal(v, "12.1");
    assert_int_equal(as_query_version_text(25, v, sizeof(v)), 0);
    assert_string_equal(v, "2.5");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(decodes_a_full_ping),
        cmocka_unit_test(decodes_an_empty_ping_element),
        cmocka_unit_test(counts_folders_beyond_capacity),
        cmocka_unit_test(refuses_every_truncation),
        cmocka_unit_test(refuses_wrong_documents),
        cmocka_unit_test(survives_random_bytes),
        cmocka_unit_test(encodes_what_libwbxml2_reads),
        cmocka_unit_test(parses_the_plain_query),
        cmocka_unit_test(names_other_commands),
        cmocka_unit_test(parses_the_base64_query),
        cmocka_unit_test(keeps_a_binary_device_id_in_hex),
        cmocka_unit_test(refuses_every_truncated_base64_query),
        cmocka_unit_test(refuses_garbage_queries),
        cmocka_unit_test(writes_versions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
