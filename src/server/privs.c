/*
 * privs.c — switching to [server] user; see privs.h.
 *
 * The order matters: the groups before the uid (afterwards we may no longer
 * set them); PR_SET_KEEPCAPS so the permitted set survives setuid, then
 * capset makes CAP_NET_BIND_SERVICE the only capability, permitted and
 * effective. The raw capset system call is enough for one capability and
 * spares a library.
 */
#include "server/privs.h"

#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/log.h"

static int dropped;
static char dropped_to[64];
static unsigned dropped_uid, dropped_gid;

static int set_caps(unsigned bits)
{
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct d[2];

    memset(d, 0, sizeof(d));
    d[0].permitted = d[0].effective = bits;
    return (int)syscall(SYS_capset, &h, d);
}

int privs_drop(const char *user, char *err, size_t errlen)
{
    struct passwd *pw;

    if (user[0] == '\0')
        return 0;
    errno = 0;
    pw = getpwnam(user);
    if (pw == NULL) {
        snprintf(err, errlen, "[server] user %s: no such user%s%s", user, errno ? ": " : "",
                 errno ? strerror(errno) : "");
        return -1;
    }
    if (geteuid() != 0) {
        if (geteuid() == pw->pw_uid)
            return 0;
        snprintf(err, errlen, "[server] user %s: only root can switch users (running as uid %u)",
                 user, (unsigned)geteuid());
        return -1;
    }
    if (prctl(PR_SET_KEEPCAPS, 1) < 0 || initgroups(pw->pw_name, pw->pw_gid) < 0 ||
        setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
        snprintf(err, errlen, "[server] user %s: cannot switch to it: %s", user, strerror(errno));
        return -1;
    }
    prctl(PR_SET_KEEPCAPS, 0);
    if (set_caps(1u << CAP_NET_BIND_SERVICE) < 0) {
        snprintf(err, errlen, "[server] user %s: cannot keep CAP_NET_BIND_SERVICE: %s", user,
                 strerror(errno));
        return -1;
    }
    dropped = 1;
    snprintf(dropped_to, sizeof(dropped_to), "%s", user);
    dropped_uid = (unsigned)pw->pw_uid;
    dropped_gid = (unsigned)pw->pw_gid;
    return 0;
}

void privs_log(void)
{
    char q[128];

    if (dropped)
        LOG(LOG_INFO, privileges_dropped, "user=%s uid=%u gid=%u",
            log_q(q, sizeof(q), dropped_to), dropped_uid, dropped_gid);
    else if (geteuid() == 0)
        LOG(LOG_WARN, privileges_dropped,
            "user=root note=\"running as root: set [server] user to the account nudged should "
            "run as\"");
}

void privs_bound(void)
{
    if (dropped)
        set_caps(0);
}
