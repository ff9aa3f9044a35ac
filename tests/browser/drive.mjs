// drive.mjs — opens one page in Debian's Chromium and relays what the page
// reports, for tests/e2e/test_browser.py.
//
//   node drive.mjs <page url>
//
// Design: the page (www/client.js) runs the scenario named in its URL and
// calls window.report({...}) at each step; every report is written to stdout
// as one JSON line, so pytest reads the page's progress as it happens and acts
// in between (publishes, restarts nudged). Lines this script writes itself
// have "driver" set: {"driver":"started","version":...} once Chromium runs,
// {"driver":"console",...} for the page's
// console and errors, {"driver":"error",...} when something fails here.
//
// The browser is Debian's /usr/bin/chromium, never one playwright downloads.
// launch() gives every run a fresh profile in a temporary directory (under
// $TMPDIR, which the test points at a directory of its own), so runs in parallel
// share nothing. The script ends when its stdin closes (pytest is done, or
// died) or at its own deadline, and always closes the browser.
import { emit, runBrowser } from "./launch.mjs";

const url = process.argv[2];
// Longer than any test waits: a safety net against an orphaned browser, never
// a timing the tests rely on.
const deadlineMs = Number(process.env.NUDGE_BROWSER_DEADLINE_MS || 300000);

await runBrowser(async (browser) => {
    const page = await browser.newPage();
    await page.exposeFunction("report", (obj) => emit(obj));
    page.on("console", (m) => emit({ driver: "console", type: m.type(), text: m.text() }));
    page.on("pageerror", (e) => emit({ driver: "console", type: "pageerror", text: String(e) }));
    await page.goto(url, { timeout: 120000 });
}, "launch", deadlineMs);
