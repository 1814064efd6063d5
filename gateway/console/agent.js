// The agent workspace: an agent's connection on /v1/agent (SPEC §4.4) in a browser.
// Conversations arrive as work items (`conversation.assigned`, with the bot's transcript,
// the context variables and the bot's summary); voice calls arrive as work items with
// `media` and binary frames ([stream u32 BE][L16 LE, 16 kHz]), played with Web Audio; the
// microphone is sent back the same way.
'use strict';

const A = {
  ws: null, convs: new Map(), order: [], current: null, unread: 0,
  audio: null, player: null, mic: null, muted: false,
  // For people and tests alike: what the call has carried.
  stats: { framesIn: 0, framesOut: 0, peakIn: 0, peakOut: 0 },
};
window.sbAgent = A;
const $ = id => document.getElementById(id);

function status(t) { $('status').textContent = t; }

function beep() {
  if (!A.audio) return;
  const o = A.audio.createOscillator();
  const g = A.audio.createGain();
  o.frequency.value = 880;
  g.gain.setValueAtTime(0.15, A.audio.currentTime);
  g.gain.exponentialRampToValueAtTime(0.001, A.audio.currentTime + 0.3);
  o.connect(g).connect(A.audio.destination);
  o.start();
  o.stop(A.audio.currentTime + 0.3);
}

function badge(n) {
  A.unread = n;
  $('badge').textContent = String(n);
  $('badge').hidden = n === 0;
  document.title = (n ? '(' + n + ') ' : '') + 'Switchboard · agent';
}

function send(v) {
  if (A.ws && A.ws.readyState === WebSocket.OPEN) A.ws.send(JSON.stringify(v));
}

function renderList() {
  const ul = SB.clear($('convs'));
  for (const id of A.order) {
    const c = A.convs.get(id);
    const label = (c.channel === 'voice' ? '☎ ' : '') + (c.customer || 'Customer') + ' · ' + (c.queue || '') + (c.open ? '' : ' (ended)');
    ul.append(SB.el('li', {}, SB.el('button', {
      type: 'button', 'aria-current': id === A.current ? 'true' : 'false', onclick: () => select(id),
    }, label, c.unread ? SB.el('span', { class: 'badge' }, String(c.unread)) : null)));
  }
  $('none').hidden = A.order.length > 0;
}

function renderConv() {
  const c = A.convs.get(A.current);
  $('conv').hidden = !c;
  $('side').hidden = !c;
  if (!c) return;
  $('conv-h').textContent = (c.customer || 'Customer') + ' — ' + c.workstream + ' / ' + c.queue + (c.open ? '' : ' (ended)');
  const ol = SB.clear($('transcript'));
  for (const a of c.transcript) {
    const text = SB.line(a);
    if (text === null || text === '') continue;
    const who = SB.who(a);
    ol.append(SB.el('li', { class: a.type === 'message' ? who.role : 'event' }, SB.el('span', { class: 'who' }, who.name + ' · ' + SB.time(a.timestamp)), text));
  }
  if (ol.lastChild) ol.lastChild.scrollIntoView({ block: 'nearest' });
  const dl = SB.clear($('context'));
  for (const [k, v] of Object.entries(c.context || {})) dl.append(SB.el('dt', {}, k), SB.el('dd', {}, typeof v === 'object' ? JSON.stringify(v) : String(v)));
  $('summary').textContent = c.summary || '(none)';
  $('call').hidden = !c.media;
  if (c.media) $('call-info').textContent = c.media.encoding + '/' + c.media.sampleRate + ', stream ' + c.media.stream;
  for (const b of ['reply', 'transfer', 'end', 'end-survey']) {
    const el = $(b);
    for (const x of el.tagName === 'FORM' ? el.elements : [el]) x.disabled = !c.open;
  }
}

function select(id) {
  A.current = id;
  const c = A.convs.get(id);
  if (c) {
    badge(Math.max(0, A.unread - (c.unread ? 1 : 0)));
    c.unread = 0;
  }
  renderList();
  renderConv();
}

function assigned(v) {
  const id = v.conversation.id;
  const val = v.value || {};
  const known = A.convs.get(id);
  const transcript = (val.transcript || []).slice();
  const customer = (transcript.find(a => a.from && a.from.role === 'user') || {}).from;
  const c = {
    id, workstream: val.workstream, queue: val.queue, channel: val.channel, context: val.context || {},
    summary: val.summary, media: val.media, transcript, open: true, unread: known ? known.unread : 1,
    customer: customer ? customer.name : (known && known.customer),
  };
  A.convs.set(id, c);
  if (!known) {
    A.order.push(id);
    badge(A.unread + 1);
    beep();
  }
  if (!A.current || !A.convs.get(A.current).open) select(id);
  else { renderList(); renderConv(); }
  if (c.media) startMic();
}

