# nudge — one non-recursive Makefile.
#   make            build bin/nudged and bin/nudge
#   make run        install missing Debian packages, build, start nudged on defaults
#   make test       install, build, check the layers, run unit + end-to-end tests, then again
#                   under ASan+UBSan
#   make SAN=1      build with AddressSanitizer+UndefinedBehaviorSanitizer into build-san/
#   make deps       install missing Debian packages only
#   make bench      nudge against nginx+nchan at N=10k and 100k (make bench N=1000000: 1M)
#   make bench-tls-libs  OpenSSL, wolfSSL and GnuTLS: memory per idle connection, handshake CPU
#   make bench-tls  nudged's TLS beside nginx's: memory per held TLS ping, handshakes per core

CC      ?= cc
PYTHON  ?= /usr/bin/python3
SAN     ?= 0

ifeq ($(SAN),1)
BUILD   := build-san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
OPT     := -O1
else
BUILD   := build
SANFLAGS :=
OPT     := -O2
endif
BIN     := $(BUILD)/bin

LLHTTP_SRC_DIR := /usr/share/llhttp
LLHTTP_INC_DIR := /usr/share/include/llhttp

CPPFLAGS += -Isrc -I$(LLHTTP_INC_DIR) -D_GNU_SOURCE
CFLAGS   += -std=c11 $(OPT) -g -Wall -Wextra -Werror -MMD -MP $(SANFLAGS)
LDFLAGS  += $(SANFLAGS)
LIBS     := -luv -ljansson -linih -lssl -lcrypto -lsqlite3 -lcrypt -lsystemd -lwslay -lpthread
# libwbxml2: the referee for our Ping codec in the unit tests and the fuzz target
# (docs/activesync.md says why nudged itself reads and writes the tokens by hand).
WBXML_CFLAGS := $(shell pkg-config --cflags libwbxml2)
WBXML_LIBS   := $(shell pkg-config --libs libwbxml2)

# Sources by layer, lowest first (docs/architecture.md, "Layers"; make check-layers).
COMMON_SRC := \
	src/common/xalloc.c \
	src/common/log.c \
	src/common/config.c \
	src/common/strmap.c \
	src/common/util.c \
	src/common/jsonw.c \
	src/common/deadline.c \
	src/common/metrics.c
AUTH_SRC    := src/auth/token.c src/auth/secret.c src/auth/basic.c src/auth/limit.c \
	src/auth/ticket.c
PASSWD_SRC  := src/auth/passwd.c src/auth/passwd_dovecot.c src/auth/passwd_file.c
HTTP_SRC    := src/http/request.c src/http/response.c src/http/error.c src/http/cookie.c \
	src/http/csp.c
NET_SRC     := src/net/sockopt.c
TLS_SRC     := src/tls/record.c src/tls/server.c
STORE_SRC   := src/store/store.c src/store/statemap.c src/store/store_mem.c \
	src/store/store_sqlite.c src/store/sqlite_writer.c src/store/reshard.c
SHARD_SRC   := src/shard/shard.c
WORKER_SRC  := src/worker/owner.c src/worker/mesh.c
CONN_SRC    := src/conn/conn.c src/conn/listen.c
DGRAM_SRC   := src/udp/datagram.c
UDP_SRC     := src/udp/socket.c src/udp/udp.c
HB_SRC      := src/session/heartbeat.c
SESSION_SRC := src/session/session.c src/session/devices.c
PUSH_SRC    := src/push/check.c src/push/ping.c src/push/probe.c src/push/state.c \
	src/push/events.c src/push/udp_api.c src/push/ingest.c src/push/login.c \
	src/push/ticket_api.c src/push/pingrate.c
