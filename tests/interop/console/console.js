// Drives Switchboard's web console in Debian's Chromium (playwright-core, no downloaded
// browser) through a whole handoff on the default configuration: a customer on the widget
// page, the built-in bot, an agent on the agent page who replies and ends with a survey,
// the customer's rating, and the supervisor page showing the queues and the routing
// history. Saves a screenshot of every page. Prints one JSON line per step for the Rust
// test; exits non-zero on the first thing that is not as a user would see it.
//
//   SB_URL          http://127.0.0.1:PORT
//   SB_ADMIN_TOKEN  the gateway's admin token
//   SB_SHOTS        the folder for the screenshots
//   SB_CHROMIUM     the browser (default /usr/bin/chromium)
//   SB_SCENARIO     chat (the above) | voice: the agent takes a phone call the Rust test
//                   places | phone: the call is placed from the console's phone page;
//                   Chromium's fake microphone plays SB_FAKE_AUDIO (a WAV)
'use strict';

const path = require('path');
const { chromium } = require('playwright-core');

const url = process.env.SB_URL;
const shots = process.env.SB_SHOTS;
const adminToken = process.env.SB_ADMIN_TOKEN;
const WAIT = 60000;

function say(event, fields) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n');
}

async function shot(page, name) {
  const file = path.join(shots, name + '.png');
  await page.screenshot({ path: file, fullPage: true });
  say('screenshot', { file });
}

// The text of a page's transcript, waited for until it contains `text`.
async function transcriptHas(page, text) {
  await page.locator('#transcript li', { hasText: text }).first().waitFor({ timeout: WAIT });
}

async function launch(extra) {
  return chromium.launch({
    executablePath: process.env.SB_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // As root, without a sandbox; and none of Chromium's own calls to the outside.
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required',
      '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
      ...extra,
    ],
  });
}

async function signInAlice(ctx) {
  const agent = await ctx.newPage();
  await agent.goto(url + '/agent');
  await agent.getByLabel('Agent id').fill('alice');
  await agent.getByLabel('Secret').fill('alice-demo-secret');
  await agent.getByRole('button', { name: 'Sign in' }).click();
  await agent.locator('#status', { hasText: 'signed in as alice' }).waitFor({ timeout: WAIT });
  return agent;
}

// A phone call answered in the browser: the caller's audio is played (its level is read
// from the page), the fake microphone's goes back on the call, the DTMF key is shown.
async function voice() {
  const browser = await launch(['--use-file-for-fake-audio-capture=' + process.env.SB_FAKE_AUDIO]);
  const ctx = await browser.newContext({ viewport: { width: 1366, height: 800 }, permissions: ['microphone'] });
  ctx.on('page', p => p.on('pageerror', e => say('pageerror', { message: String(e) })));
  const agent = await signInAlice(ctx);
  say('ready', {});
  await agent.locator('#convs li button', { hasText: '☎' }).first().waitFor({ timeout: WAIT });
  await agent.locator('#call').waitFor({ state: 'visible', timeout: WAIT });
  await transcriptHas(agent, 'pressed 1');
  await agent.waitForFunction(() => {
    const s = window.sbAgent.stats;
    return s.framesIn > 50 && s.peakIn > 0.05 && s.framesOut > 50;
  }, null, { timeout: WAIT, polling: 100 });
  await shot(agent, 'call');
  say('call', { stats: await agent.evaluate(() => window.sbAgent.stats) });
  // The caller hangs up: the call ends on the page.
  await agent.waitForFunction(() => [...window.sbAgent.convs.values()].some(c => c.channel === 'voice' && !c.open), null, { timeout: WAIT });
  await browser.close();
  say('done', {});
}

// A call placed from the phone page (the native /v1/voice leg, in l16/16000), through the
// voice menu to the agent page, both in one browser with the fake microphone.
async function phone() {
  const browser = await launch(['--use-file-for-fake-audio-capture=' + process.env.SB_FAKE_AUDIO]);
  const viewport = { width: 1366, height: 800 };
  const agentCtx = await browser.newContext({ viewport, permissions: ['microphone'] });
  const phoneCtx = await browser.newContext({ viewport, permissions: ['microphone'] });
  for (const ctx of [agentCtx, phoneCtx]) ctx.on('page', p => p.on('pageerror', e => say('pageerror', { message: String(e) })));
  const agent = await signInAlice(agentCtx);
  const caller = await phoneCtx.newPage();
  await caller.goto(url + '/phone');
  await caller.getByRole('button', { name: 'Call' }).click();
  await caller.locator('#status', { hasText: 'on the call' }).waitFor({ timeout: WAIT });
  // The menu's prompt plays, then the caller presses 1.
  await caller.waitForFunction(() => window.sbPhone.stats.framesIn > 10, null, { timeout: WAIT, polling: 100 });
  await caller.getByRole('button', { name: 'key 1' }).click();
  await agent.locator('#convs li button', { hasText: '☎' }).first().waitFor({ timeout: WAIT });
  await transcriptHas(agent, 'pressed 1');
  await agent.waitForFunction(() => {
    const s = window.sbAgent.stats;
    return s.framesIn > 50 && s.peakIn > 0.05;
  }, null, { timeout: WAIT, polling: 100 });
  const callerStats = await caller.evaluate(() => window.sbPhone.stats);
  await shot(caller, 'phone');
  say('phone', { agent: await agent.evaluate(() => window.sbAgent.stats), caller: callerStats });
  await caller.getByRole('button', { name: 'Hang up' }).click();
  await agent.waitForFunction(() => [...window.sbAgent.convs.values()].some(c => c.channel === 'voice' && !c.open), null, { timeout: WAIT });
  await browser.close();
  say('done', {});
}

