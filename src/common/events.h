/*
 * events.h — every kind of log event, with its stable numeric id.
 *
 * The ids are part of the operator interface (alerts and log searches key on
 * them), so an id is never reused or renumbered; retired events keep their
 * line, commented out. docs/events.md lists the same table and a unit test
 * checks the two agree.
 *
 * EVENT(id, name, description)
 */
#ifndef NUDGE_EVENTS_H
#define NUDGE_EVENTS_H

#define NUDGE_EVENTS(EVENT)                                                        \
    EVENT(1000, started, "nudged started; version and effective settings")        \
    EVENT(1001, listening, "the HTTP listener is bound; addr is the real address") \
    EVENT(1002, stopping, "a stop signal arrived; held requests are being answered") \
    EVENT(1003, stopped, "nudged exits cleanly")                                   \
    EVENT(1004, config_error, "the configuration was refused at start-up")         \
    EVENT(1005, secret_created, "a new server secret file was created")            \
    EVENT(1006, startup_failed, "nudged could not start (bind, secret, store)")     \
    EVENT(1007, network_settings, "heartbeat max and keepalive in force, derived from idle_timeout or set") \
    EVENT(1008, reloaded, "SIGHUP: what was reloaded (log level, log file, passwords) and what needs a restart") \
    EVENT(1009, reload_failed, "SIGHUP: the configuration could not be read again; nothing changed") \
    EVENT(1010, log_coalesced, "lines of one event over [log] burst in 10 s were counted, not written") \
    EVENT(1011, privileges_dropped, "nudged switched to [server] user after binding its sockets") \
    EVENT(1012, udp_loopback_only, "a public TCP listener is paired with a loopback UDP socket: devices elsewhere get no datagrams") \
    EVENT(1100, conn_closed, "a connection closed; why tells eof, idle, a socket error, ...")               \
    EVENT(1101, bad_request, "a request was refused as malformed (HTTP 4xx)")      \
    EVENT(1102, request_timeout, "a client did not send a complete request in time") \
    EVENT(1103, accept_error, "accept() failed")                                    \
    EVENT(1104, listen_paused, "accepting paused: max_connections or out of descriptors") \
    EVENT(1105, listen_resumed, "accepting resumed after a pause")                 \
    EVENT(1106, conn_refused, "a connection was refused: over max_per_ip")         \
    EVENT(1150, tls_failed, "a TLS handshake failed or a record was refused; the connection closed") \
    EVENT(1151, tls_loaded, "the TLS certificate and key were loaded (at start or on reload)") \
    EVENT(1200, auth_failed, "a request carried a missing, invalid or expired credential") \
    EVENT(1201, auth_forbidden, "a valid credential was used for an endpoint it may not use") \
    EVENT(1202, signed_in, "a user signed in with a password and was given a token (POST /v1/login)") \
    EVENT(1203, password_refused, "a user's mail password was refused (wrong, or no such user)") \
    EVENT(1204, signin_limited, "an address or a user reached the failed sign-in limit; answered 429 until the window ends") \
    EVENT(1205, passwords_unavailable, "the password backend cannot answer (Dovecot away, a file unreadable, a check timed out)") \
    EVENT(1206, passwords_ready, "the password backend is ready (connected to Dovecot, or the file read)") \
    EVENT(1207, passwd_line_refused, "a line of the passwd-file was skipped (plain text or weak scheme, bad syntax)") \
    EVENT(1208, tokens_revoked, "an admin revoked every token of a user") \
    EVENT(1209, origin_refused, "a cookie-authenticated request or a CORS preflight came from an Origin not in [http] cors_origins") \
    EVENT(1210, tickets_full, "a worker remembers [auth] tickets_max used tickets: a ticket was refused 503") \
    EVENT(1300, ping_superseded, "a device's held ping was answered because it sent a newer one") \
    EVENT(1301, session_limit, "a user at the session cap was refused a new session (429)") \
    EVENT(1310, heartbeat_learned, "a device's heartbeat hint moved on new evidence (debug)") \
    EVENT(1311, heartbeat_alert, "a client network's learned heartbeats average alert_average or less") \
    EVENT(1302, session_closed, "a session's connection closed without an answer (gone, dead, reaped, ended)") \
    EVENT(1800, as_folders_ignored, "an ActiveSync device got Status 7 twice for the same folder Ids; they are ignored for unknown_folder_ignore") \
    EVENT(1801, as_battery_guard, "an ActiveSync device re-pinged within seconds of non-change answers again and again; its Pings are held to heartbeat min") \
    EVENT(1802, as_heartbeat_guided, "an ActiveSync device was told (Status 5) the heartbeat its path was proven to carry") \
    EVENT(1900, stream_slow, "an event stream whose client did not read what it was sent was closed") \
    EVENT(1400, publish_rejected, "a publish batch was refused; nothing of it applied") \
    EVENT(1500, store_opened, "the store is open and its states are loaded")     \
    EVENT(1501, store_write_failed, "a group commit failed; its publishes were answered 503") \
    EVENT(1502, store_record_skipped, "a stored device record could not be read; it was skipped") \
    EVENT(1503, store_closed, "the store wrote everything queued and closed") \
    EVENT(1600, udp_listening, "the UDP socket is bound; addr is the real address") \
    EVENT(1601, udp_registered, "a device registered for UDP datagrams (or replaced its registration)") \
    EVENT(1602, udp_suspended, "an ICMP error said a registration's address is unreachable; its resends stopped") \
    EVENT(1603, udp_ended, "a UDP registration ended: expired, deleted, replaced, ended by an admin, reaped") \
    EVENT(1604, udp_revived, "a suspended registration came back (the device pinged or acked)") \
    EVENT(1605, udp_resends_exhausted, "a change was resent max_resends times without the device catching up") \
    EVENT(1606, udp_datagram_rejected, "a datagram received was dropped (malformed, forged, replayed); at most one line per 10 s") \
    EVENT(1607, udp_send_failed, "a datagram could not be sent (the socket refused it)") \
    EVENT(1504, store_resharded, "at start-up, users were moved between shard files for a new number of workers") \
    EVENT(1505, store_write_recovered, "a group commit succeeded after failed ones; the store is healthy again") \
    EVENT(1700, workers_starting, "the supervisor starts its worker processes") \
    EVENT(1701, worker_started, "a worker process was started (or restarted)") \
    EVENT(1702, worker_exited, "a worker process exited or was killed; the supervisor restarts it after a back-off") \
    EVENT(1703, worker_peer_reset, "a worker learned that another one restarted; its calls to it failed") \
    EVENT(1704, handoff_failed, "a connection or message could not be passed between workers") \
    EVENT(1705, mesh_call_failed, "a request to another worker failed or timed out") \
    EVENT(1706, reuseport_steering, "connections could not be steered to workers by client address; max_per_ip is counted per worker")

enum event_id {
#define EVENT_ENUM(id, name, desc) EV_##name = id,
    NUDGE_EVENTS(EVENT_ENUM)
#undef EVENT_ENUM
};

#endif
