// The customer widget: a customer's chat over /v1/chat (SPEC §4.1), with queue position,
// the survey, and resume after a dropped connection.
'use strict';

const W = { ws: null, conv: null, token: null, watermark: 0, seen: new Set(), ended: false, name: 'Customer', pending: [] };
window.sbWidget = W;
const $ = id => document.getElementById(id);

function status(text) { $('status').textContent = text; }

function show(a) {
  if (a.seq) {
    if (W.seen.has(a.seq)) return;
    W.seen.add(a.seq);
    W.watermark = Math.max(W.watermark, a.seq);
  }
  const text = SB.line(a);
  if (text === null || text === '') return;
  const who = SB.who(a);
  const cls = a.type === 'message' ? who.role : 'event';
  $('transcript').append(SB.el('li', { class: cls }, SB.el('span', { class: 'who' }, who.name + ' · ' + SB.time(a.timestamp)), text));
  $('transcript').lastChild.scrollIntoView({ block: 'nearest' });
}

function mine(text) {
  $('transcript').append(SB.el('li', { class: 'mine' }, SB.el('span', { class: 'who' }, W.name + ' · ' + SB.time()), text));
}

let typingTimer;
function onFrame(v) {
  if (v.name === 'session.started') {
    W.conv = v.value.conversationId;
    W.token = v.value.token;
    $('conv-id').textContent = W.conv;
    $('chat').hidden = false;
    $('start').hidden = true;
    status(W.ended ? 'ended' : 'connected');
    if (!W.ended) $('text').focus();
    for (const a of W.pending.splice(0)) W.ws.send(JSON.stringify(a));
    return;
  }
  if (v.name === 'ack') return;
  if (v.name === 'error') { $('position').textContent = 'Not sent: ' + v.value.message; return; }
  if (v.name === 'queue.position') { $('position').textContent = 'You are number ' + v.value.position + ' in the queue.'; return; }
  if (v.type === 'typing') {
    $('typing').textContent = SB.who(v).name + ' is typing…';
    clearTimeout(typingTimer);
    typingTimer = setTimeout(() => { $('typing').textContent = ''; }, 3000);
    return;
  }
  $('typing').textContent = '';
  if (v.name === 'conversation.assigned') $('position').textContent = '';
  if (v.name === 'survey.request') $('survey').hidden = false;
  if (v.type === 'endOfConversation') {
    W.ended = true;
    $('reply').hidden = true;
    status('ended');
  }
  show(v);
}

function connect(first) {
  const ws = new WebSocket(SB.wsUrl('/v1/chat'));
  W.ws = ws;
  ws.onopen = () => ws.send(JSON.stringify(first()));
  ws.onmessage = e => onFrame(JSON.parse(e.data));
  ws.onclose = e => {
    if (W.ended || e.code === 1000 || e.code === 4001) { status('closed'); return; }
    status('reconnecting…');
    // Resume from the watermark: nothing is lost or repeated.
    setTimeout(() => connect(resume), 1500);
  };
}

function resume() {
  return { type: 'event', name: 'session.resume', value: { conversationId: W.conv, token: W.token, watermark: W.watermark } };
}

// Sends now, or after resuming: an ended conversation's socket is closed, and the gateway
// lets the customer resume it once to answer the survey it asked for.
function send(activity) {
  if (W.ws && W.ws.readyState === WebSocket.OPEN) {
    W.ws.send(JSON.stringify(activity));
  } else if (W.conv) {
    W.pending.push(activity);
    if (!W.ws || W.ws.readyState === WebSocket.CLOSED) connect(resume);
  }
}

document.addEventListener('DOMContentLoaded', () => {
  $('start').addEventListener('submit', e => {
    e.preventDefault();
    const f = e.target;
    W.name = f.name.value.trim() || 'Customer';
    connect(() => ({ type: 'event', name: 'session.start', value: { workstream: f.workstream.value.trim(), user: { name: W.name } } }));
  });
  $('reply').addEventListener('submit', e => {
    e.preventDefault();
    const text = $('text').value;
    if (!text.trim()) return;
    send({ type: 'message', text, channelData: { clientActivityId: SB.id('w') } });
    mine(text);
    $('text').value = '';
  });
  let lastTyping = 0;
  $('text').addEventListener('input', () => {
    if (Date.now() - lastTyping > 2000) { lastTyping = Date.now(); send({ type: 'typing' }); }
  });
  $('end').addEventListener('click', () => send({ type: 'endOfConversation' }));
  for (let r = 1; r <= 5; r++) {
    $('stars').append(SB.el('button', {
      type: 'button', 'aria-label': r + ' of 5', text: '★'.repeat(r),
      onclick: () => {
        send({ type: 'event', name: 'survey.response', value: { rating: r, comment: $('comment').value } });
        $('survey-done').textContent = 'Thank you! You rated us ' + r + ' of 5.';
        for (const b of $('stars').querySelectorAll('button')) b.disabled = true;
      },
    }));
  }
});
