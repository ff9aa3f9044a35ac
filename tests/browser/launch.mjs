// launch.mjs — starts Debian's Chromium for the browser tests (drive.mjs,
// status.mjs): never a browser playwright downloads, a fresh profile per run
// (in $TMPDIR), and switches that keep it off the network and working as
// root in a container.
import { chromium } from "playwright-core";

export function launchChromium() {
    return chromium.launch({
        executablePath: process.env.NUDGE_CHROMIUM || "/usr/bin/chromium",
        headless: true,
        // Later switches win, so --headless=new overrides playwright's own --headless.
        // The rest keep Chromium off the network (no QUIC, no background fetches, no
        // component updates, no sync) and working as root in a container (no
        // sandbox, no GPU).
        args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync",
               // /dev/shm of a container can be 64 MiB: renderers crash on it.
               "--disable-dev-shm-usage"],
        // Under load a start can take long; the test's own waits bound the whole.
        timeout: 120000,
        // The scripts close the browser themselves on SIGTERM and on stdin's end.
        handleSIGTERM: false,
        handleSIGINT: false,
        handleSIGHUP: false,
    });
}

/* One JSON line on stdout: how the scripts report to pytest. */
export function emit(obj) {
    process.stdout.write(JSON.stringify(obj) + "\n");
}

let browser = null;
let closing = false;

/* Closes the browser (when one was started) and exits with 'code'; once. */
export async function finish(code) {
    if (closing)
        return;
    closing = true;
    try {
        if (browser)
            await browser.close();
    } catch (e) {
        emit({ driver: "error", where: "close", message: String(e) });
    }
    process.exit(code);
}

/*
 * Starts Chromium and runs main(browser). The script ends when stdin closes
 * (pytest is done, or died), on SIGTERM, or after deadlineMs, and always
 * closes the browser; a failure is reported as {"driver":"error"}.
 */
export async function runBrowser(main, where, deadlineMs) {
    process.stdin.on("end", () => finish(0));
    process.stdin.on("error", () => finish(0));
    process.stdin.resume();
    process.on("SIGTERM", () => finish(0));
    setTimeout(() => {
        emit({ driver: "error", where: "deadline", message: `no end within ${deadlineMs} ms` });
        finish(1);
    }, deadlineMs).unref();
    try {
        browser = await launchChromium();
        emit({ driver: "started", version: browser.version() });
        await main(browser);
    } catch (e) {
        emit({ driver: "error", where, message: String(e && e.stack || e) });
        await finish(1);
    }
}