ADMIN_SRC   := src/admin/admin.c src/admin/sessions_api.c src/admin/revoke.c src/admin/status.c
AS_CODEC_SRC := src/activesync/wbxml.c src/activesync/query.c
AS_SRC      := $(AS_CODEC_SRC) src/activesync/ping.c
STREAM_SRC  := src/stream/state_id.c src/stream/watch.c src/stream/sse.c src/stream/wsmsg.c src/stream/ws.c
SERVER_SRC  := src/server/server.c src/server/router.c src/server/handoff.c \
	src/server/supervisor.c src/server/reload.c src/server/privs.c

NUDGED_SRC := $(COMMON_SRC) $(AUTH_SRC) $(PASSWD_SRC) $(HTTP_SRC) $(NET_SRC) $(TLS_SRC) $(STORE_SRC) $(SHARD_SRC) \
	$(WORKER_SRC) $(CONN_SRC) $(DGRAM_SRC) $(UDP_SRC) $(HB_SRC) $(SESSION_SRC) $(PUSH_SRC) \
	$(AS_SRC) $(STREAM_SRC) $(ADMIN_SRC) $(SERVER_SRC) src/server/main.c

NUDGE_SRC := $(COMMON_SRC) $(AUTH_SRC) $(HTTP_SRC) $(DGRAM_SRC) \
	src/cli/main.c \
	src/cli/httpc.c \
	src/cli/tlsc.c \
	src/cli/pollwait.c \
	src/cli/udpsock.c \
	src/cli/cmd_token.c \
	src/cli/cmd_publish.c \
	src/cli/cmd_ping.c \
	src/cli/cmd_sessions.c \
	src/cli/cmd_probe.c \
	src/cli/cmd_listen.c \
	src/cli/cmd_doctor.c

# Each unit test links the modules it tests and what they stand on, nothing else.
UNIT_TESTS := \
	tests/unit/test_token \
	tests/unit/test_ticket \
	tests/unit/test_auth \
	tests/unit/test_config \
	tests/unit/test_http \
	tests/unit/test_store \
	tests/unit/test_store_sqlite \
	tests/unit/test_deadline \
	tests/unit/test_events \
	tests/unit/test_net \
	tests/unit/test_heartbeat \
	tests/unit/test_shard \
	tests/unit/test_datagram \
	tests/unit/test_owner \
	tests/unit/test_mesh \
	tests/unit/test_activesync \
	tests/unit/test_wsmsg \
	tests/unit/test_log \
	tests/unit/test_csp \
	tests/unit/test_tls
test_token_SRC       := $(COMMON_SRC) $(AUTH_SRC)
test_ticket_SRC      := $(COMMON_SRC) $(AUTH_SRC)
test_auth_SRC        := $(COMMON_SRC) $(AUTH_SRC)
test_config_SRC      := $(COMMON_SRC)
test_http_SRC        := $(COMMON_SRC) $(HTTP_SRC)
test_store_SRC       := $(COMMON_SRC) $(STORE_SRC)
test_store_sqlite_SRC := $(COMMON_SRC) $(STORE_SRC)
test_deadline_SRC    := $(COMMON_SRC)
test_events_SRC      := $(COMMON_SRC)
test_net_SRC         := $(COMMON_SRC) $(NET_SRC)
test_heartbeat_SRC   := $(COMMON_SRC) $(STORE_SRC) $(SHARD_SRC) $(HB_SRC)
test_shard_SRC       := $(COMMON_SRC) $(STORE_SRC) $(SHARD_SRC)
test_datagram_SRC    := $(COMMON_SRC) $(DGRAM_SRC)
test_owner_SRC       := $(COMMON_SRC) $(STORE_SRC) $(WORKER_SRC)
test_mesh_SRC        := $(COMMON_SRC) $(WORKER_SRC)
test_activesync_SRC  := $(COMMON_SRC) $(AS_CODEC_SRC)
test_wsmsg_SRC       := $(COMMON_SRC) src/push/check.c src/stream/wsmsg.c
test_log_SRC         := $(COMMON_SRC)
test_csp_SRC         := $(COMMON_SRC) $(HTTP_SRC)
test_tls_SRC         := $(COMMON_SRC) $(TLS_SRC)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

