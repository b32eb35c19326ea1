//! The rsync wire primitives (protocol 30–32): little-endian integers,
//! varint, varlong, vstring and the file-list index ("ndx") codes.
//! Encoders append to a `Vec<u8>`; decoders read from any `Read` and turn
//! anything malformed into an `InvalidData` error, never a panic: these
//! bytes come from the network.

use std::io::{self, Read};

pub const NDX_DONE: i32 = -1;
pub const NDX_FLIST_EOF: i32 = -2;
pub const NDX_DEL_STATS: i32 = -3;

pub fn bad(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("rsync protocol: {what}"),
    )
}

pub fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// A 32-bit varint: leading one-bits of the first byte count the extra
/// low-order bytes that follow; the first byte's remaining bits are the
/// most significant part.
pub fn put_varint(out: &mut Vec<u8>, v: i32) {
    let b = (v as u32).to_le_bytes();
    let mut n = 4;
    while n > 1 && b[n - 1] == 0 {
        n -= 1;
    }
    if u32::from(b[n - 1]) < (1u32 << (8 - n)) {
        out.push(((0xFFu32 << (9 - n)) as u8) | b[n - 1]);
        out.extend_from_slice(&b[..n - 1]);
    } else {
        out.push((0xFFu32 << (8 - n)) as u8);
        out.extend_from_slice(&b[..n]);
    }
}

/// A 64-bit varlong carrying at least `min_bytes - 1` low-order bytes
/// after the first (3 for sizes, 4 for times).
pub fn put_varlong(out: &mut Vec<u8>, v: i64, min_bytes: usize) {
    debug_assert!((1..=8).contains(&min_bytes));
    let b = (v as u64).to_le_bytes();
    let mut n = 8;
    while n > min_bytes && b[n - 1] == 0 {
        n -= 1;
    }
    let bit = 1u32 << (7 + min_bytes - n);
    if u32::from(b[n - 1]) >= bit {
        out.push(!(bit - 1) as u8);
        out.extend_from_slice(&b[..n]);
    } else if n > min_bytes {
        out.push(b[n - 1] | !(bit * 2 - 1) as u8);
        out.extend_from_slice(&b[..n - 1]);
    } else {
        out.push(b[n - 1]);
        out.extend_from_slice(&b[..n - 1]);
    }
}

/// A length-prefixed string (one byte below 128, else two).
pub fn put_vstring(out: &mut Vec<u8>, s: &[u8]) -> io::Result<()> {
    match s.len() {
        n @ 0..=0x7F => out.push(n as u8),
        n @ 0x80..=0x7FFF => {
            out.push(0x80 | (n >> 8) as u8);
            out.push(n as u8);
        }
        n => return Err(bad(format!("string of {n} bytes is too long to send"))),
    }
    out.extend_from_slice(s);
    Ok(())
}

pub fn get_u8(r: &mut impl Read) -> io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

pub fn get_u16(r: &mut impl Read) -> io::Result<u16> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_le_bytes(b))
}

pub fn get_i32(r: &mut impl Read) -> io::Result<i32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(i32::from_le_bytes(b))
}

pub fn get_varint(r: &mut impl Read) -> io::Result<i32> {
    let b0 = get_u8(r)?;
    let extra = b0.leading_ones() as usize;
    if extra > 4 {
        return Err(bad(format!("varint with {extra} extra bytes")));
    }
    let mut b = [0u8; 8];
    r.read_exact(&mut b[..extra])?;
    let top = u64::from(b0 & (0x7F >> extra)) << (8 * extra);
    let v = u64::from_le_bytes(b) | top;
    u32::try_from(v)
        .map(|v| v as i32)
        .map_err(|_| bad("varint larger than 32 bits"))
}

pub fn get_varlong(r: &mut impl Read, min_bytes: usize) -> io::Result<i64> {
    let b0 = get_u8(r)?;
    let extra = b0.leading_ones() as usize;
    let n = min_bytes - 1 + extra;
    if n > 8 {
        return Err(bad(format!("varlong of {} bytes", n + 1)));
    }
    let mut b = [0u8; 8];
    r.read_exact(&mut b[..n])?;
    let top = u64::from(b0 & 0x7Fu8.checked_shr(extra as u32).unwrap_or(0));
    if top != 0 && n == 8 {
        return Err(bad("varlong larger than 64 bits"));
    }
    let top = top.checked_shl(8 * n as u32).unwrap_or(0);
    Ok((u64::from_le_bytes(b) | top) as i64)
}

/// A vstring of at most `max` bytes.
pub fn get_vstring(r: &mut impl Read, max: usize) -> io::Result<Vec<u8>> {
    let b0 = usize::from(get_u8(r)?);
    let len = if b0 & 0x80 != 0 {
        ((b0 & 0x7F) << 8) | usize::from(get_u8(r)?)
    } else {
        b0
    };
    if len > max {
        return Err(bad(format!(
            "string of {len} bytes (at most {max} expected)"
        )));
    }
    let mut s = vec![0u8; len];
    r.read_exact(&mut s)?;
    Ok(s)
}

/// One direction's ndx state: each side encodes an index as the
/// difference from the previous one of the same sign.
#[derive(Debug)]
pub struct NdxState {
    prev_positive: i32,
    prev_negative: i32,
}

