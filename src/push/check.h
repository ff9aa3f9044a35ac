/*
 * check.h — the rules for names (users, devices, folders, event types)
 * that every endpoint applies the same way.
 */
#ifndef NUDGE_CHECK_H
#define NUDGE_CHECK_H

#include <stddef.h>

#define DEVICE_ID_MAX 128
#define FOLDER_NAME_MAX 255
#define USER_ID_MAX 255

/*
 * Each returns NULL when s[0..len) is acceptable, else a reason fit for an
 * error message ("must be 1 to 255 bytes"). Names are 1..max bytes with no
 * control characters (and so no NUL).
 */
const char *check_device_id(const char *s, size_t len);
const char *check_folder_name(const char *s, size_t len);
const char *check_user_id(const char *s, size_t len);
/* Event types: 1..32 of a-z, 0-9, '-', '_'. */
const char *check_event_type(const char *s, size_t len);

#endif
