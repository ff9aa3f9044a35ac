/*
 * mesh_handlers.h — the receiving end of each mesh message (mesh.h), each
 * implemented by the module that owns what the message is about.
 */
#ifndef NUDGE_MESH_HANDLERS_H
#define NUDGE_MESH_HANDLERS_H

#include <stddef.h>
#include <stdint.h>

struct server;
struct mesh_handoff;
struct mesh_ip_move;

/* MESH_HANDOFF (server/conn.c): takes over fd and processes the bytes read so far. */
void conn_adopt(struct server *s, int fd, unsigned from, const struct mesh_handoff *h,
                const char *bytes, size_t len);
/* MESH_IP_MOVE (server/listen.c). */
void listen_ip_move(struct server *s, const struct mesh_ip_move *mv);
/* MESH_RESET (server/listen.c): drops the per-address counts the dead worker held. */
void listen_peer_reset(struct server *s, unsigned peer);
/* MESH_BUMP (push/events.c): applies the events, replies with their new states. */
void events_remote_bump(struct server *s, unsigned from, uint32_t id, const char *p, size_t len);
/* MESH_METRICS (server/admin.c): replies with this worker's counters. */
void admin_metrics_remote(struct server *s, unsigned from, uint32_t id);
/* MESH_SESSIONS (session/session.c): replies with this worker's sessions as JSON. */
void sessions_remote(struct server *s, unsigned from, uint32_t id, const char *p, size_t len);

#endif