async function chat() {
  const browser = await launch([]);
  const viewport = { width: 1366, height: 800 };
  const customerCtx = await browser.newContext({ viewport });
  const agentCtx = await browser.newContext({ viewport, permissions: ['microphone'] });
  const supervisorCtx = await browser.newContext({ viewport });
  for (const ctx of [customerCtx, agentCtx, supervisorCtx]) {
    ctx.on('page', p => p.on('pageerror', e => say('pageerror', { message: String(e) })));
  }

  const start = await customerCtx.newPage();
  await start.goto(url + '/');
  await start.getByRole('link', { name: 'Customer chat widget' }).waitFor();
  await shot(start, 'start');
  await start.close();

  // The agent signs in first, so the handoff finds her available.
  const agent = await signInAlice(agentCtx);
  say('agent', { signedIn: true });

  // The customer starts a chat; the built-in bot answers and hands over.
  const customer = await customerCtx.newPage();
  await customer.goto(url + '/widget');
  await customer.getByLabel('Your name').fill('Ann');
  await customer.getByRole('button', { name: 'Start chat' }).click();
  await transcriptHas(customer, 'virtual assistant');
  await customer.getByLabel('Message').fill('I would like to talk to an agent');
  await customer.keyboard.press('Enter');
  await transcriptHas(customer, 'connect you with an agent');
  say('customer', { handedOver: true });

  // The assignment reaches the agent page: the list, the badge, the bot's transcript.
  await agent.locator('#convs li button', { hasText: 'Ann' }).first().waitFor({ timeout: WAIT });
  await transcriptHas(agent, 'I would like to talk to an agent');
  const badge = await agent.locator('#badge').textContent();
  await agent.getByLabel('Reply').fill('Hello Ann, this is Alice. How can I help?');
  await agent.getByRole('button', { name: 'Send' }).click();
  await transcriptHas(customer, 'this is Alice');
  await customer.getByLabel('Message').fill('My card was stolen');
  await customer.keyboard.press('Enter');
  await transcriptHas(agent, 'My card was stolen');
  await shot(agent, 'agent');
  say('agent', { replied: true, badge });

  // The supervisor: queues and agents, and this conversation's routing history.
  const supervisor = await supervisorCtx.newPage();
  await supervisor.goto(url + '/supervisor');
  await supervisor.getByLabel(/Token/).fill(adminToken);
  await supervisor.getByRole('button', { name: 'Open' }).click();
  await supervisor.locator('#queues tr').first().waitFor({ timeout: WAIT });
  await supervisor.locator('#agents tr', { hasText: 'alice' }).first().waitFor({ timeout: WAIT });
  await supervisor.locator('#convs tr a').first().waitFor({ timeout: WAIT });
  await supervisor.locator('#convs tr a').first().click();
  await supervisor.locator('#routing tr').nth(1).waitFor({ timeout: WAIT });
  const routing = await supervisor.locator('#routing tr').allInnerTexts();
  await transcriptHas(supervisor, 'My card was stolen');
  await shot(supervisor, 'supervisor');
  say('supervisor', { routing });

  // The agent ends with a survey; the customer rates.
  await agent.getByRole('button', { name: 'End with survey' }).click();
  await customer.locator('#survey').waitFor({ state: 'visible', timeout: WAIT });
  await customer.getByLabel('Comment').fill('Quick and kind');
  await customer.getByRole('button', { name: '5 of 5' }).click();
  await customer.locator('#survey-done', { hasText: 'You rated us 5 of 5' }).waitFor({ timeout: WAIT });
  await shot(customer, 'widget');
  say('customer', { rated: 5 });

  await browser.close();
  say('done', {});
}

({ voice, phone, chat }[process.env.SB_SCENARIO || 'chat'] || chat)().catch(e => {
  say('error', { message: String(e && e.stack ? e.stack : e) });
  process.exit(1);
});
