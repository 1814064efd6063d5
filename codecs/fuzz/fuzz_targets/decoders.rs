//! Every decoder and the whole transcoding pipeline on arbitrary bytes: nothing may panic, and
//! output sizes must follow from input sizes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_codecs::g711::{alaw, ulaw};
use switchboard_codecs::{Format, Framer, Transcoder, l16};

fuzz_target!(|data: &[u8]| {
    let mut samples = Vec::new();
    ulaw::decode_into(data, &mut samples);
    alaw::decode_into(data, &mut samples);
    assert_eq!(samples.len(), 2 * data.len());
    let le = l16::decode_le(data, &mut samples);
    let be = l16::decode_be(data, &mut samples);
    assert_eq!(le.is_ok(), data.len() % 2 == 0);
    assert_eq!(be.is_ok(), data.len() % 2 == 0);

    // The first byte picks the format pair; the rest is audio, fed in two pieces.
    let Some((&selector, audio)) = data.split_first() else {
        return;
    };
    let from = Format::ALL[usize::from(selector & 0x0F) % Format::ALL.len()];
    let to = Format::ALL[usize::from(selector >> 4) % Format::ALL.len()];
    let mut t = Transcoder::new(from, to);
    let mut out = Vec::new();
    let (a, b) = audio.split_at(audio.len() / 2);
    let _ = t.process(a, &mut out);
    let _ = t.process(b, &mut out);

    let mut framer = Framer::new(to);
    framer.push(&out);
    for frame in framer.frames() {
        assert_eq!(frame.len(), to.bytes_per_frame());
    }
    let _ = framer.flush();
});
