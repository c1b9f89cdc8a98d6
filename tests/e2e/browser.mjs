// Drive the OHIF viewer in headless Chromium and report what happened as JSON.
//
// Usage: node browser.mjs '<json spec>'
//   spec = {
//     viewerUrl:      "http://127.0.0.1:PORT"        (OHIF static server)
//     dicomwebRoot:   "http://127.0.0.1:PORT/dicom-web" (for request logging)
//     studyInstanceUID: "1.2..."                     (study to open)
//     openText:       "PHANTOM"                      (text of the row to click)
//     expectTexts:    ["..."]                        (texts the study list must show)
//     outDir:         "/path/for/screenshots"
//     chromium:       "/usr/bin/chromium"            (optional)
//     timeoutMs:      90000                          (optional)
//   }
// Prints one JSON object on stdout; diagnostics go to stderr.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const spec = JSON.parse(process.argv[2] || '{}');
const timeoutMs = spec.timeoutMs ?? 90000;
const outDir = spec.outDir;
fs.mkdirSync(outDir, { recursive: true });

const result = {
  ok: false,
  steps: [],
  studyList: null,
  viewer: null,
  requests: [],
  console: [],
  pageErrors: [],
  failedRequests: [],
  crossOriginIsolated: null,
  timingsMs: {},
};
const t0 = Date.now();
const step = (name, extra = {}) => {
  result.steps.push({ name, atMs: Date.now() - t0, ...extra });
  process.stderr.write(`[e2e ${((Date.now() - t0) / 1000).toFixed(1)}s] ${name}\n`);
};

// Compare texts loosely: NFC, upper case, runs of anything but letters and
// digits become one space (so "DOE^JANE" matches the displayed "DOE, JANE").
// test_ohif.py normalizes the same way.
const normalize = s =>
  ` ${String(s).normalize('NFC').toUpperCase().replace(/[^\p{L}\p{N}]+/gu, ' ').trim()} `;

const isDicomweb = url => spec.dicomwebRoot && url.startsWith(spec.dicomwebRoot);

// Statistics of a PNG screenshot, computed by the browser's own decoder.
async function pngStats(page, buf) {
  return page.evaluate(async b64 => {
    const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
    const bmp = await createImageBitmap(new Blob([bytes], { type: 'image/png' }));
    const c = new OffscreenCanvas(bmp.width, bmp.height);
    const ctx = c.getContext('2d');
    ctx.drawImage(bmp, 0, 0);
    const { data } = ctx.getImageData(0, 0, bmp.width, bmp.height);
    let n = 0, sum = 0, sum2 = 0, nonDark = 0;
    for (let i = 0; i < data.length; i += 4) {
      const y = 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
      sum += y; sum2 += y * y; n++;
      if (y > 16) nonDark++;
    }
    const mean = sum / n;
    return {
      width: bmp.width, height: bmp.height, mean,
      std: Math.sqrt(Math.max(0, sum2 / n - mean * mean)),
      nonDarkFraction: nonDark / n,
    };
  }, buf.toString('base64'));
}

