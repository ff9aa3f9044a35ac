/* check.c — the rules for names, shared by every endpoint; see check.h. */
#include "push/check.h"

#include <stdio.h>

static const char *check_name(const char *s, size_t len, size_t max, const char *too_long)
{
    if (len == 0)
        return "must not be empty";
    if (len > max)
        return too_long;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return "must not contain control characters";
    return NULL;
}

const char *check_device_id(const char *s, size_t len)
{
    return check_name(s, len, DEVICE_ID_MAX, "must be at most 128 bytes");
}

const char *check_folder_name(const char *s, size_t len)
{
    return check_name(s, len, FOLDER_NAME_MAX, "must be at most 255 bytes");
}

const char *check_user_id(const char *s, size_t len)
{
    return check_name(s, len, USER_ID_MAX, "must be at most 255 bytes");
}

const char *check_event_type(const char *s, size_t len)
{
    if (len == 0 || len > 32)
        return "must be 1 to 32 characters";
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
            return "must use only a-z, 0-9, '-' and '_'";
    }
    return NULL;
}
