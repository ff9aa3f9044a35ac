-- nudge.lua — Dovecot 2.3 push_notification Lua driver that tells nudge about
-- every mailbox change, in one POST /v1/events per transaction.
--
-- Setup, settings and what each event becomes: docs/dovecot.md. In short:
--
--   mail_plugins = $mail_plugins notify push_notification mail_lua push_notification_lua
--   plugin {
--     push_notification_driver = lua:file=/usr/share/nudge/nudge.lua
--     nudge_url   = http://127.0.0.1:8080     # nudged's base URL (plain HTTP)
--     nudge_token = v1.publisher....          # `nudge token --publisher -c nudged.conf`
--   }
--
-- Design:
--  * Dovecot calls dovecot_lua_notify_begin_txn(user) when a mail or mailbox
--    transaction starts, one dovecot_lua_notify_event_<name>(ctx, event) per
--    RFC 5423 event in it, and dovecot_lua_notify_end_txn(ctx, success) when
--    it ends. The events are collected in ctx and sent when the transaction
--    committed (success == true); a rolled back transaction sends nothing.
--  * Events are coalesced per (folder, type): a STORE or EXPUNGE of 10,000
--    messages becomes one event with "count": 10000, not 10,000 bumps in a
--    body larger than nudged accepts. A folder's state only has to move for
--    its devices to hear of the change. New messages keep their own event
--    (uid, from, subject, snippet) up to MAX_DETAILED_NEW per transaction.
--    Coalesced events are ordered by their last occurrence, so "new, read,
--    new" ends with a "new" and "read, new, read" with a "read": the last
--    word on a folder is what the user did last.
--  * Blocking: the script runs inside the Dovecot process that made the
--    change (lmtp while it holds the reply to the delivery, imap while it
--    holds the command's answer). One HTTP request per transaction, with one
--    deadline (nudge_timeout_msecs, default 2000) over connect, send and
--    receive. On any failure the error is logged through Dovecot's log and
--    the transaction is left as it was: the delivery or command succeeds.
--  * Missed changes: when nudge cannot be told, the (folder, type) pairs are
--    appended to <home>/.nudge-missed (at most MISSED_MAX_BYTES) and sent
--    along with the user's next transaction, so a device learns of mail that
--    arrived while nudge was down with the user's next change in any folder.
--    Set nudge_remember_missed = no to turn it off.
--  * HTTP is spoken over a plain lua-socket TCP socket (Debian: lua-socket),
--    JSON written with dkjson (Debian: lua-dkjson). No TLS: run nudged on the
--    same host or a trusted network, or put a local TLS proxy in between.
--
-- Cost: per transaction one rename() that fails when nothing was missed, and
-- for a transaction with events one short HTTP/1.1 request (Connection:
-- close) of a few hundred bytes.

local socket = require "socket"
local json = require "dkjson"

-- Most new-message events per transaction that keep their own metadata;
-- more are folded into one "new" event with a count. 16 events of at most
-- ~1.5 KiB each stay far below nudged's default 64 KiB body limit.
local MAX_DETAILED_NEW = 16
-- Metadata strings are cut to this many bytes (at a UTF-8 boundary): enough
-- for a notification line, small enough to bound the request.
local MAX_META_BYTES = 256
-- nudged's own limits for user ids and folder names (docs/api.md).
local MAX_NAME_BYTES = 255
-- The missed-changes file stops growing here: about 2,000 entries, each one a
-- folder and a type. Past it changes are still not lost for devices that
-- resync, but are no longer remembered for the next transaction.
local MISSED_MAX_BYTES = 65536
-- Most bytes of an answer read back (only logged when it is an error).
local MAX_ANSWER_BYTES = 4096
local DEFAULT_TIMEOUT_MSECS = 2000

local USER_AGENT = "nudge.lua/1"

local function log_error(msg)
    dovecot.i_error("nudge: " .. msg)
end

local function log_warning(msg)
    dovecot.i_warning("nudge: " .. msg)
end

-- ---------------------------------------------------------------------------
-- Strings

-- s as valid UTF-8 without control characters, cut to at most max bytes at a
-- character boundary; nil when nothing is left. Header values may hold raw
-- 8-bit bytes, and nudged (jansson) refuses a body with invalid UTF-8 or
-- NUL bytes: one bad subject must not cost the whole batch.
local function clean_text(s, max)
    if type(s) ~= "string" or s == "" then
        return nil
    end
    local parts, i, n = {}, 1, #s
    while i <= n do
        local count, bad = utf8.len(s, i)
        if count then
            parts[#parts + 1] = s:sub(i)
            break
        end
        parts[#parts + 1] = s:sub(i, bad - 1)
        parts[#parts + 1] = "\u{FFFD}"
        i = bad + 1
    end
    s = table.concat(parts):gsub("%c", " ")
    if #s > max then
        local cut = max
        -- Back off over continuation bytes (10xxxxxx) so no character is split.
        while cut > 0 and (s:byte(cut + 1) or 0) & 0xC0 == 0x80 do
            cut = cut - 1
        end
        s = s:sub(1, cut)
    end
    if s == "" then
        return nil
    end
    return s
end

-- True when name is acceptable to nudged as a user id or folder name:
-- 1..255 bytes, valid UTF-8, no control characters.
local function valid_name(name)
    return type(name) == "string" and #name >= 1 and #name <= MAX_NAME_BYTES
        and utf8.len(name) ~= nil and not name:find("%c")
end

local function setting(user, key)
    local v = user:plugin_getenv(key)
    if v == nil or v == "" then
        return nil
    end
    return v
end

-- ---------------------------------------------------------------------------
-- HTTP: one POST with one deadline over every step.

-- host, port, path prefix of an http:// URL; nil and a reason otherwise.
local function parse_url(url)
    if url:match("^https://") then
        return nil, "https is not supported (lua-socket has no TLS): use http:// to a local or trusted nudged"
    end
    local rest = url:match("^http://(.+)$")
    if not rest then
        return nil, "must start with http://"
    end
    local hostport, path = rest:match("^([^/]+)(.*)$")
    if not hostport then
        return nil, "has no host"
    end
    local host, port = hostport:match("^%[(.+)%]:?(%d*)$")
    if not host then
        host, port = hostport:match("^([^:]+):?(%d*)$")
    end
    if not host then
        return nil, "has a bad host or port"
    end
    port = tonumber(port) or 80
    path = path:gsub("/+$", "")
    return {host = host, port = port, path = path, hostport = hostport}
end

-- POSTs body to url's path .. suffix. Returns the status code and the answer
-- body, or nil and a reason when no answer came within timeout seconds.
local function http_post(url, suffix, token, body, timeout)
    local deadline = socket.gettime() + timeout
    local sock, err = socket.tcp()
    if not sock then
        return nil, "socket: " .. tostring(err)
    end
    -- Every call gets what is left of the one deadline: lua-socket's own
    -- timeouts restart with each call, so connect + send + each header line
    -- could otherwise add up to many times the setting.
    local function arm()
        local left = deadline - socket.gettime()
        if left <= 0 then
            return false
        end
        sock:settimeout(left, "t")
        return true
    end
    local function fail(what, e)
        sock:close()
        if e == "timeout" then
            return nil, what .. ": no answer within " .. math.floor(timeout * 1000 + 0.5) .. " ms"
        end
        return nil, what .. ": " .. tostring(e)
    end

    if not arm() then return fail("connect", "timeout") end
    local ok
    ok, err = sock:connect(url.host, url.port)
    if not ok then return fail("connect to " .. url.hostport, err) end

    local request = table.concat({
        "POST ", url.path, suffix, " HTTP/1.1\r\n",
        "Host: ", url.hostport, "\r\n",
        "User-Agent: ", USER_AGENT, "\r\n",
        "Authorization: Bearer ", token, "\r\n",
        "Content-Type: application/json\r\n",
        "Content-Length: ", tostring(#body), "\r\n",
        "Connection: close\r\n",
        "\r\n", body,
    })
    if not arm() then return fail("send", "timeout") end
    ok, err = sock:send(request)
    if not ok then return fail("send", err) end

    if not arm() then return fail("receive", "timeout") end
    local line
    line, err = sock:receive("*l")
    if not line then return fail("receive", err) end
    local status = tonumber(line:match("^HTTP/1%.%d (%d%d%d)"))
    if not status then
        sock:close()
        return nil, "not an HTTP answer: " .. (clean_text(line, 80) or "")
    end
    local length
    while true do
        if not arm() then return fail("receive", "timeout") end
        line, err = sock:receive("*l")
        if not line then return fail("receive", err) end
        if line == "" then break end
        local v = line:lower():match("^content%-length:%s*(%d+)")
        if v then length = tonumber(v) end
    end
    local answer = ""
    if length and length > 0 then
        if not arm() then return fail("receive", "timeout") end
        local part
        answer, err, part = sock:receive(math.min(length, MAX_ANSWER_BYTES))
        answer = answer or part or ""
    end
    sock:close()
    return status, answer
end

-- ---------------------------------------------------------------------------
-- Missed changes, remembered in the user's home.

local function missed_path(user)
    local home = user.home
    if type(home) ~= "string" or home == "" then
        return nil
    end
    local flag = setting(user, "nudge_remember_missed")
    if flag and (flag == "no" or flag == "false" or flag == "0") then
        return nil
    end
    return home .. "/.nudge-missed"
end

-- Appends "type\tfolder" lines for events to the missed file.
local function remember_missed(path, events)
    local f = io.open(path, "a")
    if not f then
        log_warning("cannot remember the missed changes in " .. path)
        return
    end
    local size = f:seek("end") or 0
    local lines = {}
    for _, ev in ipairs(events) do
        lines[#lines + 1] = ev.type .. "\t" .. ev.folder .. "\n"
    end
    local text = table.concat(lines)
    if size + #text > MISSED_MAX_BYTES then
        log_warning(path .. " is full (" .. MISSED_MAX_BYTES .. " bytes): these changes are not remembered")
    else
        f:write(text)
    end
    f:close()
end

-- Takes the missed file for this transaction (renamed first, so that two
-- processes of one user never both send it, and a failure appended meanwhile
-- is not lost). Returns the claimed path and its (type, folder) pairs.
local function claim_missed(path)
    local claimed = path .. ".sending." .. os.time() .. "." .. tostring({}):match("0x(%x+)")
    if not os.rename(path, claimed) then
        return nil, {}
    end
    local pairs_ = {}
    local f = io.open(claimed, "r")
    if f then
        local text = f:read(MISSED_MAX_BYTES) or ""
        f:close()
        for t, folder in text:gmatch("([^\t\n]+)\t([^\n]+)\n") do
            pairs_[#pairs_ + 1] = {type = t, folder = folder}
        end
    end
    return claimed, pairs_
end

-- ---------------------------------------------------------------------------
-- Collecting the events of one transaction.

local function add(ctx, key, ev)
    ctx.seq = ctx.seq + 1
    local have = ctx.by_key[key]
    if have then
        have.count = have.count + 1
        have.last = ctx.seq
        return
    end
    ev.count = 1
    ev.last = ctx.seq
    ctx.by_key[key] = ev
end

local function add_change(ctx, folder, kind)
    if not valid_name(folder) then
        log_warning("folder name " .. string.format("%q", tostring(folder)) ..
                    " is not accepted by nudge (1..255 bytes, no control characters): event " .. kind .. " dropped")
        return
    end
    add(ctx, kind .. "\t" .. folder, {folder = folder, type = kind})
end

local function add_new(ctx, event)
    local folder = event.mailbox
    if not valid_name(folder) then
        return add_change(ctx, folder, "new")
    end
    if ctx.detailed >= MAX_DETAILED_NEW then
        return add_change(ctx, folder, "new")
    end
    ctx.detailed = ctx.detailed + 1
    -- The key is unique: a detailed event is never merged with another.
    add(ctx, "new\t" .. folder .. "\t" .. ctx.seq, {
        folder = folder,
        type = "new",
        uid = math.tointeger(event.uid),
        uidvalidity = math.tointeger(event.uid_validity),
        -- "from" is the raw header (possibly RFC 2047 encoded), as the OX
        -- driver sends it; "subject" and "from_name" are decoded to UTF-8
        -- by Dovecot.
        from = clean_text(event.from, MAX_META_BYTES),
        from_address = clean_text(event.from_address, MAX_META_BYTES),
        from_name = clean_text(event.from_display_name, MAX_META_BYTES),
        subject = clean_text(event.subject, MAX_META_BYTES),
        snippet = clean_text(event.snippet, MAX_META_BYTES),
        detailed = true,
    })
end

-- Flags that count as a change of the message's flags. \Recent is Dovecot's
-- session flag, never a user's change (a STORE raises a FlagsClear of
-- nothing but \Recent in flags_old). \Seen and \Deleted set are left out of
-- FlagsSet: Dovecot raises MessageRead and MessageTrash for them, which say
-- more ("the user read it", "the user removed it").
local function has_flags(event, ignore)
    for _, f in ipairs(event.flags or {}) do
        if not ignore[f] then
            return true
        end
    end
    return #(event.keywords or {}) > 0
end

local IGNORED_SET = {["\\Recent"] = true, ["\\Seen"] = true, ["\\Deleted"] = true}
local IGNORED_CLEAR = {["\\Recent"] = true}

-- ---------------------------------------------------------------------------
-- The driver's entry points.

function dovecot_lua_notify_begin_txn(user)
    return {
        user = user,
        seq = 0,
        detailed = 0,
        by_key = {},
    }
end

function dovecot_lua_notify_event_message_new(ctx, event)
    add_new(ctx, event)
end

function dovecot_lua_notify_event_message_append(ctx, event)
    add_new(ctx, event)
end

function dovecot_lua_notify_event_message_read(ctx, event)
    add_change(ctx, event.mailbox, "read")
end

function dovecot_lua_notify_event_message_trash(ctx, event)
    add_change(ctx, event.mailbox, "trash")
end

function dovecot_lua_notify_event_message_expunge(ctx, event)
    add_change(ctx, event.mailbox, "expunge")
end

function dovecot_lua_notify_event_flags_set(ctx, event)
    if has_flags(event, IGNORED_SET) then
        add_change(ctx, event.mailbox, "flags")
    end
end

function dovecot_lua_notify_event_flags_clear(ctx, event)
    if has_flags(event, IGNORED_CLEAR) then
        add_change(ctx, event.mailbox, "flags")
    end
end

-- Mailbox events bump the mailbox they name: a device that pings a folder
-- hears that it was created, deleted, subscribed or unsubscribed. A rename
-- bumps the old name (its devices learn it is gone) and then the new one.
function dovecot_lua_notify_event_mailbox_create(ctx, event)
    add_change(ctx, event.mailbox, "mailbox-create")
end

function dovecot_lua_notify_event_mailbox_delete(ctx, event)
    add_change(ctx, event.mailbox, "mailbox-delete")
end

function dovecot_lua_notify_event_mailbox_rename(ctx, event)
    if event.mailbox_old then
        add_change(ctx, event.mailbox_old, "mailbox-rename")
    end
    add_change(ctx, event.mailbox, "mailbox-rename")
end

function dovecot_lua_notify_event_mailbox_subscribe(ctx, event)
    add_change(ctx, event.mailbox, "mailbox-subscribe")
end

function dovecot_lua_notify_event_mailbox_unsubscribe(ctx, event)
    add_change(ctx, event.mailbox, "mailbox-unsubscribe")
end

-- The collected events in the order of their last occurrence.
local function ordered(ctx)
    local list = {}
    for _, ev in pairs(ctx.by_key) do
        list[#list + 1] = ev
    end
    table.sort(list, function(a, b) return a.last < b.last end)
    return list
end

function dovecot_lua_notify_end_txn(ctx, success)
    if not success then
        return
    end
    local user = ctx.user
    local events = ordered(ctx)

    local mpath = missed_path(user)
    local claimed, missed = nil, {}
    if mpath then
        claimed, missed = claim_missed(mpath)
        if claimed and #missed == 0 then
            os.remove(claimed)
            claimed = nil
        end
    end
    if #events == 0 and #missed == 0 then
        return
    end

    -- A setting missing or wrong: nothing can be sent, and what was missed
    -- before goes back into the file for when it is fixed.
    local function give_up(msg)
        log_error(msg .. "; nothing sent")
        if claimed then
            remember_missed(mpath, missed)
            os.remove(claimed)
        end
    end
    local url_text = setting(user, "nudge_url")
    local token = setting(user, "nudge_token")
    if not url_text or not token then
        return give_up("nudge_url and nudge_token must be set in the plugin { } settings")
    end
    local url, why = parse_url(url_text)
    if not url then
        return give_up("nudge_url " .. url_text .. " " .. why)
    end
    local timeout = tonumber(setting(user, "nudge_timeout_msecs") or "") or DEFAULT_TIMEOUT_MSECS
    local nuser = setting(user, "nudge_user") or user.username
    if not valid_name(nuser) then
        return give_up("user " .. string.format("%q", tostring(nuser)) .. " is not accepted by nudge")
    end

    -- Missed changes first (coalesced, without metadata), then this
    -- transaction's. Every entry sent is also what would be remembered.
    local batch, sent = {}, {}
    local seen = {}
    for _, m in ipairs(missed) do
        local key = m.type .. "\t" .. m.folder
        if not seen[key] and valid_name(m.folder) then
            seen[key] = true
            batch[#batch + 1] = {user = nuser, folder = m.folder, type = m.type, missed = true}
            sent[#sent + 1] = m
        end
    end
    for _, ev in ipairs(events) do
        local out = {user = nuser, folder = ev.folder, type = ev.type}
        if ev.count > 1 then
            out.count = ev.count
        end
        if ev.detailed then
            for _, k in ipairs({"uid", "uidvalidity", "from", "from_address", "from_name", "subject", "snippet"}) do
                out[k] = ev[k]
            end
        end
        batch[#batch + 1] = out
        sent[#sent + 1] = ev
    end

    local body = json.encode(batch)
    local status, answer = http_post(url, "/v1/events", token, body, timeout / 1000)
    if status == 200 then
        if claimed then os.remove(claimed) end
        return
    end

    local what
    if status then
        local detail = ""
        local ok, parsed = pcall(json.decode, answer or "")
        if ok and type(parsed) == "table" then
            detail = (parsed.status or "") .. (parsed.error and (": " .. tostring(parsed.error)) or "")
        else
            detail = clean_text(answer, 200) or ""
        end
        what = "answered " .. status .. " " .. detail
    else
        what = answer
    end
    log_error("publishing " .. #batch .. " event(s) for " .. nuser .. " to " .. url_text ..
              " failed: " .. what)
    -- A 400 would only be refused again; anything else (nudge down, slow,
    -- misconfigured credentials) is remembered for the next transaction.
    if mpath and status ~= 400 then
        remember_missed(mpath, sent)
    end
    if claimed then os.remove(claimed) end
end
