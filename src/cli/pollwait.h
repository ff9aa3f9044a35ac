/*
 * pollwait.h — the one bounded wait of the client's blocking I/O: poll() on
 * one socket until it is ready or a deadline passes. httpc (plain sockets)
 * and tlsc (OpenSSL's WANT_READ / WANT_WRITE) both wait through it, so every
 * connect, read and write has a timeout without signals or threads.
 */
#ifndef NUDGE_CLI_POLLWAIT_H
#define NUDGE_CLI_POLLWAIT_H

#include <stdint.h>

/*
 * Waits until fd is ready for 'events' (poll's) or the deadline
 * (util_now_ms() time) passes. Returns 0, -ETIMEDOUT, or another negative
 * errno.
 */
int pollwait_fd(int fd, short events, uint64_t deadline);

#endif
