// A researcher's session in the gateway's own viewer (/viewer), in headless Chromium:
// sign in (the gateway sends the browser to the OpenID provider's login form), see the study
// list, open a study and see pixels, stay past the access token's lifetime (the viewer renews
// it with the refresh token), then, after the test revokes the agreement, see the restricted
// study gone.
//
// Usage: node login_browser.mjs '<json spec>'
//   spec = {
//     viewerUrl: "http://127.0.0.1:PORT/viewer",
//     username: "alice",
//     expectTexts: ["..."],        texts of the restricted study's row
//     openText: "...",             the row to click
//     studyInstanceUID: "1.2...",
//     holdSeconds: 45,             how long to stay signed in before the last check
//     revokeSignal: "/path/file"   printed {"waiting": true}, then waits for this file
//     outDir, chromium, timeoutMs
//   }
// Prints JSON lines on stdout: {"waiting": true} before waiting for revokeSignal, then the
// result (with the pages shown outside the gateway, "elsewhere"); diagnostics go to stderr.

import { launch, pngStats, skipTour, waitForTexts } from './browser_common.mjs';
import fs from 'node:fs';
import path from 'node:path';

const spec = JSON.parse(process.argv[2] || '{}');
const timeoutMs = spec.timeoutMs ?? 90000;
const outDir = spec.outDir;
fs.mkdirSync(outDir, { recursive: true });
const origin = new URL(spec.viewerUrl).origin;

const result = { ok: false, steps: [], tokenRequests: [], dicomweb: [], console: [], pageErrors: [], elsewhere: [] };
const t0 = Date.now();
const step = (name, extra = {}) => {
  result.steps.push({ name, atMs: Date.now() - t0, ...extra });
  process.stderr.write(`[login ${((Date.now() - t0) / 1000).toFixed(1)}s] ${name}\n`);
};

// QIDO with the access token the viewer holds now (oidc-client-ts keeps its user in
// sessionStorage): the study UIDs this session can see.
async function sessionStudies(page) {
  return page.evaluate(async () => {
    const key = Object.keys(sessionStorage).find(k => k.startsWith('oidc.user:'));
    if (!key) return { error: 'no signed-in user in sessionStorage' };
    const token = JSON.parse(sessionStorage.getItem(key)).access_token;
    const r = await fetch('/dicom-web/studies', { headers: { Authorization: `Bearer ${token}`, Accept: 'application/dicom+json' } });
    const rows = r.status === 200 ? await r.json() : [];
    return { status: r.status, uids: rows.map(row => row['0020000D'].Value[0]) };
  });
}

async function signIn(page) {
  // the provider's (or the development) login form: the first text field and a submit button
  const field = page.locator('input[name="login"], input[name="username"]').first();
  await field.waitFor({ state: 'visible', timeout: timeoutMs });
  step('login form shown', { url: page.url().split('?')[0] });
  await field.fill(spec.username);
  const password = page.locator('input[name="password"]');
  if (await password.count()) await password.first().fill('any');
  await page.locator('button[type="submit"], input[type="submit"]').first().click();
}