let typingTimer;
function onFrame(v) {
  if (v.name === 'conversation.assigned' && v.seq === undefined) return assigned(v);
  if (v.name === 'ack' || v.name === 'handoff.status') return;
  if (v.name === 'error') { status('refused: ' + (v.value && v.value.message)); return; }
  const id = v.conversation && v.conversation.id;
  const c = id && A.convs.get(id);
  if (!c) return;
  if (v.type === 'typing') {
    if (id === A.current) {
      $('typing').textContent = SB.who(v).name + ' is typing…';
      clearTimeout(typingTimer);
      typingTimer = setTimeout(() => { $('typing').textContent = ''; }, 3000);
    }
    return;
  }
  if (v.name === 'transcript.page') {
    c.transcript = (v.value.transcript || []).concat(c.transcript);
  } else {
    c.transcript.push(v);
  }
  if (v.type === 'endOfConversation') c.open = false;
  if (id === A.current) { $('typing').textContent = ''; renderConv(); } else { c.unread = (c.unread || 0) + 1; }
  renderList();
}

// Caller audio, played as it comes (audio.js).
function onAudio(buf) {
  if (!A.audio) return;
  if (!A.player) {
    A.player = SBAudio.player(A.audio, peak => {
      A.stats.peakIn = peak;
      $('meter-in').style.width = Math.min(100, peak * 200) + '%';
    });
  }
  A.player.play(buf);
  A.stats.framesIn = A.player.frames;
}

// The microphone, sent on the call the agent has open.
async function startMic() {
  if (A.mic || !navigator.mediaDevices) return;
  A.mic = true;
  try {
    A.mic = await SBAudio.mic(
      A.audio,
      () => {
        const c = A.convs.get(A.current);
        return c && c.open && c.media ? c.media.stream : null;
      },
      frame => {
        if (A.ws && A.ws.readyState === WebSocket.OPEN) { A.ws.send(frame); A.stats.framesOut++; }
      },
      peak => {
        A.stats.peakOut = peak;
        $('meter-out').style.width = Math.min(100, peak * 200) + '%';
      },
      () => A.muted,
    );
  } catch (e) {
    A.mic = null;
    status('microphone unavailable: ' + e.message);
  }
}

function connect(token) {
  const ws = new WebSocket(SB.wsUrl('/v1/agent?audio=l16/16000&access_token=' + encodeURIComponent(token)));
  ws.binaryType = 'arraybuffer';
  A.ws = ws;
  ws.onopen = () => status('signed in as ' + A.agent);
  ws.onmessage = e => (typeof e.data === 'string' ? onFrame(JSON.parse(e.data)) : onAudio(e.data));
  ws.onclose = e => {
    if (e.code === 4002) { status('signed in elsewhere'); return; }
    status('reconnecting… (' + e.code + ')');
    setTimeout(() => signIn(A.agent, A.secret).catch(err => status(err.message)), 2000);
  };
}

async function signIn(agent, secret) {
  const res = await fetch('/v1/token', {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', client_id: agent, client_secret: secret }),
  });
  if (!res.ok) throw new Error(res.status === 401 ? 'wrong agent id or secret' : 'sign-in failed (' + res.status + ')');
  const t = await res.json();
  A.agent = agent;
  A.secret = secret;
  connect(t.access_token);
}

function act(v) {
  const c = A.convs.get(A.current);
  if (!c || !c.open) return;
  send(Object.assign({ conversation: { id: c.id } }, v));
}

document.addEventListener('DOMContentLoaded', () => {
  $('signin').addEventListener('submit', async e => {
    e.preventDefault();
    const f = e.target;
    // Made on the click, so the browser lets it play (the call, the assignment sound).
    A.audio = A.audio || new AudioContext({ sampleRate: SBAudio.RATE });
    $('signin-error').textContent = '';
    try {
      await signIn(f.agent.value.trim(), f.secret.value);
      $('signin').hidden = true;
      $('desk').hidden = false;
    } catch (err) {
      $('signin-error').textContent = err.message;
    }
  });
  $('presence').addEventListener('change', e => send({ type: 'event', name: 'presence', value: e.target.value }));
  $('reply').addEventListener('submit', e => {
    e.preventDefault();
    const text = $('text').value;
    if (!text.trim()) return;
    act({ type: 'message', text, channelData: { clientActivityId: SB.id('a') } });
    const c = A.convs.get(A.current);
    if (c) { c.transcript.push({ type: 'message', text, from: { role: 'agent', name: A.agent }, timestamp: new Date().toISOString() }); renderConv(); }
    $('text').value = '';
  });
  let lastTyping = 0;
  $('text').addEventListener('input', () => {
    if (Date.now() - lastTyping > 2000) { lastTyping = Date.now(); act({ type: 'typing' }); }
  });
  const close = (what, v) => {
    const c = A.convs.get(A.current);
    act(v);
    if (c) { c.open = false; c.transcript.push({ type: 'event', name: what, from: { role: 'agent', name: A.agent } }); renderConv(); renderList(); }
  };
  $('transfer').addEventListener('click', () => {
    const q = $('queue').value.trim();
    close('transferred' + (q ? ' to ' + q : ''), { type: 'event', name: 'transfer', value: q ? { queue: q } : {} });
  });
  $('end').addEventListener('click', () => close('ended', { type: 'endOfConversation', value: { survey: false } }));
  $('end-survey').addEventListener('click', () => close('ended with a survey', { type: 'endOfConversation', value: { survey: true } }));
  $('mute').addEventListener('click', e => {
    A.muted = !A.muted;
    e.target.setAttribute('aria-pressed', String(A.muted));
    e.target.textContent = A.muted ? 'Unmute' : 'Mute';
  });
});
