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

import { launch, pngStats, recordRequests, skipTour, waitForTexts } from './browser_common.mjs';
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

const isDicomweb = url => spec.dicomwebRoot && url.startsWith(spec.dicomwebRoot);

let browser;
try {
  browser = await launch(spec, outDir, timeoutMs, result);
  const { context, page } = browser;

  recordRequests(context, result, isDicomweb, t0);

  // 1. study list
  const listStart = Date.now();
  await page.goto(spec.viewerUrl + '/', { waitUntil: 'domcontentloaded' });
  step('study list page loaded');
  result.crossOriginIsolated = await page.evaluate(() => self.crossOriginIsolated);
  const { body: bodyText, found } = await waitForTexts(page, spec.expectTexts || [], true, timeoutMs);
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
  const dismissTour = async () => {
    if (await skipTour(page)) step('onboarding tour dismissed');
  };
  while (Date.now() < vpDeadline) {
    await dismissTour();
    shot = await canvas.screenshot();
    stats = await pngStats(page, shot);
    if (stats.std > 8 && stats.nonDarkFraction > 0.02) break;
    await page.waitForTimeout(500);
  }
  result.timingsMs.firstImage = Date.now() - viewerStart;
  step('viewport has content', { stats });
  // let progressive loading / overlays settle, then take the final pictures
  await page.waitForTimeout(1500);
  await dismissTour();
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
    const pages = browser ? browser.context.pages() : [];
    if (pages[0]) await pages[0].screenshot({ path: path.join(outDir, 'failure.png') });
  } catch {
    /* best effort */
  }
} finally {
  result.timingsMs.total = Date.now() - t0;
  if (browser) await browser.close();
  process.stdout.write(JSON.stringify(result) + '\n');
}
