// The supervisor page: the admin API (SPEC §7) read every two seconds: queues with their
// waiting conversations and a live chart of the longest wait, agents, bots (disconnect and
// connect), conversation search and one conversation's routing history and transcript.
'use strict';

const S = { token: null, history: new Map(), watching: null, timer: null };
window.sbSupervisor = S;
const $ = id => document.getElementById(id);
const HISTORY_MS = 5 * 60 * 1000;
const COLORS = ['#2458d3', '#b3261e', '#1c7c43', '#a15c00', '#6b3fa0', '#00838f'];

async function api(method, path, body) {
  const res = await fetch('/v1/admin/' + path, {
    method,
    headers: Object.assign({ authorization: 'Bearer ' + S.token }, body ? { 'content-type': 'application/json' } : {}),
    body: body ? JSON.stringify(body) : undefined,
  });
  if (res.status === 401) throw new Error('the admin token was refused');
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (e) { /* not JSON */ }
  if (!res.ok) throw new Error((json && (json.message || (json.error && json.error.message) || json.error)) || res.status + ' ' + text);
  return json;
}

// A list answer: `{"queues":[…]}` and the like (docs/admin-openapi.json).
function list(j, key) {
  return (j && j[key]) || [];
}

function ms(v) {
  if (v === undefined || v === null) return null;
  return typeof v === 'number' ? v : Date.parse(v);
}

function ago(t) {
  if (t === null) return '';
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  return s < 90 ? s + ' s' : Math.round(s / 60) + ' min';
}

function pill(text) { return SB.el('span', { class: 'pill ' + text }, text); }

function waitSince(w) {
  return ms(w.waitingSinceMs);
}

function renderQueues(queues) {
  const tb = SB.clear($('queues'));
  const now = Date.now();
  for (const q of queues) {
    const waiting = q.waiting || [];
    const oldest = waiting.reduce((m, w) => Math.min(m, waitSince(w) || now), now);
    const longest = waiting.length ? (now - oldest) / 1000 : 0;
    const members = (q.members || []).map(m => (m.name || m.id) + ' ' + (m.load || 0) + '/' + (m.capacity || 0)).join(', ');
    tb.append(SB.el('tr', {}, SB.el('td', {}, q.name), SB.el('td', {}, String(waiting.length)), SB.el('td', {}, waiting.length ? ago(oldest) : '—'), SB.el('td', {}, members)));
    const h = S.history.get(q.name) || [];
    h.push([now, longest]);
    while (h.length && h[0][0] < now - HISTORY_MS) h.shift();
    S.history.set(q.name, h);
  }
  drawChart();
}

