// A Direct Line customer written with the unmodified botframework-directlinejs, under Node
// (ws as the WebSocket, xhr2 as XMLHttpRequest), talking to Switchboard.
//
// Driven by a Rust test over stdio: it prints one JSON object per line ({"event":…}) and
// reads one command per line ("go"). Settings come from the environment:
//   SB_DOMAIN    http://127.0.0.1:PORT/v3/directline
//   SB_SECRET    the [directline] secret
//   SB_MODE      websocket | polling
//   SB_SCENARIO  handoff (drop and resume with a new client) | restart (the gateway is
//                killed and restarted; the same client reconnects by itself)
//   SB_GREETING, SB_HANDOFF_TEXT  part of what the bot says when it greets and when it
//                hands off (default: the built-in bot's words)
//
// It checks, across everything it received: every activity once (no id twice), the
// transcript's seq without a gap, the customer's own activities back with the id the post
// answered, and a repeated clientActivityId answered with the same id and not repeated.
// Each event line also tells the Rust side where the client is; "saw" lines are progress.

'use strict';

global.WebSocket = require('ws');
global.XMLHttpRequest = require('xhr2');
const readline = require('readline');
const { DirectLine, ConnectionStatus } = require('botframework-directlinejs');

const domain = process.env.SB_DOMAIN;
const secret = process.env.SB_SECRET;
const mode = process.env.SB_MODE || 'websocket';
const scenario = process.env.SB_SCENARIO || 'handoff';
const webSocket = mode === 'websocket';
// What the bot says when it greets and when it hands off (the built-in bot's by default).
const greetingText = process.env.SB_GREETING || 'virtual assistant';
const handoffText = process.env.SB_HANDOFF_TEXT || 'connect you with an agent';

function say(event, fields) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n');
}

function fail(message) {
  say('error', { message: String(message && message.stack ? message.stack : message) });
  process.exit(1);
}

setTimeout(() => fail('timed out; last activities: ' + JSON.stringify(summary().slice(-5))), 150000).unref();

const lines = readline.createInterface({ input: process.stdin });
const commands = [];
let waitingForCommand = null;
lines.on('line', line => {
  if (waitingForCommand) {
    const w = waitingForCommand;
    waitingForCommand = null;
    w(line.trim());
  } else {
    commands.push(line.trim());
  }
});
function command() {
  return commands.length ? Promise.resolve(commands.shift()) : new Promise(r => { waitingForCommand = r; });
}

// Everything received, in order, from every client this script made.
const received = [];
let wake = () => {};

function seqOf(a) {
  return a.channelData && a.channelData.switchboard && a.channelData.switchboard.seq;
}

function summary() {
  return received.map(a => ({ client: a._client, id: a.id, seq: seqOf(a), type: a.type, name: a.name, role: a.from && a.from.role, text: a.text }));
}

// Resolves once every activity up to the client's watermark has been emitted: the library
// moves its watermark when a set arrives but emits the set's activities one by one later,
// so a client stopped in between would skip what it has not emitted yet.
function settled(dl) {
  const all = () => {
    const have = new Set(received.map(seqOf));
    for (let s = 1; s <= Number(dl.watermark); s++) if (!have.has(s)) return false;
    return true;
  };
  return until('settled at ' + dl.watermark, () => all());
}

function until(what, pred) {
  return new Promise(resolve => {
    const check = () => {
      const found = received.find(pred);
      if (found) {
        wake = () => {};
        resolve(found);
        return true;
      }
      return false;
    };
    if (!check()) {
      wake = check;
    }
  }).then(a => {
    say('saw', { what, id: a.id, seq: seqOf(a) });
    return a;
  });
}

let clients = 0;
function client(options) {
  const n = ++clients;
  const dl = new DirectLine({
    domain,
    webSocket,
    pollingInterval: 200,
    timeout: 3000,
    // Reconnect 3 s after a dropped socket rather than 3 to 15 s: the library's own hook.
    random: () => 0,
    ...options,
  });
  const sub = dl.activity$.subscribe(
    a => {
      a._client = n;
      received.push(a);
      wake();
    },
    e => fail('activity$ failed: ' + JSON.stringify(e && (e.status || e.message || e))),
  );
  dl.connectionStatus$.subscribe(s => {
    if (s === ConnectionStatus.FailedToConnect || s === ConnectionStatus.ExpiredToken) {
      fail('connection status ' + s);
    }
  });
  return { dl, stop: () => { sub.unsubscribe(); dl.end(); } };
}