let browser;
try {
  browser = await launch(spec, outDir, timeoutMs, result);
  const { context, page } = browser;
  // pages shown outside the gateway (the OpenID provider's), to tell a reload that signs in
  // again there from one the gateway answers by itself
  page.on('framenavigated', frame => {
    if (frame === page.mainFrame() && new URL(frame.url()).origin !== origin) {
      result.elsewhere.push({ url: frame.url().split('?')[0], atMs: Date.now() - t0 });
    }
  });
  context.on('requestfinished', async req => {
    const url = req.url();
    if (!url.startsWith(origin)) return;
    const resp = await req.response().catch(() => null);
    const status = resp ? resp.status() : null;
    if (url.startsWith(`${origin}/oauth/token`)) {
      const grant = new URLSearchParams(req.postData() || '').get('grant_type');
      result.tokenRequests.push({ grant, status, atMs: Date.now() - t0 });
    } else if (url.startsWith(`${origin}/dicom-web/`)) {
      const auth = (await req.allHeaders().catch(() => ({})))['authorization'] || '';
      result.dicomweb.push({ path: new URL(url).pathname.slice(0, 400), status, bearer: auth.startsWith('Bearer '), atMs: Date.now() - t0 });
    }
  });

  // 1. sign in
  await page.goto(spec.viewerUrl + '/', { waitUntil: 'domcontentloaded' });
  await signIn(page);
  await page.waitForURL(u => u.href.startsWith(spec.viewerUrl) && !u.pathname.endsWith('/callback'), { timeout: timeoutMs });
  step('back in the viewer', { url: page.url() });

  // 2. the study list shows the restricted study
  const listed = await waitForTexts(page, spec.expectTexts, true, timeoutMs);
  await page.screenshot({ path: path.join(outDir, 'study-list.png') });
  result.studyList = { found: listed.ok, text: listed.body.slice(0, 3000) };
  step('study list checked', { found: listed.ok });
  if (!listed.ok) throw new Error('the restricted study is not in the study list');

  // 3. open it and wait for pixels
  await page.getByText(spec.openText, { exact: false }).first().click({ timeout: 15000 });
  const modeButton = page.getByRole('button', { name: /basic viewer|^viewer$/i }).first();
  await modeButton.waitFor({ state: 'visible', timeout: 15000 });
  await modeButton.click();
  await page.waitForURL(/StudyInstanceUIDs/, { timeout: 20000 });
  step('study opened', { url: page.url() });
  const canvas = page.locator('[data-viewport-uid] canvas, .cornerstone-canvas').first();
  await canvas.waitFor({ state: 'visible', timeout: timeoutMs });
  let stats = null;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    await skipTour(page);
    stats = await pngStats(page, await canvas.screenshot());
    if (stats.std > 8 && stats.nonDarkFraction > 0.02) break;
    await page.waitForTimeout(500);
  }
  await canvas.screenshot({ path: path.join(outDir, 'viewport.png') });
  await page.screenshot({ path: path.join(outDir, 'viewer.png') });
  // the gateway's notice for studies whose pixels are not released (in-situ processing)
  const notice = await page.locator('#gateway-in-situ-notice').textContent({ timeout: 1000 }).catch(() => null);
  result.viewer = { url: page.url(), stats, notice };
  step('viewport checked', { stats });

  const back = async () => {
    await page.goBack({ waitUntil: 'domcontentloaded' }).catch(() => {});
    if (!page.url().replace(/\/$/, '').endsWith('/viewer')) {
      await page.evaluate(() => { window.history.pushState({}, '', '/viewer/'); window.dispatchEvent(new PopStateEvent('popstate')); });
    }
  };

  // 3b. a study under an in-situ agreement: it opens (metadata) and the viewer says why no pixels
  if (spec.inSituText) {
    await skipTour(page); // the viewer's onboarding tour may still cover the page
    await page.keyboard.press('Escape').catch(() => {});
    await back();
    await waitForTexts(page, [spec.inSituText], true, timeoutMs);
    const row = page.getByText(spec.inSituText, { exact: false }).first();
    await row.click({ timeout: 10000 }).catch(() => row.click({ force: true, timeout: 10000 }));
    const button = page.getByRole('button', { name: /basic viewer|^viewer$/i }).first();
    await button.waitFor({ state: 'visible', timeout: 15000 });
    await button.click();
    await page.waitForURL(/StudyInstanceUIDs/, { timeout: 20000 });
    const box = page.locator('#gateway-in-situ-notice');
    const shown = await box.waitFor({ state: 'visible', timeout: 30000 }).then(() => true).catch(() => false);
    const overlay = await page.locator('[data-viewport-uid]').first().innerText({ timeout: 5000 }).catch(() => '');
    result.inSitu = { url: page.url(), notice: shown ? await box.textContent() : null, overlay: overlay.slice(0, 500) };
    await page.screenshot({ path: path.join(outDir, 'in-situ.png') });
    step('in-situ study opened', { notice: shown });
  }

  // 4. stay past the access token's lifetime, then use the session again
  await page.waitForTimeout((spec.holdSeconds ?? 45) * 1000);
  step('held past the token lifetime', { tokenRequests: result.tokenRequests.length });
  await back();
  const relisted = await waitForTexts(page, spec.expectTexts, true, timeoutMs);
  result.afterRefresh = { found: relisted.ok, atMs: Date.now() - t0, session: await sessionStudies(page) };
  step('study list after the token lifetime', { found: relisted.ok });
  await page.screenshot({ path: path.join(outDir, 'study-list-later.png') });

  // 5. the test revokes the agreement; the study list no longer shows the study
  if (spec.revokeSignal) {
    process.stdout.write(JSON.stringify({ waiting: true }) + '\n');
    const until = Date.now() + timeoutMs;
    while (!fs.existsSync(spec.revokeSignal) && Date.now() < until) await page.waitForTimeout(200);
    step('agreement revoked');
    const revokedAt = Date.now();
    const codeGrants = result.tokenRequests.filter(r => r.grant === 'authorization_code').length;
    // the gateway re-reads agreements after its agreement cache time: ask until the study
    // is gone (or 20 s pass), and report how long that took
    let session = await sessionStudies(page);
    while ((session.uids || []).includes(spec.studyInstanceUID) && Date.now() - revokedAt < 20000) {
      await page.waitForTimeout(250);
      session = await sessionStudies(page);
    }
    session.goneAfterMs = Date.now() - revokedAt;
    // search again: the study list queries QIDO with the same session
    await page.reload({ waitUntil: 'domcontentloaded' });
    await page.waitForTimeout(2000);
    const gone = await waitForTexts(page, spec.expectTexts, false, timeoutMs);
    result.afterRevocation = {
      session, gone: gone.ok, text: gone.body.slice(0, 2000), url: page.url(),
      newSignIn: result.tokenRequests.filter(r => r.grant === 'authorization_code').length > codeGrants,
    };
    await page.screenshot({ path: path.join(outDir, 'study-list-revoked.png') });
    step('study list after revocation', { gone: gone.ok });
  }
  result.ok = true;
} catch (e) {
  result.error = String(e && e.stack ? e.stack : e).slice(0, 3000);
  try {
    const pages = browser ? browser.context.pages() : [];
    if (pages[0]) await pages[0].screenshot({ path: path.join(outDir, 'failure.png') });
  } catch { /* best effort */ }
} finally {
  if (browser) await browser.close();
  process.stdout.write(JSON.stringify(result) + '\n');
}
