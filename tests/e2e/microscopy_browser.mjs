// Open a whole-slide study in OHIF's microscopy mode in headless Chromium; report as JSON.
//
// Usage: node microscopy_browser.mjs '<json spec>'
//   spec = {
//     url:          "http://127.0.0.1:PORT/viewer/microscopy?StudyInstanceUIDs=..."
//     dicomwebRoot: "http://127.0.0.1:PORT/dicom-web"   (for request logging)
//     outDir:       "/path/for/screenshots"
//     chromium:     "/usr/bin/chromium"                 (optional)
//     timeoutMs:    90000                               (optional)
//   }
// Prints one JSON object on stdout: the DICOMweb requests (status, Accept), the requests
// that failed, the page's console errors, and statistics of the slide viewport's pixels
// (grey-level spread, non-dark share, distinct colours) in the middle of the slide viewport,
// taken once the tiles are drawn (or at the time-out).
// Chromium is started as browser.mjs starts it.

import { launch, pngStats, recordRequests, skipTour } from './browser_common.mjs';
import fs from 'node:fs';
import path from 'node:path';

const spec = JSON.parse(process.argv[2] || '{}');
const timeoutMs = spec.timeoutMs ?? 90000;
fs.mkdirSync(spec.outDir, { recursive: true });
const result = { ok: false, requests: [], failedRequests: [], console: [], pageErrors: [] };
const t0 = Date.now();
const log = msg => process.stderr.write(`[microscopy ${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}\n`);
const isDicomweb = url => url.startsWith(spec.dicomwebRoot);

let browser;
try {
  browser = await launch(spec, spec.outDir, timeoutMs, result);
  const { context, page } = browser;
  recordRequests(context, result, isDicomweb, t0);

  await page.goto(spec.url, { waitUntil: 'domcontentloaded' });
  log('page loaded');
  // dicom-microscopy-viewer draws with OpenLayers: the map's canvases sit in .ol-viewport
  const viewport = page.locator('.ol-viewport').first();
  await viewport.waitFor({ state: 'visible', timeout: timeoutMs });
  log('slide viewport visible');
  // the middle of the viewport: away from the overview map and the scale bar in the corners
  const middle = async (options = {}) => {
    const box = await viewport.boundingBox();
    const clip = { x: box.x + box.width / 4, y: box.y + box.height / 4,
      width: box.width / 2, height: box.height / 2 };
    return page.screenshot({ ...options, clip });
  };
  let stats = null;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    await skipTour(page);
    stats = await pngStats(page, await middle());
    if (stats.std > 8 && stats.nonDarkFraction > 0.05 && stats.colours > 8) break;
    await page.waitForTimeout(500);
  }
  await page.waitForTimeout(1000);
  await viewport.screenshot({ path: path.join(spec.outDir, 'slide.png') });
  const shot = await middle({ path: path.join(spec.outDir, 'slide-middle.png') });
  result.viewport = { ...(await pngStats(page, shot)), screenshot: path.join(spec.outDir, 'slide-middle.png') };
  await page.screenshot({ path: path.join(spec.outDir, 'page.png') });
  result.url = page.url();
  result.text = (await page.evaluate(() => document.body.innerText)).slice(0, 3000);
  result.ok = true;
} catch (e) {
  result.error = String(e && e.stack ? e.stack : e).slice(0, 3000);
  try {
    const pages = browser ? browser.context.pages() : [];
    if (pages[0]) await pages[0].screenshot({ path: path.join(spec.outDir, 'failure.png') });
  } catch {
    /* best effort */
  }
} finally {
  result.totalMs = Date.now() - t0;
  if (browser) await browser.close();
  process.stdout.write(JSON.stringify(result) + '\n');
}