function drawChart() {
  const c = $('chart');
  const ctx = c.getContext('2d');
  const w = c.width, h = c.height, pad = 28;
  ctx.clearRect(0, 0, w, h);
  const now = Date.now();
  let max = 10;
  for (const pts of S.history.values()) for (const [, v] of pts) max = Math.max(max, v);
  ctx.strokeStyle = '#d9dde5';
  ctx.fillStyle = '#5b6475';
  ctx.font = '11px system-ui';
  for (let i = 0; i <= 4; i++) {
    const y = h - pad - (h - 2 * pad) * i / 4;
    ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(w - 4, y); ctx.stroke();
    ctx.fillText(String(Math.round(max * i / 4)), 2, y + 4);
  }
  const legend = [];
  let i = 0;
  for (const [name, pts] of S.history) {
    const color = COLORS[i++ % COLORS.length];
    legend.push(name);
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    pts.forEach(([t, v], k) => {
      const x = pad + (w - pad - 4) * (1 - (now - t) / HISTORY_MS);
      const y = h - pad - (h - 2 * pad) * v / max;
      if (k === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
    ctx.fillStyle = color;
    ctx.fillRect(pad + 110 * (i - 1), h - 12, 10, 10);
    ctx.fillStyle = '#1d2330';
    ctx.fillText(name, pad + 110 * (i - 1) + 14, h - 3);
  }
  $('legend').textContent = legend.length ? 'Queues: ' + legend.join(', ') : '';
}

function renderAgents(agents) {
  const tb = SB.clear($('agents'));
  for (const a of agents) {
    const presence = a.presence || (a.online ? 'available' : 'offline');
    tb.append(SB.el('tr', {}, SB.el('td', {}, a.name || a.id), SB.el('td', {}, pill(presence)), SB.el('td', {}, (a.load || 0) + ' / ' + (a.capacity || 0))));
  }
}

function renderBots(bots) {
  const tb = SB.clear($('bots'));
  for (const b of bots) {
    const name = b.name || b.id;
    const disabled = b.disabled === true;
    const state = b.state || (disabled ? 'disconnected' : b.online ? 'connected' : 'offline');
    const button = disabled
      ? SB.el('button', { type: 'button', class: 'secondary', onclick: () => botAction(name, 'connect') }, 'Connect')
      : SB.el('button', { type: 'button', class: 'danger', onclick: () => botAction(name, 'disconnect') }, 'Disconnect bot');
    tb.append(SB.el('tr', {}, SB.el('td', {}, name), SB.el('td', {}, pill(state)), SB.el('td', {}, (b.load || 0) + ' / ' + (b.capacity || 0)), SB.el('td', {}, button)));
  }
}

async function botAction(name, what) {
  try {
    await api('POST', 'bots/' + encodeURIComponent(name) + '/' + what);
    await refresh();
  } catch (e) { $('status').textContent = e.message; }
}

function convRow(c) {
  const id = c.id;
  return SB.el('tr', {},
    SB.el('td', {}, SB.el('a', { href: '#' + id, onclick: ev => { ev.preventDefault(); open(id); } }, id)),
    SB.el('td', {}, c.workstream || ''), SB.el('td', {}, c.channel || ''), SB.el('td', {}, c.state || ''),
    SB.el('td', {}, c.queue || ''), SB.el('td', {}, c.holder || ''), SB.el('td', {}, ago(waitSince(c))));
}

async function search() {
  const f = $('search');
  const q = new URLSearchParams();
  for (const k of ['state', 'queue', 'holder']) if (f[k].value.trim()) q.set(k, f[k].value.trim());
  const j = await api('GET', 'conversations' + (q.toString() ? '?' + q : ''));
  const tb = SB.clear($('convs'));
  for (const c of list(j, 'conversations')) tb.append(convRow(c));
}

async function open(id) {
  S.watching = id;
  $('detail').hidden = false;
  await renderDetail();
}

async function renderDetail() {
  if (!S.watching) return;
  const c = await api('GET', 'conversations/' + encodeURIComponent(S.watching));
  $('detail-h').textContent = 'Conversation ' + S.watching + ' — ' + (c.state || '') + (c.holder ? ' with ' + c.holder : '');
  const tb = SB.clear($('routing'));
  for (const r of c.routing || []) {
    tb.append(SB.el('tr', {},
      SB.el('td', {}, SB.time(ms(r.atMs))), SB.el('td', {}, r.trigger || ''),
      SB.el('td', {}, r.rule || (r.fallback ? '(fallback)' : '—')), SB.el('td', {}, r.queue || ''), SB.el('td', {}, r.member || '—'),
      SB.el('td', {}, r.reason || (r.member ? '' : 'waiting for a member with free capacity'))));
  }
  const dl = SB.clear($('context'));
  for (const [k, v] of Object.entries(c.context || {})) dl.append(SB.el('dt', {}, k), SB.el('dd', {}, typeof v === 'object' ? JSON.stringify(v) : String(v)));
  const ol = SB.clear($('transcript'));
  for (const a of c.transcript || []) {
    const text = SB.line(a);
    if (text === null || text === '') continue;
    const who = SB.who(a);
    ol.append(SB.el('li', { class: a.type === 'message' ? who.role : 'event' }, SB.el('span', { class: 'who' }, who.name + ' · ' + SB.time(a.timestamp)), text));
  }
}

async function refresh() {
  const [queues, agents, bots] = await Promise.all([api('GET', 'queues'), api('GET', 'agents'), api('GET', 'bots')]);
  renderQueues(list(queues, 'queues'));
  renderAgents(list(agents, 'agents'));
  renderBots(list(bots, 'bots'));
  if (S.watching && $('watch').checked) await renderDetail();
  $('status').textContent = 'updated ' + SB.time();
}

document.addEventListener('DOMContentLoaded', () => {
  $('signin').addEventListener('submit', async e => {
    e.preventDefault();
    S.token = e.target.token.value;
    $('signin-error').textContent = '';
    try {
      await refresh();
      await search();
      $('signin').hidden = true;
      $('board').hidden = false;
      S.timer = setInterval(() => refresh().catch(err => { $('status').textContent = err.message; }), 2000);
    } catch (err) {
      $('signin-error').textContent = err.message;
    }
  });
  $('search').addEventListener('submit', e => { e.preventDefault(); search().catch(err => { $('status').textContent = err.message; }); });
});
