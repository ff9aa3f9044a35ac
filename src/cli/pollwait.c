/* pollwait.c — poll() with a deadline (see pollwait.h). */
#include "cli/pollwait.h"

#include <errno.h>
#include <poll.h>

#include "common/util.h"

int pollwait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        uint64_t now = util_now_ms();
        struct pollfd pfd = {.fd = fd, .events = events};
        int r;

        if (now >= deadline)
            return -ETIMEDOUT;
        r = poll(&pfd, 1, deadline - now > INT32_MAX ? INT32_MAX : (int)(deadline - now));
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR)
            return -errno;
    }
}
