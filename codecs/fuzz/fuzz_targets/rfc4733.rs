//! The RFC 4733 payload parser and receiver on arbitrary packets: no panic, and whatever
//! parses encodes back to the same bytes (less the reserved bit).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_codecs::dtmf::rfc4733::{Receiver, TelephoneEvent};

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = TelephoneEvent::parse(data) {
        let expected = [data[0], data[1] & !0x40, data[2], data[3]];
        assert_eq!(event.to_bytes(), expected);
    }
    // Treat the input as a stream of (timestamp, payload) packets of 6 bytes each.
    let mut receiver = Receiver::new();
    for packet in data.chunks_exact(6) {
        let timestamp = u32::from(u16::from_be_bytes([packet[0], packet[1]]));
        if let Ok(event) = TelephoneEvent::parse(&packet[2..]) {
            let _ = receiver.receive(timestamp, &event);
        }
    }
});
