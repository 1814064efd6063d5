// The agent workspace: an agent's connection on /v1/agent (SPEC §4.4) in a browser.
// Conversations arrive as work items (`conversation.assigned`, with the bot's transcript,
// the context variables and the bot's summary); voice calls arrive as work items with
// `media` and binary frames ([stream u32 BE][L16 LE, 16 kHz]), played with Web Audio; the
// microphone is sent back the same way.
'use strict';

const RATE = 16000;
const FRAME = RATE / 50; // 20 ms
const A = {
  ws: null, convs: new Map(), order: [], current: null, unread: 0,
  audio: null, mic: null, muted: false, playAt: 0,
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

// Caller audio: [stream u32 BE][L16 LE at 16 kHz], scheduled back to back.
function onAudio(buf) {
  if (!A.audio || buf.byteLength <= 4) return;
  const view = new DataView(buf);
  const n = (buf.byteLength - 4) >> 1;
  const pcm = new Float32Array(n);
  let peak = 0;
  for (let i = 0; i < n; i++) {
    const s = view.getInt16(4 + 2 * i, true) / 32768;
    pcm[i] = s;
    peak = Math.max(peak, Math.abs(s));
  }
  A.stats.framesIn++;
  A.stats.peakIn = Math.max(A.stats.peakIn * 0.9, peak);
  $('meter-in').style.width = Math.min(100, A.stats.peakIn * 200) + '%';
  const b = A.audio.createBuffer(1, n, RATE);
  b.copyToChannel(pcm, 0);
  const src = A.audio.createBufferSource();
  src.buffer = b;
  src.connect(A.audio.destination);
  const now = A.audio.currentTime;
  if (A.playAt < now || A.playAt > now + 0.5) A.playAt = now + 0.06; // a small jitter buffer
  src.start(A.playAt);
  A.playAt += n / RATE;
}

// The microphone: 20 ms frames of L16 LE for the call the agent has open.
async function startMic() {
  if (A.mic || !navigator.mediaDevices) return;
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
    const src = A.audio.createMediaStreamSource(stream);
    const proc = A.audio.createScriptProcessor(1024, 1, 1);
    let pending = new Int16Array(0);
    proc.onaudioprocess = e => {
      const c = A.convs.get(A.current);
      const media = c && c.open && c.media;
      const input = e.inputBuffer.getChannelData(0);
      let peak = 0;
      const chunk = new Int16Array(input.length);
      for (let i = 0; i < input.length; i++) {
        const s = A.muted ? 0 : Math.max(-1, Math.min(1, input[i]));
        peak = Math.max(peak, Math.abs(s));
        chunk[i] = s * 32767;
      }
      A.stats.peakOut = Math.max(A.stats.peakOut * 0.9, peak);
      $('meter-out').style.width = Math.min(100, A.stats.peakOut * 200) + '%';
      if (!media) return;
      const all = new Int16Array(pending.length + chunk.length);
      all.set(pending);
      all.set(chunk, pending.length);
      let off = 0;
      for (; off + FRAME <= all.length; off += FRAME) {
        const out = new ArrayBuffer(4 + FRAME * 2);
        const dv = new DataView(out);
        dv.setUint32(0, media.stream, false);
        for (let i = 0; i < FRAME; i++) dv.setInt16(4 + 2 * i, all[off + i], true);
        if (A.ws && A.ws.readyState === WebSocket.OPEN) { A.ws.send(out); A.stats.framesOut++; }
      }
      pending = all.slice(off);
    };
    src.connect(proc);
    proc.connect(A.audio.destination); // a ScriptProcessor runs only when connected; it outputs silence
    A.mic = { stream, proc };
  } catch (e) {
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
    A.audio = A.audio || new AudioContext({ sampleRate: RATE });
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
