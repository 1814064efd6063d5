//! DTMF: in-band detection ([`Detector`], Goertzel filters, ITU-T Q.24 timing), in-band
//! generation ([`generate`]) and RFC 4733 telephone-event payloads ([`rfc4733`]).
//!
//! A [`Digit`] is one of the sixteen DTMF events of RFC 4733 (codes 0–15: `0`–`9`, `*`, `#`,
//! `A`–`D`); the same type comes out of the in-band detector and the RFC 4733 receiver, so
//! the gateway reports a digit the same way whichever path it arrived by.

mod detect;
mod generate;
pub mod rfc4733;

use std::fmt;

pub use detect::Detector;
pub use generate::generate;

/// The low-group (row) frequencies in Hz.
pub const ROW_HZ: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
/// The high-group (column) frequencies in Hz.
pub const COL_HZ: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];

/// Keypad layout: `KEYPAD[row][col]`.
const KEYPAD: [[char; 4]; 4] = [['1', '2', '3', 'A'], ['4', '5', '6', 'B'], ['7', '8', '9', 'C'], ['*', '0', '#', 'D']];

/// One DTMF digit, stored as its RFC 4733 event code (0–15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digit(u8);

impl Digit {
    /// All sixteen digits, in event-code order.
    pub const ALL: [Digit; 16] = {
        let mut all = [Digit(0); 16];
        let mut i = 0;
        while i < 16 {
            all[i] = Digit(i as u8);
            i += 1;
        }
        all
    };

    /// The digit for an RFC 4733 event code, if it is one of the DTMF events 0–15.
    pub const fn from_event(code: u8) -> Option<Digit> {
        if code < 16 { Some(Digit(code)) } else { None }
    }

    /// The RFC 4733 event code.
    pub const fn event(self) -> u8 {
        self.0
    }

    /// The digit for a keypad character: `0`–`9`, `*`, `#`, `A`–`D` (or `a`–`d`).
    pub const fn from_char(c: char) -> Option<Digit> {
        let code = match c {
            '0'..='9' => c as u8 - b'0',
            '*' => 10,
            '#' => 11,
            'A'..='D' => c as u8 - b'A' + 12,
            'a'..='d' => c as u8 - b'a' + 12,
            _ => return None,
        };
        Some(Digit(code))
    }

    /// The keypad character (`A`–`D` upper-case), as sent in the gateway's `dtmf` events.
    pub const fn as_char(self) -> char {
        match self.0 {
            0..=9 => (b'0' + self.0) as char,
            10 => '*',
            11 => '#',
            _ => (b'A' + self.0 - 12) as char,
        }
    }

    /// `(row, col)` indices into [`ROW_HZ`] and [`COL_HZ`].
    pub fn position(self) -> (usize, usize) {
        let c = self.as_char();
        for (r, row) in KEYPAD.iter().enumerate() {
            if let Some(col) = row.iter().position(|&k| k == c) {
                return (r, col);
            }
        }
        unreachable!("every digit is on the keypad")
    }

    /// `(low, high)` tone frequencies in Hz.
    pub fn frequencies(self) -> (f64, f64) {
        let (r, c) = self.position();
        (ROW_HZ[r], COL_HZ[c])
    }

    fn at(row: usize, col: usize) -> Digit {
        Digit::from_char(KEYPAD[row][col]).expect("keypad characters are digits")
    }
}

impl fmt::Display for Digit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_char())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_round_trip_through_chars_and_event_codes() {
        let chars: String = Digit::ALL.iter().map(|d| d.as_char()).collect();
        assert_eq!(chars, "0123456789*#ABCD");
        for d in Digit::ALL {
            assert_eq!(Digit::from_char(d.as_char()), Some(d));
            assert_eq!(Digit::from_event(d.event()), Some(d));
            let (r, c) = d.position();
            assert_eq!(Digit::at(r, c), d);
        }
        assert_eq!(Digit::from_char('d'), Digit::from_char('D'));
        assert_eq!(Digit::from_char('E'), None);
        assert_eq!(Digit::from_event(16), None);
        assert_eq!(Digit::from_char('5').unwrap().frequencies(), (770.0, 1336.0));
    }
}
