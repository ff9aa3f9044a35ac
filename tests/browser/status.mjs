// status.mjs — nudged's own status page (GET /status) in Debian's Chromium,
// driven as an admin would use it, for tests/e2e/test_browser.py:
//
//   node status.mjs <nudged url> <admin token> <user> <screenshot path>
//
// It enters the admin token, waits for the live numbers, the per-worker
// table and the heartbeat chart, watches <user>'s INBOX, sends a test
// notification and waits for its arrival in the watch list, then takes a
// screenshot. Each step is one JSON line {"step": ...} on stdout with what
// the DOM shows (the test asserts on it); the page's console goes out as
// {"driver":"console"} (a CSP violation would show there), failures as
// {"driver":"error"}. Ends when done, on SIGTERM or when stdin closes.
import { emit, finish, runBrowser } from "./launch.mjs";

const [base, token, user, shot] = process.argv.slice(2);
const WAIT_MS = Number(process.env.NUDGE_BROWSER_WAIT_MS || 60000);

/* The text of each row of a table body, as arrays of cell texts keyed by a data attribute. */
function rows(page, sel, key) {
    return page.$$eval(sel, (trs, key) => trs.map((tr) => ({
        key: tr.dataset[key], cells: Array.from(tr.cells).map((td) => td.textContent) })), key);
}

await runBrowser(async (browser) => {
    const page = await browser.newPage({ viewport: { width: 1200, height: 1400 } });
    page.setDefaultTimeout(WAIT_MS);
    page.on("console", (m) => emit({ driver: "console", type: m.type(), text: m.text() }));
    page.on("pageerror", (e) => emit({ driver: "console", type: "pageerror", text: String(e) }));
    const resp = await page.goto(base + "/status", { timeout: 120000 });
    emit({ step: "loaded", status: resp.status(), csp: resp.headers()["content-security-policy"] });
    await page.fill("#token", token);
    await page.click("#token-save");
    await page.waitForSelector("#totals tr[data-key=pings_held]");
    await page.waitForSelector("#workers tr[data-worker]");
    await page.waitForSelector("#hist .bar");
    emit({ step: "numbers",
           totals: await rows(page, "#totals tbody tr", "key"),
           workers: await rows(page, "#workers tbody tr", "worker"),
           bars: await page.$$eval("#hist .bar", (bs) => bs.map((b) => ({
               le: b.dataset.le, count: Number(b.dataset.count), height: b.style.height }))),
           version: await page.textContent("#version") });
    await page.fill("#watch-user", user);
    await page.fill("#watch-folder", "INBOX");
    await page.click("#watch-go");
    await page.waitForFunction(() => document.getElementById("watch-state").textContent.startsWith("open"));
    emit({ step: "watching", state: await page.textContent("#watch-state") });
    await page.click("#watch-send");
    await page.waitForSelector("#watch-events li[data-type=state]");
    await page.waitForFunction(() => document.getElementById("send-state").textContent.startsWith("sent"));
    emit({ step: "arrived",
           events: await page.$$eval("#watch-events li", (ls) => ls.map((l) => ({
               type: l.dataset.type, text: l.textContent }))),
           sent: await page.textContent("#send-state") });
    await page.screenshot({ path: shot, fullPage: true });
    emit({ step: "done", screenshot: shot });
    await finish(0);
}, "status", 300000);