function post(dl, activity) {
  return new Promise((resolve, reject) => {
    dl.postActivity({ from: { id: 'dl-customer', name: 'Ann' }, ...activity }).subscribe(
      id => (id === 'retry' ? reject(new Error('post answered retry')) : resolve(id)),
      e => reject(new Error('post failed: ' + (e && e.status))),
    );
  });
}

async function generateToken() {
  const res = await fetch(domain + '/tokens/generate', { method: 'POST', headers: { Authorization: 'Bearer ' + secret } });
  if (res.status !== 200) throw new Error('tokens/generate answered ' + res.status);
  return res.json();
}

function check() {
  const ids = new Set();
  for (const a of received) {
    if (a.id === undefined) continue; // live events (queue.position) are not in the transcript
    if (ids.has(a.id)) throw new Error('activity ' + a.id + ' received twice');
    ids.add(a.id);
  }
  // directlinejs emits each ActivitySet's activities on its async scheduler, so two sets
  // that arrive back to back may interleave: the check is on the set of seqs, not order.
  const seqs = received.map(seqOf).filter(s => s !== undefined).sort((a, b) => a - b);
  for (let i = 0; i < seqs.length; i++) {
    if (seqs[i] !== i + 1) throw new Error('seq ' + (i + 1) + ' expected, got ' + seqs[i] + ': ' + JSON.stringify(summary()));
  }
  return seqs.length;
}

const fromBot = text => a => a.type === 'message' && a.from.role === 'bot' && (a.text || '').includes(text);
const own = id => a => a.id === id;

async function main() {
  // WebSocket mode starts with a token from tokens/generate; polling with the secret.
  let first;
  let token;
  if (webSocket) {
    const generated = await generateToken();
    token = generated.token;
    first = client({ token });
  } else {
    first = client({ secret });
  }
  const greeting = await until('greeting', fromBot(greetingText));
  const conversationId = greeting.conversation.id;
  if (greeting.channelId !== 'directline' || !greeting.serviceUrl) throw new Error('not a Direct Line activity: ' + JSON.stringify(greeting));

  const id = await post(first.dl, { type: 'message', text: 'agent', channelData: { clientActivityId: 'cust-1' } });
  const echo = await until('own message', own(id));
  if (echo.text !== 'agent' || echo.from.role !== 'user') throw new Error('own message came back as ' + JSON.stringify(echo));
  const again = await post(first.dl, { type: 'message', text: 'agent', channelData: { clientActivityId: 'cust-1' } });
  if (again !== id) throw new Error('a repeated clientActivityId got a new id: ' + again + ' after ' + id);

  await until('handoff notice', fromBot(handoffText));
  await until('agent greeting', fromBot('this is Alice'));

  if (scenario === 'restart') {
    // Acknowledged (stored) right before the gateway is killed: it must be there after.
    const crashId = await post(first.dl, { type: 'message', text: 'sent just before the crash', channelData: { clientActivityId: 'cust-crash' } });
    say('ready', { conversationId, watermark: first.dl.watermark, crashId });
    if ((await command()) !== 'go') throw new Error('expected go');
    // The gateway was killed and restarted: the same client reconnects by itself.
    await until('own message from before the crash', own(crashId));
    const after = await until('agent after restart', fromBot('back after the restart'));
    const id2 = await post(first.dl, { type: 'message', text: 'still there?', channelData: { clientActivityId: 'cust-2' } });
    await until('own message after restart', own(id2));
    await until('agent answer', fromBot('still here'));
    await settled(first.dl);
    first.stop();
    say('done', { conversationId, count: check(), afterSeq: seqOf(after), activities: summary() });
    process.exit(0);
  }

  // The customer drops; the agent writes meanwhile; a new client resumes at the watermark.
  await settled(first.dl);
  const watermark = first.dl.watermark;
  const resumeToken = first.dl.token;
  first.stop();
  say('dropped', { conversationId, watermark });
  if ((await command()) !== 'go') throw new Error('expected go');
  const second = client(webSocket ? { token: resumeToken, conversationId, watermark } : { secret, conversationId, watermark });
  await until('while away 1', fromBot('while you were away 1'));
  await until('while away 2', fromBot('while you were away 2'));
  const id3 = await post(second.dl, { type: 'message', text: 'thanks', channelData: { clientActivityId: 'cust-3' } });
  await until('own message after resume', own(id3));
  await until('agent goodbye', fromBot('goodbye'));
  await post(second.dl, { type: 'endOfConversation' });
  await settled(second.dl);
  second.stop();
  say('done', { conversationId, count: check(), activities: summary() });
  process.exit(0);
}

main().catch(fail);