# The status page (src/admin/status.html) as a C array, made at build time so
# that the page is written as HTML; const, so it stays in read-only memory.
STATUS_HTML_OBJ := $(BUILD)/gen/status_html.o
NUDGED_OBJ     := $(call obj,$(NUDGED_SRC)) $(STATUS_HTML_OBJ)
NUDGE_OBJ      := $(call obj,$(NUDGE_SRC))
LLHTTP_LIB     := $(BUILD)/libllhttp.a
LLHTTP_OBJ     := $(BUILD)/llhttp/api.o $(BUILD)/llhttp/http.o $(BUILD)/llhttp/llhttp.o
UNIT_BIN       := $(patsubst tests/unit/%,$(BUILD)/tests/%,$(UNIT_TESTS))

.PHONY: all run test check-layers test-unit test-e2e test-e2e-workers test-san deps deps-test deps-bench clean \
	browser-deps \
	bench bench-nudge bench-streams bench-tls-libs bench-tls

comma := ,

all: $(BIN)/nudged $(BIN)/nudge bin/nudged bin/nudge

# bin/ holds the release binaries users run; sanitizer builds stay in build-san/.
ifeq ($(SAN),1)
bin/nudged bin/nudge:
	@:
else
bin/%: $(BIN)/%
	@mkdir -p bin
	cp $< $@
endif

