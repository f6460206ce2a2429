//! The receiving side of `XZSTD`: a zstd stream decoded as it arrives, never past its
//! bounds. The decoded size may not pass the message size limit (RFC 1870's SIZE, as
//! for plain content), nor `MAX_RATIO` times the compressed bytes plus `RATIO_SLACK` (a
//! zip bomb stops there, having cost a bounded amount of work and no disk), and the
//! decoder's window is capped so a frame cannot make it allocate more than
//! `2^WINDOW_LOG_MAX` bytes. Past a bound, or on a malformed stream, it stops decoding
//! and says why; the caller still reads the rest of the BDAT chunks to stay in step.

use std::io;

use zstd::stream::raw::{DParameter, Decoder, InBuffer, Operation, OutBuffer};

/// Real mail compresses 2 to 10 times; a hundred is generous.
pub const MAX_RATIO: u64 = 100;
/// What a tiny message may decode to whatever its ratio.
pub const RATIO_SLACK: u64 = 1 << 20;
/// 8 MiB windows: the sender's level uses 1 MiB or less.
pub const WINDOW_LOG_MAX: u32 = 23;

/// Decoded at a time, so a burst is checked against the bounds before the next one.
const SCRATCH: usize = 128 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Decoded past the message size limit.
    TooBig,
    /// Decoded past `MAX_RATIO` times its compressed size: a decompression bomb.
    Ratio,
    /// Not a zstd stream, or one cut short at the last chunk.
    Malformed,
}

pub struct Decompressor {
    decoder: Decoder<'static>,
    scratch: Vec<u8>,
    max_raw: u64,
    compressed: u64,
    raw: u64,
    /// The last call ended exactly at a frame's end.
    at_frame_end: bool,
    refused: Option<Refusal>,
}

impl Decompressor {
    /// A decoder for content that may decode to at most `max_raw` bytes, compressed
    /// against `dictionary` (earlier messages' contents; empty: none).
    pub fn new(max_raw: u64, dictionary: &[u8]) -> io::Result<Decompressor> {
        let mut decoder = match dictionary.is_empty() {
            true => Decoder::new()?,
            false => Decoder::with_dictionary(dictionary)?,
        };
        decoder.set_parameter(DParameter::WindowLogMax(WINDOW_LOG_MAX))?;
        Ok(Decompressor {
            decoder,
            scratch: vec![0u8; SCRATCH],
            max_raw,
            compressed: 0,
            raw: 0,
            at_frame_end: true,
            refused: None,
        })
    }

    /// Decodes `z`, appending what it decodes to `out`; once refused, it takes nothing.
    pub(crate) fn feed(&mut self, z: &[u8], out: &mut Vec<u8>) {
        if self.refused.is_some() {
            return;
        }
        self.compressed += z.len() as u64;
        let mut input = InBuffer::around(z);
        loop {
            let mut output = OutBuffer::around(&mut self.scratch[..]);
            let hint = match self.decoder.run(&mut input, &mut output) {
                Ok(hint) => hint,
                Err(_) => {
                    self.refused = Some(Refusal::Malformed);
                    return;
                }
            };
            let n = output.pos();
            self.raw += n as u64;
            if self.raw > self.max_raw {
                self.refused = Some(Refusal::TooBig);
                return;
            }
            if self.raw > self.compressed.saturating_mul(MAX_RATIO) + RATIO_SLACK {
                self.refused = Some(Refusal::Ratio);
                return;
            }
            out.extend_from_slice(&self.scratch[..n]);
            self.at_frame_end = hint == 0;
            // Done with this input once it is all taken and the decoder has nothing
            // more to give (it filled less than the whole scratch).
            if input.pos() == z.len() && n < SCRATCH {
                return;
            }
        }
    }

    /// Bytes decoded so far.
    pub fn raw(&self) -> u64 {
        self.raw
    }

