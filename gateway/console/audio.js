// Call audio in the browser, for the agent page and the phone page: binary frames of
// [stream u32 big-endian][L16 little-endian at 16 kHz] (SPEC §5.3) played back to back with
// Web Audio, and the microphone cut into 20 ms frames of the same shape.
'use strict';

const SBAudio = {
  RATE: 16000,
  FRAME: 320, // 20 ms at 16 kHz

  // A player on `ctx` (an AudioContext at 16 kHz); `onLevel(peak)` after every frame.
  // `header` is 4 where frames start with the stream number (a holder's), 0 where they are
  // audio only (a call leg's own).
  player(ctx, onLevel, header = 4) {
    let playAt = 0;
    let peakHold = 0;
    return {
      frames: 0,
      play(buf) {
        if (buf.byteLength <= header) return;
        const view = new DataView(buf);
        const n = (buf.byteLength - header) >> 1;
        const pcm = new Float32Array(n);
        let peak = 0;
        for (let i = 0; i < n; i++) {
          const s = view.getInt16(header + 2 * i, true) / 32768;
          pcm[i] = s;
          peak = Math.max(peak, Math.abs(s));
        }
        this.frames++;
        peakHold = Math.max(peakHold * 0.9, peak);
        if (onLevel) onLevel(peakHold);
        const b = ctx.createBuffer(1, n, SBAudio.RATE);
        b.copyToChannel(pcm, 0);
        const src = ctx.createBufferSource();
        src.buffer = b;
        src.connect(ctx.destination);
        const now = ctx.currentTime;
        if (playAt < now || playAt > now + 0.5) playAt = now + 0.06; // a small jitter buffer
        src.start(playAt);
        playAt += n / SBAudio.RATE;
      },
    };
  },

  // The microphone on `ctx`: calls `send(frame)` with each 20 ms frame for the stream
  // `stream()` answers (none: nothing is sent), and `onLevel(peak)`. `muted()` sends silence.
  async mic(ctx, stream, send, onLevel, muted) {
    const media = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
    const src = ctx.createMediaStreamSource(media);
    const proc = ctx.createScriptProcessor(1024, 1, 1);
    let pending = new Int16Array(0);
    let peakHold = 0;
    proc.onaudioprocess = e => {
      const input = e.inputBuffer.getChannelData(0);
      const chunk = new Int16Array(input.length);
      let peak = 0;
      const mute = muted && muted();
      for (let i = 0; i < input.length; i++) {
        const s = mute ? 0 : Math.max(-1, Math.min(1, input[i]));
        peak = Math.max(peak, Math.abs(s));
        chunk[i] = s * 32767;
      }
      peakHold = Math.max(peakHold * 0.9, peak);
      if (onLevel) onLevel(peakHold);
      const n = stream();
      if (n === null || n === undefined) { pending = new Int16Array(0); return; }
      const all = new Int16Array(pending.length + chunk.length);
      all.set(pending);
      all.set(chunk, pending.length);
      let off = 0;
      for (; off + SBAudio.FRAME <= all.length; off += SBAudio.FRAME) {
        const out = new ArrayBuffer(4 + SBAudio.FRAME * 2);
        const dv = new DataView(out);
        dv.setUint32(0, n, false);
        for (let i = 0; i < SBAudio.FRAME; i++) dv.setInt16(4 + 2 * i, all[off + i], true);
        send(out);
      }
      pending = all.slice(off);
    };
    src.connect(proc);
    proc.connect(ctx.destination); // a ScriptProcessor runs only when connected; it outputs silence
    return { media, proc };
  },
};