$(BIN)/nudged: $(NUDGED_OBJ) $(LLHTTP_LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BIN)/nudge: $(NUDGE_OBJ) $(LLHTTP_LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

# The benchmarks' load generator (bench/loadgen.c): one file, libc and
# libcrypto (SHA-1 and base64 of the WebSocket handshake, --answer ws-*).
$(BIN)/loadgen: bench/loadgen.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< -lcrypto

# The machine's own fan-out floor, raw TCP with no server (bench/floor.c).
$(BIN)/floor: bench/floor.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $<

# The TLS library comparison (bench/tls_libs/, bench/README.md "TLS libraries"):
# one program per library around the shared driver tlsb.c, and the EVP AEAD
# costs of nudge's own record layer. Built by make bench-tls-libs only.
TLSB_BIN := $(BIN)/tls-openssl $(BIN)/tls-wolfssl $(BIN)/tls-gnutls $(BIN)/tls-evp
$(BIN)/tls-openssl: bench/tls_libs/tlsb.c bench/tls_libs/openssl.c bench/tls_libs/tlsb.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(filter %.c,$^) -lssl -lcrypto
$(BIN)/tls-wolfssl: bench/tls_libs/tlsb.c bench/tls_libs/wolfssl.c bench/tls_libs/tlsb.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(filter %.c,$^) -lwolfssl
$(BIN)/tls-gnutls: bench/tls_libs/tlsb.c bench/tls_libs/gnutls.c bench/tls_libs/tlsb.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(filter %.c,$^) -lgnutls
$(BIN)/tls-evp: bench/tls_libs/evp.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< -lcrypto

$(BUILD)/gen/status_html.c: src/admin/status.html
	@mkdir -p $(@D)
	xxd -i -n status_html $< | sed 's/^unsigned/const unsigned/' > $@.tmp
	mv $@.tmp $@

$(BUILD)/gen/status_html.o: $(BUILD)/gen/status_html.c
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

# llhttp is built from Debian's sources with its own flags: its generated code
# warns under -Wextra, and -Werror is for our code only.
$(BUILD)/llhttp/%.o: $(LLHTTP_SRC_DIR)/%.c
	@mkdir -p $(@D)
	$(CC) -I$(LLHTTP_INC_DIR) -O2 -g -w $(SANFLAGS) -c -o $@ $<

$(LLHTTP_LIB): $(LLHTTP_OBJ)
	$(AR) rcs $@ $^

# One rule per unit test, with its own object list (test_<name>_SRC above).
define unit_test_rule
$(BUILD)/tests/$(1): tests/unit/$(1).c $$(call obj,$$($(1)_SRC)) $(LLHTTP_LIB)
	@mkdir -p $$(@D)
	$$(CC) $$(CPPFLAGS) $$(WBXML_CFLAGS) $$(CFLAGS) $$(LDFLAGS) -o $$@ $$(filter %.c %.o %.a,$$^) $$(LIBS) $$(WBXML_LIBS) -lcmocka
endef
$(foreach t,$(notdir $(UNIT_TESTS)),$(eval $(call unit_test_rule,$(t))))

deps:
	@scripts/deps.sh build

deps-test:
	@scripts/deps.sh test

run: deps
	@$(MAKE) --no-print-directory all
	@scripts/run.sh

test: deps-test
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory check-layers test-unit test-e2e test-e2e-workers
	@$(MAKE) --no-print-directory test-package
	@$(MAKE) --no-print-directory SAN=1 test-san

# tests/e2e/test_browser.py drives Debian's Chromium with npm's playwright-core,
# pinned by tests/browser/package-lock.json and installed into tests/browser/node_modules;
# npm ci again whenever the lock changes (npm writes node_modules/.package-lock.json).
# playwright-core downloads no browser; the variable says so to any that would.
BROWSER_MODULES := tests/browser/node_modules/.package-lock.json
$(BROWSER_MODULES): tests/browser/package.json tests/browser/package-lock.json
	cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
	@touch $@

browser-deps: $(BROWSER_MODULES)

# End-to-end tests run PYTEST_JOBS at a time (pytest-xdist): they mostly wait
# on heartbeats and timers, so on 2 cores 3 at once take half the time.
PYTEST_JOBS ?= 3
PYTEST := $(PYTHON) -m pytest -q -n $(PYTEST_JOBS) tests/e2e tests/netlab

# The dependency rules of src/ (docs/architecture.md, "Layers"), and the check's own tests.
check-layers:
	$(PYTHON) scripts/check-layers.py
	$(PYTHON) -m pytest -q tests/tools

test-unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

# The suite with one process (workers = 1), then with three workers: every
# test must hold in both (tests/e2e/harness.py reads NUDGE_TEST_WORKERS).
test-e2e: all browser-deps
	NUDGE_TEST_WORKERS=1 NUDGED=$(abspath $(BIN)/nudged) NUDGE=$(abspath $(BIN)/nudge) $(PYTEST)

test-e2e-workers: all browser-deps
	NUDGE_TEST_WORKERS=3 NUDGED=$(abspath $(BIN)/nudged) NUDGE=$(abspath $(BIN)/nudge) $(PYTEST)

# The sanitizer pass: same unit and end-to-end tests against the ASan+UBSan build,
# again with one process and with three workers.
# ASAN_OPTIONS makes any report fatal; the e2e fixture fails a test whose
# nudged wrote a sanitizer report to its log.
test-san: all $(UNIT_BIN) browser-deps
	@set -e; for t in $(UNIT_BIN); do echo "== [san] $$t"; \
		ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 $$t; done
	@set -e; for w in 1 3; do echo "== [san] end-to-end, workers = $$w"; \
		ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		NUDGE_TEST_WORKERS=$$w NUDGED=$(abspath $(BIN)/nudged) NUDGE=$(abspath $(BIN)/nudge) NUDGE_SAN=1 \
		$(PYTEST); done

# make bench: nudge against nginx+nchan (bench/compare.py, bench/README.md) at
# N held connections; N=1000000 for the 1M point. BENCH_IDLE: the idle window.
N          ?= 10000,100000
BENCH_IDLE ?= 60
BENCH_ARGS ?=
bench: deps-bench
	@$(MAKE) --no-print-directory all $(BIN)/loadgen $(BIN)/floor
	@scripts/bench-limits.sh $(lastword $(subst $(comma), ,$(N)))
	ulimit -n $$(ulimit -Hn) && $(PYTHON) bench/compare.py --n $(N) --idle $(BENCH_IDLE) $(BENCH_ARGS)

# make bench-streams: held SSE streams (GET /v1/stream) and WebSockets (GET
# /v1/ws) beside held pings, and nchan's EventSource and WebSocket subscribers
# beside its long-poll, in one run (bench/README.md, "streams").
bench-streams: deps-bench
	@$(MAKE) --no-print-directory all $(BIN)/loadgen
	@scripts/bench-limits.sh $(lastword $(subst $(comma), ,$(N)))
	ulimit -n $$(ulimit -Hn) && $(PYTHON) bench/compare.py --n $(N) --idle $(BENCH_IDLE) \
		--servers nudge,nudge-sse,nudge-ws,nchan,nchan-sse,nchan-ws --out bench/streams.md \
		--chart bench/streams.png $(BENCH_ARGS)

# nudge alone: memory per held ping and publish throughput per store, UDP registrations.
bench-nudge: deps-test
	@$(MAKE) --no-print-directory all
	$(PYTHON) bench/held_memory.py
	$(PYTHON) bench/udp_fanout.py
	$(PYTHON) bench/activesync.py

# TLS: the libraries compared in-process (bench/tls_libs/run.py), and nudged's
# TLS listener beside nginx's, memory per held ping and handshakes (bench/tls.py).
bench-tls-libs: deps-bench
	@$(MAKE) --no-print-directory $(TLSB_BIN)
	$(PYTHON) bench/tls_libs/run.py --bin $(BIN)

bench-tls: deps-bench
	@$(MAKE) --no-print-directory all
	ulimit -n $$(ulimit -Hn) && $(PYTHON) bench/tls.py $(BENCH_ARGS)

deps-bench:
	@scripts/deps.sh bench

clean:
	rm -rf build build-san build-fuzz bin

-include $(shell find build build-san -name '*.d' 2>/dev/null)

# ---- install ---------------------------------------------------------------
# make install [PREFIX=/usr/local] [DESTDIR=...]: nudged into $(SBINDIR) (it is a
# daemon that admins start, FHS sbin), nudge into $(BINDIR), the systemd unit
# into $(UNITDIR) with its ExecStart pointed at $(SBINDIR)/nudged, and
# etc/nudged.conf as $(SYSCONFDIR)/nudge/nudged.conf with data_dir
# /var/lib/nudge, unless a config is already there (an admin's is never
# overwritten). The Debian package installs through this target with
# PREFIX=/usr UNITDIR=/lib/systemd/system (debian/rules).
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SBINDIR    ?= $(PREFIX)/sbin
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system
INSTALL    ?= install

.PHONY: install uninstall test-package
install: all
	$(INSTALL) -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(SYSCONFDIR)/nudge
	$(INSTALL) -m 755 $(BIN)/nudged $(DESTDIR)$(SBINDIR)/nudged
	$(INSTALL) -m 755 $(BIN)/nudge $(DESTDIR)$(BINDIR)/nudge
	sed 's|/usr/sbin/nudged|$(SBINDIR)/nudged|; s|/etc/nudge/|$(SYSCONFDIR)/nudge/|g' \
		contrib/systemd/nudged.service > $(BUILD)/nudged.service
	$(INSTALL) -m 644 $(BUILD)/nudged.service $(DESTDIR)$(UNITDIR)/nudged.service
	sed 's|^data_dir = ./var$$|data_dir = /var/lib/nudge|' etc/nudged.conf > $(BUILD)/nudged.conf
	grep -q '^data_dir = /var/lib/nudge$$' $(BUILD)/nudged.conf
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/nudge/nudged.conf ]; then \
		echo "install: keeping $(DESTDIR)$(SYSCONFDIR)/nudge/nudged.conf (the new default is $(BUILD)/nudged.conf)"; \
	else \
		echo "$(INSTALL) -m 644 $(BUILD)/nudged.conf $(DESTDIR)$(SYSCONFDIR)/nudge/nudged.conf"; \
		$(INSTALL) -m 644 $(BUILD)/nudged.conf $(DESTDIR)$(SYSCONFDIR)/nudge/nudged.conf; \
	fi

