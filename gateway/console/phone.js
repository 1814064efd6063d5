// A phone call from the browser on the native IVR connector endpoint (/v1/voice, SPEC
// §5.1), in l16/16000: the microphone goes to the gateway, the menu's and the agent's
// audio is played, the keypad sends DTMF, "Hang up" ends the call.
'use strict';

const P = { ws: null, audio: null, stream: null, ended: false, stats: { framesIn: 0, framesOut: 0, peakIn: 0 } };
window.sbPhone = P;
const $ = id => document.getElementById(id);
function status(t) { $('status').textContent = t; }

function dial(workstream, number) {
  const ws = new WebSocket(SB.wsUrl('/v1/voice'));
  ws.binaryType = 'arraybuffer';
  P.ws = ws;
  const player = SBAudio.player(P.audio, peak => {
    P.stats.peakIn = peak;
    $('meter-in').style.width = Math.min(100, peak * 200) + '%';
  }, 0);
  ws.onopen = () => ws.send(JSON.stringify({
    type: 'event', name: 'session.start',
    value: { workstream, media: { encoding: 'l16', sampleRate: SBAudio.RATE }, context: number ? { CustomerPhoneNumber: number } : {} },
  }));
  ws.onmessage = e => {
    if (typeof e.data !== 'string') { player.play(e.data); P.stats.framesIn = player.frames; return; }
    const v = JSON.parse(e.data);
    if (v.name === 'session.started') {
      P.stream = v.value.stream;
      $('conv-id').textContent = v.value.conversationId;
      $('dial').hidden = true;
      $('call').hidden = false;
      status('on the call');
    } else if (v.name === 'error') {
      $('dial-error').textContent = v.value.message;
    } else if (v.type === 'endOfConversation') {
      P.ended = true;
      status('call ended');
    }
  };
  ws.onclose = e => { P.ended = true; status('call ended (' + e.code + ')'); };
}

document.addEventListener('DOMContentLoaded', () => {
  $('dial').addEventListener('submit', async e => {
    e.preventDefault();
    const f = e.target;
    P.audio = P.audio || new AudioContext({ sampleRate: SBAudio.RATE });
    $('dial-error').textContent = '';
    try {
      await SBAudio.mic(
        P.audio,
        () => (P.ended ? null : P.stream),
        frame => {
          // The caller's frames carry no stream number on /v1/voice: audio only.
          if (P.ws && P.ws.readyState === WebSocket.OPEN) { P.ws.send(frame.slice(4)); P.stats.framesOut++; }
        },
        peak => { $('meter-out').style.width = Math.min(100, peak * 200) + '%'; },
      );
    } catch (err) {
      $('dial-error').textContent = 'microphone unavailable: ' + err.message;
      return;
    }
    dial(f.workstream.value.trim(), f.number.value.trim());
  });
  for (const k of ['1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '0', '#']) {
    $('keypad').append(SB.el('button', {
      type: 'button', class: 'secondary', 'aria-label': 'key ' + k, text: k,
      onclick: () => { if (P.ws && P.ws.readyState === WebSocket.OPEN) P.ws.send(JSON.stringify({ type: 'event', name: 'dtmf', value: k })); },
    }));
  }
  $('hangup').addEventListener('click', () => {
    if (P.ws && P.ws.readyState === WebSocket.OPEN) P.ws.send(JSON.stringify({ type: 'endOfConversation' }));
    P.ended = true;
  });
});
