// Shared helpers of the console pages: element building, the WebSocket address, ids.
'use strict';

const SB = {
  wsUrl(path) {
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + path;
  },
  // el('li', {class: 'x', onclick: f}, 'text', child…): text is always text, never HTML.
  el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children) {
      if (c === undefined || c === null) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  },
  clear(e) {
    while (e.firstChild) e.firstChild.remove();
    return e;
  },
  id(prefix) {
    return prefix + '-' + Date.now().toString(36) + '-' + Math.random().toString(36).slice(2, 8);
  },
  time(ts) {
    const d = ts ? new Date(ts) : new Date();
    return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  },
  // Who wrote an activity, as a CSS class and a label.
  who(a) {
    const role = (a.from && a.from.role) || 'system';
    return { role, name: (a.from && a.from.name) || role };
  },
  // One line of a transcript: messages in full, events as a short note.
  line(a) {
    if (a.type === 'message') return a.text || (a.attachments && a.attachments.length ? '[attachment]' : '');
    if (a.type === 'endOfConversation') return 'ended the conversation' + (a.text ? ': ' + a.text : '');
    if (a.type === 'event') {
      switch (a.name) {
        case 'conversation.assigned': return (a.value && a.value.name ? a.value.name : 'someone') + ' joined' + (a.value && a.value.queue ? ' (' + a.value.queue + ')' : '');
        case 'handoff.initiate': return 'handed over' + (a.text ? ': ' + a.text : '');
        case 'survey.request': return 'asked for a rating';
        case 'survey.response': return 'rated ' + (a.value && a.value.rating) + '/5' + (a.value && a.value.comment ? ': ' + a.value.comment : '');
        case 'dtmf': return 'pressed ' + a.value;
        default: return a.name;
      }
    }
    return null;
  },
};
