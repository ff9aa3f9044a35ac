// client.js — what a web mail client does with nudge, in a real browser:
// a ticket or the login cookie, an EventSource on GET /v1/stream, a
// WebSocket on GET /v1/ws. Run by index.html; driven by tests/e2e/test_browser.py
// through tests/browser/drive.mjs.
//
// The scenario and its inputs come in the fragment, as URL-encoded JSON:
//   {"scenario": "ticket"|"resume"|"noauth"|"ws"|"wsresume", "api": "http://127.0.0.1:PORT",
//    "token": "<user token>", "user": "...", "password": "...", "device": "..."}
// (a fragment never goes to the server, so the page's own server never sees
// the token). Each step is reported with window.report({step, ...}) (tell() below), which
// drive.mjs prints as a JSON line for pytest; the page never decides pass or
// fail, pytest does.
"use strict";

const P = JSON.parse(decodeURIComponent(location.hash.slice(1)));

// window.report is drive.mjs's binding; a global function of that name
// here would replace it.
function tell(obj) {
    window.report(obj);
}

function fail(where, e) {
    tell({ step: "exception", where, message: String(e && e.stack || e) });
}

// POST /v1/ticket with the user's bearer token: a CORS request with a
// preflight (Authorization and a JSON body are not "simple").
async function getTicket(device) {
    const r = await fetch(P.api + "/v1/ticket", {
        method: "POST",
        headers: { "Authorization": "Bearer " + P.token, "Content-Type": "application/json" },
        body: JSON.stringify({ device }),
    });
    const doc = await r.json();
    tell({ step: "ticket", status: r.status, device: doc.device });
    return doc.ticket;
}

// Every event of an EventSource, reported; 'name' tells two apart.
function watch(es, name) {
    es.addEventListener("open", () => tell({ step: "open", name, readyState: es.readyState }));
    es.addEventListener("state", (e) => tell({
        step: "state", name, data: JSON.parse(e.data), id: e.lastEventId }));
    es.addEventListener("error", () => tell({ step: "error", name, readyState: es.readyState }));
}

const scenarios = {
    // A ticket from the bearer token, then a stream on it.
    async ticket() {
        const t = await getTicket(P.device);
        const es = new EventSource(P.api + "/v1/stream?types=INBOX&ticket=" + encodeURIComponent(t));
        watch(es, "ticket");
    },

    // The login cookie (a ticket is single-use: the EventSource reconnects
    // with the URL it was made with, so its reconnects need the cookie).
    async resume() {
        const r = await fetch(P.api + "/v1/login", {
            method: "POST",
            credentials: "include",
            headers: { "Authorization": "Basic " + btoa(P.user + ":" + P.password) },
        });
        tell({ step: "login", status: r.status });
        const es = new EventSource(P.api + "/v1/stream?types=INBOX,Sent&device=" +
                                   encodeURIComponent(P.device), { withCredentials: true });
        watch(es, "cookie");
    },

    // No credential; then a ticket used twice. Each 401 must end its
    // EventSource for good (readyState CLOSED), not make it retry.
    async noauth() {
        const url = P.api + "/v1/stream?types=INBOX";
        const r = await fetch(url);
        tell({ step: "fetch", status: r.status });
        watch(new EventSource(url), "none");
        const t = await getTicket(P.device);
        const first = new EventSource(url + "&ticket=" + encodeURIComponent(t));
        watch(first, "first");
        first.addEventListener("open", () => {
            watch(new EventSource(url + "&ticket=" + encodeURIComponent(t)), "second");
        }, { once: true });
    },

    // The login cookie on a WebSocket (the browser sends it by itself; no
    // CORS, so nudged's Origin check is what keeps other sites out), and a
    // client's own reconnect: on a close it opens again, 0.5 s later, and
    // enables with the last pushState it received, as RFC 8887 asks.
    async wsresume() {
        const r = await fetch(P.api + "/v1/login", {
            method: "POST",
            credentials: "include",
            headers: { "Authorization": "Basic " + btoa(P.user + ":" + P.password) },
        });
        tell({ step: "login", status: r.status });
        let pushState = P.pushState || null;
        let opens = 0;
        const connect = () => {
            const ws = new WebSocket(P.api.replace(/^http/, "ws") + "/v1/ws?device=" +
                                     encodeURIComponent(P.device), "jmap");
            ws.addEventListener("open", () => {
                opens++;
                tell({ step: "open", protocol: ws.protocol, opens });
                const enable = { "@type": "WebSocketPushEnable", dataTypes: ["INBOX"] };
                if (pushState)
                    enable.pushState = pushState;
                ws.send(JSON.stringify(enable));
                tell({ step: "enabled", pushState });
            });
            ws.addEventListener("message", (e) => {
                const data = JSON.parse(e.data);
                if (data.pushState)
                    pushState = data.pushState;
                tell({ step: "message", data, opens });
            });
            ws.addEventListener("close", (e) => {
                tell({ step: "close", code: e.code, opens });
                setTimeout(connect, 500);
            });
        };
        connect();
    },

    // RFC 8887: JMAP over WebSocket, push only.
    async ws() {
        const t = await getTicket(P.device);
        const ws = new WebSocket(P.api.replace(/^http/, "ws") + "/v1/ws?ticket=" +
                                 encodeURIComponent(t), "jmap");
        ws.addEventListener("open", () => {
            tell({ step: "open", protocol: ws.protocol });
            const enable = { "@type": "WebSocketPushEnable", dataTypes: ["INBOX"] };
            if (P.pushState)
                enable.pushState = P.pushState;
            ws.send(JSON.stringify(enable));
            tell({ step: "enabled" });
        });
        ws.addEventListener("message", (e) => {
            let data;
            try {
                data = JSON.parse(e.data);
            } catch (err) {
                data = { unparsed: String(e.data) };
            }
            tell({ step: "message", data });
        });
        ws.addEventListener("error", () => tell({ step: "error", readyState: ws.readyState }));
        ws.addEventListener("close", (e) => tell({ step: "close", code: e.code }));
    },
};

scenarios[P.scenario]().catch((e) => fail(P.scenario, e));
