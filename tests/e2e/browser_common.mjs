// What the browser scripts (browser.mjs, login_browser.mjs) share: Chromium's launch, the
// loose text comparison, waiting for texts on the page, the viewer's onboarding tour, and
// the statistics of a screenshot.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

// Compare texts loosely: NFC, upper case, runs of anything but letters and digits become one
// space (so "DOE^JANE" matches the displayed "DOE, JANE"). test_ohif.py normalizes the same way.
export const normalize = s =>
  ` ${String(s).normalize('NFC').toUpperCase().replace(/[^\p{L}\p{N}]+/gu, ' ').trim()} `;

// Headless Chromium on a fresh profile under outDir, its first page with timeoutMs as the
// default timeout, and the page's console errors/warnings and uncaught errors collected into
// result.console and result.pageErrors. close() also removes the profile.
export async function launch(spec, outDir, timeoutMs, result) {
  const userDataDir = fs.mkdtempSync(path.join(outDir, 'profile-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: spec.chromium || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--enable-unsafe-swiftshader',
    ],
    viewport: { width: 1400, height: 900 },
    timeout: 60000,
  }).catch(e => {
    fs.rmSync(userDataDir, { recursive: true, force: true });
    throw e;
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(timeoutMs);
  page.on('console', msg => {
    if (['error', 'warning'].includes(msg.type()) && result.console.length < 200) {
      result.console.push({ type: msg.type(), text: msg.text().slice(0, 500) });
    }
  });
  page.on('pageerror', err => result.pageErrors.push(String(err).slice(0, 1000)));
  const close = async () => {
    await context.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  };
  return { context, page, close };
}

// Poll the page's text until every one of texts is (present=true) or is not (present=false)
// on it, or timeoutMs passes. found: for each text, whether it was on the page last time.
export async function waitForTexts(page, texts, present, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let body = '';
  const found = {};
  while (Date.now() < deadline) {
    body = await page.evaluate(() => document.body.innerText).catch(() => '');
    const norm = normalize(body);
    for (const t of texts) found[t] = norm.includes(normalize(t));
    if (texts.every(t => found[t] === present)) return { ok: true, body, found };
    await page.waitForTimeout(250);
  }
  return { ok: false, body, found };
}

// The first visit of a viewer mode starts an onboarding tour that covers the viewport.
export async function skipTour(page) {
  const skip = page.getByText('Skip all', { exact: true }).first();
  if (!(await skip.isVisible().catch(() => false))) return false;
  await skip.click({ timeout: 5000 }).catch(() => {});
  return true;
}

// Statistics of a PNG screenshot, computed by the browser's own decoder.
export async function pngStats(page, buf) {
  return page.evaluate(async b64 => {
    const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
    const bmp = await createImageBitmap(new Blob([bytes], { type: 'image/png' }));
    const c = new OffscreenCanvas(bmp.width, bmp.height);
    const ctx = c.getContext('2d');
    ctx.drawImage(bmp, 0, 0);
    const { data } = ctx.getImageData(0, 0, bmp.width, bmp.height);
    let n = 0, sum = 0, sum2 = 0, nonDark = 0;
    const colours = new Set();  // distinct colours at 4 bits a channel
    for (let i = 0; i < data.length; i += 4) {
      const y = 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
      sum += y; sum2 += y * y; n++;
      if (y > 16) nonDark++;
      colours.add(((data[i] >> 4) << 8) | ((data[i + 1] >> 4) << 4) | (data[i + 2] >> 4));
    }
    const mean = sum / n;
    return {
      width: bmp.width, height: bmp.height, mean,
      std: Math.sqrt(Math.max(0, sum2 / n - mean * mean)),
      nonDarkFraction: nonDark / n,
      colours: colours.size,
    };
  }, buf.toString('base64'));
}

// Record the context's requests whose URL passes keep(url) in result.requests (method,
// URL, Accept, resource type, time since t0; status and Content-Type once answered) and
// every failed request in result.failedRequests.
export function recordRequests(context, result, keep, t0) {
  context.on('request', req => {
    if (!keep(req.url())) return;
    result.requests.push({
      method: req.method(),
      url: req.url(),
      accept: req.headers()['accept'] ?? null,
      resourceType: req.resourceType(),
      atMs: Date.now() - t0,
    });
  });
  context.on('requestfinished', async req => {
    if (!keep(req.url())) return;
    const resp = await req.response().catch(() => null);
    const entry = result.requests.findLast(r => r.url === req.url() && r.status === undefined);
    if (entry && resp) {
      entry.status = resp.status();
      entry.contentType = (await resp.allHeaders().catch(() => ({})))['content-type'] ?? null;
    }
  });
  context.on('requestfailed', req => {
    result.failedRequests.push({ url: req.url(), failure: req.failure()?.errorText ?? null });
  });
}
