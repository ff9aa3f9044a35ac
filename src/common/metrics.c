/* metrics.c — the label texts of the counters that have labels; see metrics.h. */
#include "common/metrics.h"

const char *const ping_outcome_names[PING_OUTCOME_COUNT] = {
    [PING_CHANGED] = "changed",
    [PING_EXPIRED] = "expired",
    [PING_SUPERSEDED] = "superseded",
    [PING_SHUTTING_DOWN] = "shutting-down",
    [PING_STORE_ERROR] = "store-error",
};

const char *const udp_sent_names[UDP_SENT_COUNT] = {
    [UDP_SENT_NOTIFY] = "notify",
    [UDP_SENT_RESEND] = "resend",
    [UDP_SENT_TEST] = "test",
};

const char *const udp_reject_names[UDP_REJECT_COUNT] = {
    [UDP_REJECT_MALFORMED] = "malformed",
    [UDP_REJECT_NOT_ACK] = "not-ack",
    [UDP_REJECT_UNKNOWN] = "unknown-registration",
    [UDP_REJECT_BAD_TAG] = "bad-tag",
    [UDP_REJECT_REPLAY] = "replay",
};

const char *const password_result_names[PASSWORD_RESULT_COUNT] = {
    [PASSWORD_OK] = "ok",
    [PASSWORD_REFUSED] = "refused",
    [PASSWORD_UNAVAILABLE] = "unavailable",
};