const userDataDir = fs.mkdtempSync(path.join(outDir, 'profile-'));
let context;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
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
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(timeoutMs);

  page.on('console', msg => {
    if (['error', 'warning'].includes(msg.type()) && result.console.length < 200) {
      result.console.push({ type: msg.type(), text: msg.text().slice(0, 500) });
    }
  });
  page.on('pageerror', err => result.pageErrors.push(String(err).slice(0, 1000)));
  context.on('request', req => {
    if (!isDicomweb(req.url())) return;
    const h = req.headers();
    result.requests.push({
      method: req.method(),
      url: req.url(),
      accept: h['accept'] ?? null,
      resourceType: req.resourceType(),
      atMs: Date.now() - t0,
    });
  });
  context.on('requestfinished', async req => {
    if (!isDicomweb(req.url())) return;
    const resp = await req.response().catch(() => null);
    const entry = result.requests.findLast(r => r.url === req.url() && r.status === undefined);
    if (entry && resp) {
      entry.status = resp.status();
      const rh = await resp.allHeaders().catch(() => ({}));
      entry.contentType = rh['content-type'] ?? null;
    }
  });
  context.on('requestfailed', req => {
    result.failedRequests.push({ url: req.url(), failure: req.failure()?.errorText ?? null });
  });

  // 1. study list
  const listStart = Date.now();
  await page.goto(spec.viewerUrl + '/', { waitUntil: 'domcontentloaded' });
  step('study list page loaded');
  result.crossOriginIsolated = await page.evaluate(() => self.crossOriginIsolated);
  const expectTexts = spec.expectTexts || [];
  const found = {};
  const deadline = Date.now() + timeoutMs;
  let bodyText = '';
  while (Date.now() < deadline) {
    bodyText = await page.evaluate(() => document.body.innerText);
    const norm = normalize(bodyText);
    for (const t of expectTexts) found[t] = norm.includes(normalize(t));
    if (expectTexts.every(t => found[t])) break;
    await page.waitForTimeout(250);
  }
  result.timingsMs.studyList = Date.now() - listStart;
  await page.waitForTimeout(500);
  await page.screenshot({ path: path.join(outDir, 'study-list.png') });
  result.studyList = { found, text: bodyText.slice(0, 4000) };
  step('study list checked', { found });

  // 2. open the study: click its row, then the viewer-mode button
  const viewerStart = Date.now();
  let opened = 'none';
  if (spec.openText) {
    try {
      const row = page.getByText(spec.openText, { exact: false }).first();
      await row.click({ timeout: 15000 });
      step('study row clicked');
      const modeButton = page
        .getByRole('button', { name: /basic viewer|^viewer$/i })
        .first();
      await modeButton.waitFor({ state: 'visible', timeout: 15000 });
      await page.screenshot({ path: path.join(outDir, 'study-row-expanded.png') });
      await modeButton.click();
      await page.waitForURL(/\/viewer/, { timeout: 20000 });
      opened = 'clicked';
    } catch (e) {
      step('click-through failed, navigating directly', { error: String(e).slice(0, 300) });
    }
  }
  if (opened === 'none') {
    await page.goto(
      `${spec.viewerUrl}/viewer?StudyInstanceUIDs=${encodeURIComponent(spec.studyInstanceUID)}`,
      { waitUntil: 'domcontentloaded' },
    );
    opened = 'url';
  }
  step(`viewer opened (${opened})`, { url: page.url() });

  // 3. wait for the viewport to show an image
  const canvasSel = '[data-viewport-uid] canvas, .cornerstone-canvas, .viewport-element canvas';
  const canvas = page.locator(canvasSel).first();
  await canvas.waitFor({ state: 'visible', timeout: timeoutMs });
  step('viewport canvas visible');
  let stats = null;
  let shot = null;
  const vpDeadline = Date.now() + timeoutMs;
  const skipTour = async () => {
    // the first visit of a mode starts an onboarding tour that covers the viewport
    const skip = page.getByText('Skip all', { exact: true }).first();
    if (await skip.isVisible().catch(() => false)) {
      await skip.click({ timeout: 5000 }).catch(() => {});
      step('onboarding tour dismissed');
    }
  };
  while (Date.now() < vpDeadline) {
    await skipTour();
    shot = await canvas.screenshot();
    stats = await pngStats(page, shot);
    if (stats.std > 8 && stats.nonDarkFraction > 0.02) break;
    await page.waitForTimeout(500);
  }
  result.timingsMs.firstImage = Date.now() - viewerStart;
  step('viewport has content', { stats });
  // let progressive loading / overlays settle, then take the final pictures
  await page.waitForTimeout(1500);
  await skipTour();
  shot = await canvas.screenshot({ path: path.join(outDir, 'viewport.png') });
  stats = await pngStats(page, shot);
  await page.screenshot({ path: path.join(outDir, 'viewer.png') });
  result.viewer = {
    opened,
    url: page.url(),
    canvasCount: await page.locator(canvasSel).count(),
    viewportStats: stats,
    viewportScreenshot: path.join(outDir, 'viewport.png'),
    pageScreenshot: path.join(outDir, 'viewer.png'),
    text: (await page.evaluate(() => document.body.innerText)).slice(0, 3000),
  };
  result.ok = true;
} catch (e) {
  result.error = String(e && e.stack ? e.stack : e).slice(0, 3000);
  try {
    const pages = context ? context.pages() : [];
    if (pages[0]) await pages[0].screenshot({ path: path.join(outDir, 'failure.png') });
  } catch {
    /* best effort */
  }
} finally {
  result.timingsMs.total = Date.now() - t0;
  if (context) await context.close().catch(() => {});
  fs.rmSync(userDataDir, { recursive: true, force: true });
  process.stdout.write(JSON.stringify(result) + '\n');
}