    /// After the last chunk: why the content is refused, if it is.
    pub fn verdict(&self) -> Result<(), Refusal> {
        match self.refused {
            Some(r) => Err(r),
            None if !self.at_frame_end || self.compressed == 0 => Err(Refusal::Malformed),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::compress::{Compressor, whole};
    use super::*;

    fn text(n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        let mut i = 0u64;
        while out.len() < n {
            out.extend_from_slice(
                format!("line {i} of a letter, {}\r\n", i * 7919 % 1013).as_bytes(),
            );
            i += 1;
        }
        out.truncate(n);
        out
    }

    fn decode_in_pieces(z: &[u8], step: usize, max: u64) -> (Vec<u8>, Result<(), Refusal>) {
        let mut d = Decompressor::new(max, b"").unwrap();
        let mut out = Vec::new();
        for piece in z.chunks(step.max(1)) {
            d.feed(piece, &mut out);
        }
        (out, d.verdict())
    }

    #[test]
    fn pieces_decode_to_the_content_at_any_split() {
        let raw = text(700_000);
        let mut c = Compressor::new().unwrap();
        let mut z = Vec::new();
        let pieces: Vec<&[u8]> = raw.chunks(256 << 10).collect();
        for (i, p) in pieces.iter().enumerate() {
            c.piece(p, i + 1 == pieces.len(), &mut z).unwrap();
        }
        assert!(z.len() < raw.len() / 3, "{} of {}", z.len(), raw.len());
        for step in [1, 7, 4096, z.len()] {
            let (out, verdict) = decode_in_pieces(&z, step, 1 << 20);
            assert_eq!(verdict, Ok(()));
            assert!(out == raw, "step {step}");
        }
    }

    #[test]
    fn each_flushed_piece_decodes_before_the_next_is_sent() {
        let raw = text(300_000);
        let mut c = Compressor::new().unwrap();
        let mut d = Decompressor::new(1 << 20, b"").unwrap();
        let mut out = Vec::new();
        let mut z = Vec::new();
        c.piece(&raw[..100_000], false, &mut z).unwrap();
        d.feed(&z, &mut out);
        assert_eq!(out, &raw[..100_000]);
        assert_eq!(
            d.verdict(),
            Err(Refusal::Malformed),
            "the frame is not ended yet"
        );
    }

    #[test]
    fn a_dictionary_shrinks_a_similar_message_and_must_be_the_same_at_both_ends() {
        let earlier = text(20_000);
        let mut next = earlier[..3000].to_vec();
        next.extend_from_slice(b"one new line\r\n");
        let alone = whole(&next).unwrap();
        let mut c = Compressor::with_dictionary(&earlier).unwrap();
        let mut z = Vec::new();
        c.piece(&next, true, &mut z).unwrap();
        assert!(
            z.len() * 4 < alone.len(),
            "{} against {}",
            z.len(),
            alone.len()
        );
        let mut d = Decompressor::new(1 << 20, &earlier).unwrap();
        let mut out = Vec::new();
        d.feed(&z, &mut out);
        assert_eq!(d.verdict(), Ok(()));
        assert_eq!(out, next);
        let mut wrong = Decompressor::new(1 << 20, &text(100)).unwrap();
        let mut out = Vec::new();
        wrong.feed(&z, &mut out);
        assert!(wrong.verdict().is_err() || out != next);
    }

    #[test]
    fn bombs_and_garbage_are_refused_within_bounds() {
        let zeros = vec![0u8; 40 << 20];
        let bomb = whole(&zeros).unwrap();
        assert!(bomb.len() < 8192, "{}", bomb.len());
        let (out, verdict) = decode_in_pieces(&bomb, 1024, 50 << 20);
        assert_eq!(verdict, Err(Refusal::Ratio));
        assert!(out.len() as u64 <= RATIO_SLACK + MAX_RATIO * bomb.len() as u64);
        let (_, verdict) = decode_in_pieces(&whole(&text(5000)).unwrap(), 100, 4000);
        assert_eq!(verdict, Err(Refusal::TooBig));
        let (_, verdict) = decode_in_pieces(b"this is not zstd at all", 5, 1 << 20);
        assert_eq!(verdict, Err(Refusal::Malformed));
        let z = whole(&text(5000)).unwrap();
        let (_, verdict) = decode_in_pieces(&z[..z.len() - 3], 100, 1 << 20);
        assert_eq!(verdict, Err(Refusal::Malformed));
        let (_, verdict) = decode_in_pieces(b"", 1, 1 << 20);
        assert_eq!(verdict, Err(Refusal::Malformed));
    }

    #[test]
    fn a_frame_asking_for_a_huge_window_is_refused() {
        let raw = text(1 << 20);
        let mut e = zstd::stream::raw::Encoder::new(3).unwrap();
        e.set_parameter(zstd::stream::raw::CParameter::WindowLog(27))
            .unwrap();
        e.set_pledged_src_size(None).unwrap();
        let mut z = vec![0u8; 2 << 20];
        let mut output = OutBuffer::around(&mut z[..]);
        let mut input = InBuffer::around(&raw);
        e.run(&mut input, &mut output).unwrap();
        e.finish(&mut output, true).unwrap();
        let n = output.pos();
        let (_, verdict) = decode_in_pieces(&z[..n], 4096, 64 << 20);
        assert_eq!(verdict, Err(Refusal::Malformed));
    }
}
