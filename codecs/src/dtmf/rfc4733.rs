//! RFC 4733 telephone events: the 4-byte payload, and a receiver that turns a packet stream
//! into one report per digit.
//!
//! A sender repeats each event's packets while the key is held (same RTP timestamp, growing
//! duration) and sends the final, end-flagged packet three times for robustness (§2.5.1.4),
//! so a receiver that reported every packet would report a digit many times. [`Receiver`]
//! reports an event once, on the first packet of it that arrives (start, update or end, as the
//! first ones may be lost); an event is identified by its RTP timestamp (§2.5.1.2).

use super::Digit;
use crate::CodecError;

/// One telephone-event payload (RFC 4733 §2.3).
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// |     event     |E|R| volume    |          duration             |
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TelephoneEvent {
    /// Event code; 0–15 are the DTMF digits (see [`TelephoneEvent::digit`]).
    pub event: u8,
    /// The E bit: this is the end of the event.
    pub end: bool,
    /// Power level of the tone in −dBm0, 0–63 (larger is quieter).
    pub volume: u8,
    /// Duration so far, in RTP timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses a payload, which must be exactly 4 bytes. The reserved bit is ignored, as the
    /// RFC requires of receivers.
    pub fn parse(payload: &[u8]) -> Result<TelephoneEvent, CodecError> {
        let &[event, flags, d0, d1] = payload else {
            return Err(CodecError::BadTelephoneEvent { len: payload.len() });
        };
        Ok(TelephoneEvent {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }

    /// The payload bytes. The reserved bit is sent as zero and `volume` is truncated to its
    /// six bits.
    pub fn to_bytes(&self) -> [u8; 4] {
        let flags = (u8::from(self.end) << 7) | (self.volume & 0x3F);
        let [d0, d1] = self.duration.to_be_bytes();
        [self.event, flags, d0, d1]
    }

    /// The DTMF digit, if the event is one (codes 0–15).
    pub fn digit(&self) -> Option<Digit> {
        Digit::from_event(self.event)
    }
}

/// De-duplicates a stream of telephone-event packets into one report per DTMF digit.
#[derive(Debug, Clone, Default)]
pub struct Receiver {
    /// RTP timestamp and event code of the event last reported, and whether it has ended.
    current: Option<(u32, u8, bool)>,
}

impl Receiver {
    /// A receiver that has seen nothing.
    pub fn new() -> Receiver {
        Receiver::default()
    }

    /// Takes one packet: its RTP `timestamp` and parsed payload. Returns the digit if this
    /// packet is the first seen of a new DTMF event; repeats, updates and the repeated end
    /// packets of an event already reported return `None`, as do non-DTMF events.
    ///
    /// A new timestamp with the same event code while that event has not ended is the next
    /// segment of a long event (§2.5.1.3), not a new press, and is not reported again.
    pub fn receive(&mut self, timestamp: u32, event: &TelephoneEvent) -> Option<Digit> {
        let digit = event.digit()?;
        match self.current {
            Some((ts, code, _)) if ts == timestamp && code == event.event => {
                if event.end {
                    self.current = Some((ts, code, true));
                }
                None
            }
            Some((_, code, false)) if code == event.event => {
                self.current = Some((timestamp, code, event.end));
                None
            }
            _ => {
                self.current = Some((timestamp, event.event, event.end));
                Some(digit)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: u8, end: bool, duration: u16) -> TelephoneEvent {
        TelephoneEvent { event, end, volume: 10, duration }
    }

    #[test]
    fn parses_and_encodes_the_wire_layout() {
        // Digit 5, end bit, reserved bit set (must be ignored), volume 10, duration 800.
        let e = TelephoneEvent::parse(&[5, 0x80 | 0x40 | 10, 0x03, 0x20]).unwrap();
        assert_eq!(e, ev(5, true, 800));
        assert_eq!(e.to_bytes(), [5, 0x8A, 0x03, 0x20]);
        assert_eq!(e.digit(), Digit::from_char('5'));
        for len in [0, 3, 5, 8] {
            assert_eq!(TelephoneEvent::parse(&vec![0; len]), Err(CodecError::BadTelephoneEvent { len }));
        }
    }

    #[test]
    fn a_press_is_reported_once_despite_updates_and_three_end_packets() {
        let mut r = Receiver::new();
        let mut got = Vec::new();
        let packets = [
            (1000, ev(1, false, 160)),
            (1000, ev(1, false, 320)),
            (1000, ev(1, false, 480)),
            (1000, ev(1, true, 640)),
            (1000, ev(1, true, 640)),
            (1000, ev(1, true, 640)),
            // The same digit pressed again: a new timestamp after the end.
            (3000, ev(1, false, 160)),
            (3000, ev(1, true, 320)),
            (3000, ev(1, true, 320)),
            (3000, ev(1, true, 320)),
            // Another digit whose start packets were lost.
            (5000, ev(11, true, 800)),
            (5000, ev(11, true, 800)),
            (5000, ev(11, true, 800)),
        ];
        for (ts, e) in packets {
            got.extend(r.receive(ts, &e));
        }
        let s: String = got.iter().map(|d| d.as_char()).collect();
        assert_eq!(s, "11#");
    }

    #[test]
    fn long_event_segments_are_one_press_and_non_dtmf_events_are_ignored() {
        let mut r = Receiver::new();
        assert_eq!(r.receive(0, &ev(7, false, 65535)), Digit::from_char('7'));
        assert_eq!(r.receive(65535, &ev(7, false, 1000)), None);
        assert_eq!(r.receive(65535, &ev(7, true, 2000)), None);
        // 32 is a fax tone (ANS), not a digit.
        assert_eq!(r.receive(90000, &ev(32, false, 160)), None);
        assert_eq!(r.receive(99999, &ev(7, false, 160)), Digit::from_char('7'));
    }
}
