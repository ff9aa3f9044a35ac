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
