/* version.h — the one place the version number lives. */
#ifndef NUDGE_VERSION_H
#define NUDGE_VERSION_H
#define NUDGE_VERSION "0.1.0"
#endif
