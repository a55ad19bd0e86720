// browser.cjs drives Debian's Chromium with playwright-core through the hosted pages, as a
// user with a browser wallet would: it connects a wallet on /connect (Sign-In with Ethereum)
// signs a top-up on /topup and watches it go from pending to credited, then reads and
// disconnects the wallet on /wallet. The wallet is an injected EIP-1193 provider whose requests go
// to the Go test's signer (the key lives in Go; no crypto here). Launched by
// TestBrowserConnectAndTopUp, which passes everything through the environment and checks the
// outcome in the database; screenshots go to TG_SHOTS.
'use strict';

const path = require('path');
const { chromium } = require(process.env.TG_PLAYWRIGHT);

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error('missing ' + name);
  return v;
};

function report(step, detail) {
  process.stdout.write(JSON.stringify({ step, ...detail }) + '\n');
}

async function main() {
  const browser = await chromium.launch({
    executablePath: env('TG_CHROMIUM'),
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 900, height: 800 } });
    // The page's wallet calls come here, in Node, and go on to the Go signer; the page's CSP
    // (connect-src 'self') does not apply to this side.
    await context.exposeFunction('tgWalletRequest', async (method, params) => {
      const res = await fetch(env('TG_SIGNER'), {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ method, params }),
      });
      return res.json();
    });
    await context.addInitScript(() => {
      window.ethereum = {
        request: async ({ method, params }) => {
          const r = await window.tgWalletRequest(method, params || []);
          if (r.error) {
            const e = new Error(r.error.message);
            e.code = r.error.code;
            throw e;
          }
          return r.result;
        },
        on() {},
        removeListener() {},
      };
    });
    const page = await context.newPage();
    page.on('console', (m) => report('console', { type: m.type(), text: m.text() }));
    page.on('pageerror', (e) => report('pageerror', { text: String(e) }));
    const shot = (name) => page.screenshot({ path: path.join(env('TG_SHOTS'), name), fullPage: true });

    await page.goto(env('TG_CONNECT_URL'));
    await page.locator('#connect').waitFor({ state: 'visible', timeout: 20000 });
    await shot('1-connect.png');
    await page.click('#connect');
    await page.locator('#status[data-state="done"]').waitFor({ timeout: 30000 });
    await shot('2-connected.png');
    report('connect', { status: await page.textContent('#status') });

    await page.goto(env('TG_TOPUP_URL'));
    await page.locator('#form').waitFor({ state: 'visible', timeout: 20000 });
    await page.fill('#amount', env('TG_AMOUNT'));
    await shot('3-topup.png');
    await page.click('#pay');
    await page.locator('#topup[data-status="signed"]').waitFor({ timeout: 30000 });
    await shot('4-topup-pending.png');
    report('topup', { status: await page.textContent('#topup') });
    // The page polls every 3 s; the worker relays, the chain finalizes, the ledger credits.
    await page.locator('#topup[data-status="credited"]').waitFor({ timeout: 120000 });
    await shot('5-topup-credited.png');
    report('credited', { status: await page.textContent('#topup'), balance: await page.textContent('#balance') });

    await page.goto(env('TG_WALLET_URL'));
    await page.locator('#history').waitFor({ state: 'visible', timeout: 20000 });
    await shot('6-wallet.png');
    report('wallet', { status: await page.textContent('#balance'), history: await page.textContent('#items') });
    page.once('dialog', (d) => d.accept());
    await page.click('#disconnect-button');
    await page.locator('#status[data-state="done"]').waitFor({ timeout: 20000 });
    await shot('7-disconnected.png');
    report('disconnect', { status: await page.textContent('#status') });
  } catch (e) {
    for (const p of browser.contexts().flatMap((c) => c.pages())) {
      await p.screenshot({ path: path.join(env('TG_SHOTS'), 'failure.png'), fullPage: true }).catch(() => {});
      report('failure', { url: p.url(), status: await p.textContent('#status').catch(() => '') });
    }
    throw e;
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  process.stderr.write(String((e && e.stack) || e) + '\n');
  process.exit(1);
});