# Removes what install put there, except the config and /var/lib/nudge (an
# admin's data).
uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/nudged $(DESTDIR)$(BINDIR)/nudge $(DESTDIR)$(UNITDIR)/nudged.service

# The package as an admin gets it (tests/package/test_package.py): make install,
# systemd-analyze verify on the unit, the .deb built, installed, run as nudge,
# reloaded and purged in a debootstrap chroot, and scripts/deps.sh test + make all
# in a minimal Debian 12. Two at a time: the two chroots wait mostly on apt.
# The chroot is cached in /var/cache/nudge-test/.
test-package: all
	$(PYTHON) -m pytest -q -n 2 tests/package

# ---- fuzzing ---------------------------------------------------------------
# make fuzz: the libFuzzer targets (clang, -fsanitize=fuzzer,address) into
# build-fuzz/; make fuzz-smoke: a short run of each from its corpus. Not part
# of make test (the hardening issue runs them all).
FUZZ_CC    ?= clang
FUZZ_DIR   := build-fuzz
FUZZ_FLAGS := -std=c11 -g -O1 -Isrc -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
	-fno-sanitize-recover=all -Wall -Wextra -Werror
FUZZ_RUNS  ?= 20000
.PHONY: fuzz fuzz-smoke
fuzz:
	@scripts/deps.sh fuzz
	@$(MAKE) --no-print-directory $(FUZZ_DIR)/fuzz_as_ping $(FUZZ_DIR)/fuzz_browser_auth \
		$(FUZZ_DIR)/fuzz_state_id $(FUZZ_DIR)/fuzz_ws_msg

