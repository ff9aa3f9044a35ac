/*
 * test_events.c — docs/events.md lists every event of events.h with the same
 * id and name, and no id twice. Run from the repository root (make does).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/events.h"

static char *read_doc(void)
{
    FILE *f = fopen("docs/events.md", "r");
    char *buf = calloc(1, 1 << 16);
    size_t n;

    assert_non_null(f);
    n = fread(buf, 1, (1 << 16) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void test_doc_matches_header(void **state)
{
    static const struct {
        int id;
        const char *name;
    } events[] = {
#define EVENT_ROW(id, name, desc) {id, #name},
        NUDGE_EVENTS(EVENT_ROW)
#undef EVENT_ROW
    };
    size_t count = sizeof(events) / sizeof(events[0]);
    char *doc = read_doc();
    char row[128];
    size_t rows = 0;

    (void)state;
    for (size_t i = 0; i < count; i++) {
        snprintf(row, sizeof(row), "\n| %d | %s |", events[i].id, events[i].name);
        if (strstr(doc, row) == NULL)
            fail_msg("docs/events.md lacks the row for %d %s", events[i].id, events[i].name);
        for (size_t j = i + 1; j < count; j++)
            assert_int_not_equal(events[i].id, events[j].id);
    }
    /* And no row documents an event the code does not have. */
    for (char *p = strstr(doc, "\n| 1"); p; p = strstr(p + 1, "\n| 1"))
        rows++;
    assert_int_equal(rows, count);
    free(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_doc_matches_header),
    };
    return cmocka_run_group_tests_name("events", tests, NULL, NULL);
}
