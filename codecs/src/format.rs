//! Audio formats the gateway speaks (SPEC §5.3): `pcmu/8000`, `pcma/8000` and `l16` at 8, 16,
//! 24 or 48 kHz, as a small validated value type with `FromStr` and `Display`.
//!
//! A [`Format`] can only hold one of those six combinations, so code downstream never has to
//! handle "µ-law at 16 kHz".

use std::fmt;
use std::str::FromStr;

use crate::CodecError;

/// Length of one frame on the wire: the gateway frames voice in 20 ms units.
pub const FRAME_MS: u32 = 20;

/// How samples are coded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// G.711 µ-law, one byte per sample.
    Pcmu,
    /// G.711 A-law, one byte per sample.
    Pcma,
    /// 16-bit signed linear PCM, little-endian on the wire.
    L16,
}

impl Encoding {
    /// The lower-case name used in format strings and `session.start` (`pcmu`, `pcma`, `l16`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Encoding::Pcmu => "pcmu",
            Encoding::Pcma => "pcma",
            Encoding::L16 => "l16",
        }
    }

    /// Bytes per sample on the wire.
    pub const fn bytes_per_sample(self) -> usize {
        match self {
            Encoding::Pcmu | Encoding::Pcma => 1,
            Encoding::L16 => 2,
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Encoding {
    type Err = CodecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pcmu" => Ok(Encoding::Pcmu),
            "pcma" => Ok(Encoding::Pcma),
            "l16" => Ok(Encoding::L16),
            other => Err(CodecError::UnsupportedFormat(other.to_owned())),
        }
    }
}

/// An encoding at a sample rate; always one of the six formats of SPEC §5.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Format {
    encoding: Encoding,
    sample_rate: u32,
}

impl Format {
    /// `pcmu/8000`: what IVR connectors and Twilio send.
    pub const PCMU: Format = Format::known(Encoding::Pcmu, 8000);
    /// `pcma/8000`.
    pub const PCMA: Format = Format::known(Encoding::Pcma, 8000);
    /// `l16/8000`.
    pub const L16_8K: Format = Format::known(Encoding::L16, 8000);
    /// `l16/16000`: the default for bots and agents.
    pub const L16_16K: Format = Format::known(Encoding::L16, 16000);
    /// `l16/24000`.
    pub const L16_24K: Format = Format::known(Encoding::L16, 24000);
    /// `l16/48000`.
    pub const L16_48K: Format = Format::known(Encoding::L16, 48000);
    /// Every supported format.
    pub const ALL: [Format; 6] =
        [Format::PCMU, Format::PCMA, Format::L16_8K, Format::L16_16K, Format::L16_24K, Format::L16_48K];

    const fn known(encoding: Encoding, sample_rate: u32) -> Format {
        Format { encoding, sample_rate }
    }

    /// The format for an encoding and rate, as `session.start` gives them separately; fails for
    /// any combination outside SPEC §5.3 (G.711 is only defined at 8 kHz).
    pub fn new(encoding: Encoding, sample_rate: u32) -> Result<Format, CodecError> {
        let ok = match encoding {
            Encoding::Pcmu | Encoding::Pcma => sample_rate == 8000,
            Encoding::L16 => matches!(sample_rate, 8000 | 16000 | 24000 | 48000),
        };
        if ok {
            Ok(Format::known(encoding, sample_rate))
        } else {
            Err(CodecError::UnsupportedFormat(format!("{encoding}/{sample_rate}")))
        }
    }

    /// How samples are coded.
    pub const fn encoding(self) -> Encoding {
        self.encoding
    }

    /// Samples per second.
    pub const fn sample_rate(self) -> u32 {
        self.sample_rate
    }

    /// Samples in one 20 ms frame.
    pub const fn samples_per_frame(self) -> usize {
        (self.sample_rate * FRAME_MS / 1000) as usize
    }

    /// Bytes in one 20 ms frame on the wire.
    pub const fn bytes_per_frame(self) -> usize {
        self.samples_per_frame() * self.encoding.bytes_per_sample()
    }

    /// The byte that encodes silence: 0xFF for µ-law, 0xD5 for A-law, 0 for L16.
    pub const fn silence_byte(self) -> u8 {
        match self.encoding {
            Encoding::Pcmu => 0xFF,
            Encoding::Pcma => 0xD5,
            Encoding::L16 => 0,
        }
    }
}

impl Default for Format {
    /// `l16/16000`, the default of SPEC §5.3.
    fn default() -> Self {
        Format::L16_16K
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.encoding, self.sample_rate)
    }
}

impl FromStr for Format {
    type Err = CodecError;

    /// Parses exactly the strings of SPEC §5.3, e.g. `pcmu/8000` or `l16/16000`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CodecError::UnsupportedFormat(s.to_owned());
        let (encoding, rate) = s.split_once('/').ok_or_else(bad)?;
        let encoding: Encoding = encoding.parse().map_err(|_| bad())?;
        // Only canonical decimal digits: no sign, no leading zeros, no whitespace.
        if rate.is_empty() || rate.starts_with('0') || !rate.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let rate: u32 = rate.parse().map_err(|_| bad())?;
        Format::new(encoding, rate).map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly_the_spec_strings_and_displays_them_back() {
        for s in ["pcmu/8000", "pcma/8000", "l16/8000", "l16/16000", "l16/24000", "l16/48000"] {
            let f: Format = s.parse().unwrap();
            assert_eq!(f.to_string(), s);
        }
        for bad in [
            "",
            "pcmu",
            "pcmu/",
            "pcmu/16000",
            "pcma/16000",
            "l16/44100",
            "L16/16000",
            "l16/016000",
            "l16/+16000",
            " l16/16000",
            "l16/16000 ",
            "opus/48000",
            "l16/8000/1",
        ] {
            let err = bad.parse::<Format>().unwrap_err();
            assert_eq!(err, CodecError::UnsupportedFormat(bad.to_owned()), "{bad:?}");
        }
    }

    #[test]
    fn frame_sizes_are_20_ms() {
        assert_eq!(Format::PCMU.bytes_per_frame(), 160);
        assert_eq!(Format::L16_8K.bytes_per_frame(), 320);
        assert_eq!(Format::L16_16K.bytes_per_frame(), 640);
        assert_eq!(Format::L16_24K.bytes_per_frame(), 960);
        assert_eq!(Format::L16_48K.bytes_per_frame(), 1920);
    }

    #[test]
    fn new_rejects_g711_off_8k() {
        assert!(Format::new(Encoding::Pcmu, 16000).is_err());
        assert_eq!(Format::new(Encoding::L16, 24000), Ok(Format::L16_24K));
        assert_eq!(Format::default(), Format::L16_16K);
    }
}