impl Default for NdxState {
    fn default() -> Self {
        NdxState {
            prev_positive: -1,
            prev_negative: 1,
        }
    }
}

impl NdxState {
    pub fn put(&mut self, out: &mut Vec<u8>, ndx: i32) {
        if ndx == NDX_DONE {
            out.push(0);
            return;
        }
        let (num, prev) = if ndx >= 0 {
            (ndx, &mut self.prev_positive)
        } else {
            out.push(0xFF);
            (-ndx, &mut self.prev_negative)
        };
        let diff = i64::from(num) - i64::from(*prev);
        *prev = num;
        if (1..0xFE).contains(&diff) {
            out.push(diff as u8);
        } else if !(0..=0x7FFF).contains(&diff) {
            out.push(0xFE);
            out.push(((num >> 24) as u8) | 0x80);
            out.push(num as u8);
            out.push((num >> 8) as u8);
            out.push((num >> 16) as u8);
        } else {
            out.push(0xFE);
            out.push((diff >> 8) as u8);
            out.push(diff as u8);
        }
    }

    pub fn get(&mut self, r: &mut impl Read) -> io::Result<i32> {
        let mut b = get_u8(r)?;
        if b == 0 {
            return Ok(NDX_DONE);
        }
        let negative = b == 0xFF;
        if negative {
            b = get_u8(r)?;
        }
        let prev = if negative {
            &mut self.prev_negative
        } else {
            &mut self.prev_positive
        };
        let num = if b == 0xFE {
            let hi = get_u8(r)?;
            let lo = get_u8(r)?;
            if hi & 0x80 != 0 {
                let b2 = get_u8(r)?;
                let b3 = get_u8(r)?;
                i32::from_le_bytes([lo, b2, b3, hi & 0x7F])
            } else {
                prev.checked_add((i32::from(hi) << 8) | i32::from(lo))
                    .ok_or_else(|| bad("ndx overflow"))?
            }
        } else {
            prev.checked_add(i32::from(b))
                .ok_or_else(|| bad("ndx overflow"))?
        };
        *prev = num;
        Ok(if negative { -num } else { num })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn varint(v: i32) -> Vec<u8> {
        let mut o = Vec::new();
        put_varint(&mut o, v);
        o
    }

    fn varlong(v: i64, min: usize) -> Vec<u8> {
        let mut o = Vec::new();
        put_varlong(&mut o, v, min);
        o
    }

    #[test]
    fn known_encodings_from_captures() {
        assert_eq!(varint(0x1ff), [0x81, 0xff]);
        assert_eq!(varint(0x0c01), [0x8c, 0x01]);
        assert_eq!(varint(0x98), [0x80, 0x98]);
        assert_eq!(varint(5), [0x05]);
        assert_eq!(varint(-1), [0xf0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(varlong(11, 3), [0x00, 0x0b, 0x00]);
        assert_eq!(varlong(4096, 3), [0x00, 0x00, 0x10]);
        assert_eq!(varlong(1048576, 3), [0x10, 0x00, 0x00]);
        assert_eq!(varlong(1704067200, 4), [0x65, 0x80, 0x00, 0x92]);
        assert_eq!(varlong(1704067260, 4), [0x65, 0xbc, 0x00, 0x92]);
        assert_eq!(varlong(1 << 32, 3), [0xc1, 0, 0, 0, 0]);
        let mut s = NdxState::default();
        let mut o = Vec::new();
        s.put(&mut o, NDX_FLIST_EOF);
        assert_eq!(o, [0xff, 0x01]);
        let mut s = NdxState::default();
        let mut o = Vec::new();
        for n in [-102, -2] {
            s.put(&mut o, n);
        }
        assert_eq!(o, [0xff, 0x65, 0xff, 0xfe, 0x80, 0x02, 0x00, 0x00]);
        let mut s = NdxState::default();
        let mut o = Vec::new();
        s.put(&mut o, 1);
        assert_eq!(o, [0x02]);
    }

    proptest! {
        #[test]
        fn varint_round_trips(v in any::<i32>()) {
            prop_assert_eq!(get_varint(&mut &varint(v)[..]).unwrap(), v);
        }

        #[test]
        fn varlong_round_trips(v in any::<i64>(), min in 1usize..=4) {
            prop_assert_eq!(get_varlong(&mut &varlong(v, min)[..], min).unwrap(), v);
        }

        #[test]
        fn ndx_round_trips(seq in proptest::collection::vec(-200_000i32..2_000_000, 1..50)) {
            let mut w = NdxState::default();
            let mut o = Vec::new();
            for &n in &seq {
                w.put(&mut o, n);
            }
            let mut r = NdxState::default();
            let mut inp = &o[..];
            for &n in &seq {
                prop_assert_eq!(r.get(&mut inp).unwrap(), n);
            }
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = get_varint(&mut &bytes[..]);
            for min in 1..=4 {
                let _ = get_varlong(&mut &bytes[..], min);
            }
            let _ = get_vstring(&mut &bytes[..], 100);
            let mut s = NdxState::default();
            let mut inp = &bytes[..];
            while s.get(&mut inp).is_ok() {}
        }
    }
}
