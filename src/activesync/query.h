/*
 * query.h — the query of an ActiveSync request, in either of its forms
 * (MS-ASHTTP 2.2.1.1.1): plain ("Cmd=Ping&User=U&DeviceId=D&DeviceType=T")
 * or base64, where the whole query is base64 of a binary structure
 * (2.2.1.1.1.1): protocol version, command code, locale, device id, policy
 * key, device type, then tagged command parameters.
 */
#ifndef NUDGE_AS_QUERY_H
#define NUDGE_AS_QUERY_H

#include <stddef.h>
#include <stdint.h>

/* MS-ASHTTP 2.2.1.1.1.1.2: the command codes of the base64 form. */
#define AS_CMD_PING 18

/* The longest query taken, encoded: a real one is under 200 bytes. */
#define AS_QUERY_MAX 1024

struct as_query {
    int base64;              /* which form it came in */
    int cmd;                 /* command code; -1: a name the table does not know */
    char cmd_name[32];       /* "Ping", "Sync", ...; "?" for an unknown code */
    char user[256];          /* "" when not given (the base64 form may omit it) */
    char device[129];        /* DeviceId; a binary one (base64 form) in hex */
    char device_type[65];
    unsigned version;        /* base64 form: 121 for 12.1 ...; 0 in the plain form */
    uint32_t policy_key;     /* base64 form, 0 when absent */
};

/*
 * Parses the query q (qlen bytes, without '?'). The base64 form is taken
 * when the query has no "Cmd=" parameter. 0, or -1 with a sentence in err.
 * Checks only the syntax: which command and which values are served is the
 * caller's.
 */
int as_query_parse(const char *q, size_t qlen, struct as_query *out, char *err, size_t errlen);

/* The name of command code 'code' ("Ping"), or NULL. */
const char *as_query_cmd_name(int code);

/* "12.1" for 121 into out (at least 8 bytes); 0, or -1 when not a version. */
int as_query_version_text(unsigned version, char *out, size_t outlen);

#endif
