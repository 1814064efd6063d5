//! The in-band DTMF detector on arbitrary audio at every supported rate: no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_codecs::dtmf::Detector;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, audio)) = data.split_first() else {
        return;
    };
    let rate = [8000, 16000, 24000, 48000][usize::from(selector % 4)];
    let samples: Vec<i16> = audio.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
    let mut detector = Detector::new(rate).expect("supported rate");
    let mut digits = Vec::new();
    // Odd-sized pieces, to exercise state carried across calls.
    for piece in samples.chunks(usize::from(selector).max(1)) {
        detector.process(piece, &mut digits);
    }
});