$(FUZZ_DIR)/fuzz_as_ping: fuzz/fuzz_as_ping.c $(AS_CODEC_SRC) src/common/xalloc.c src/common/util.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^

# The ticket and cookie parsers, with what they stand on (base64url and the HMAC of token.c).
$(FUZZ_DIR)/fuzz_browser_auth: fuzz/fuzz_browser_auth.c src/auth/ticket.c src/auth/token.c \
		src/http/cookie.c src/common/strmap.c src/common/util.c src/common/xalloc.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^ -lcrypto -lpthread

# A stream's event id (Last-Event-ID): reading garbage, and the write/read round trip.
$(FUZZ_DIR)/fuzz_state_id: fuzz/fuzz_state_id.c src/stream/state_id.c src/common/jsonw.c \
		src/common/util.c src/common/xalloc.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^

# A WebSocket client's bytes: frame ends against libwslay's, messages, handshake keys.
$(FUZZ_DIR)/fuzz_ws_msg: fuzz/fuzz_ws_msg.c src/stream/wsmsg.c src/push/check.c src/common/jsonw.c \
		src/common/util.c src/common/xalloc.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^ -ljansson -lwslay -lcrypto

fuzz-smoke: fuzz
	@mkdir -p $(FUZZ_DIR)/corpus/as_ping $(FUZZ_DIR)/corpus/browser_auth $(FUZZ_DIR)/corpus/state_id \
		$(FUZZ_DIR)/corpus/ws_msg
	$(FUZZ_DIR)/fuzz_as_ping -runs=$(FUZZ_RUNS) -max_len=4096 $(FUZZ_DIR)/corpus/as_ping fuzz/corpus/as_ping
	$(FUZZ_DIR)/fuzz_browser_auth -runs=$(FUZZ_RUNS) -max_len=2048 $(FUZZ_DIR)/corpus/browser_auth \
		fuzz/corpus/browser_auth
	$(FUZZ_DIR)/fuzz_state_id -runs=$(FUZZ_RUNS) -max_len=1024 $(FUZZ_DIR)/corpus/state_id \
		fuzz/corpus/state_id
	$(FUZZ_DIR)/fuzz_ws_msg -runs=$(FUZZ_RUNS) -max_len=1024 $(FUZZ_DIR)/corpus/ws_msg \
		fuzz/corpus/ws_msg
