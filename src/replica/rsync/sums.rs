//! Checksums: the rolling block checksum (`sum1`), the negotiated strong
//! checksum for blocks and whole files, and the digests of the daemon's
//! challenge/response authentication.

use md5::Digest;
use xxhash_rust::xxh3::{Xxh3, xxh3_64_with_seed, xxh3_128_with_seed};
use xxhash_rust::xxh64::{Xxh64, xxh64};

/// The transfer checksums we implement, in the daemon's order of
/// preference (the order we must list them in).
pub const OUR_CHECKSUMS: &[Checksum] = &[
    Checksum::Xxh128,
    Checksum::Xxh3,
    Checksum::Xxh64,
    Checksum::Md5,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checksum {
    Xxh128,
    Xxh3,
    Xxh64,
    Md5,
}

impl Checksum {
    pub fn name(self) -> &'static str {
        match self {
            Checksum::Xxh128 => "xxh128",
            Checksum::Xxh3 => "xxh3",
            Checksum::Xxh64 => "xxh64",
            Checksum::Md5 => "md5",
        }
    }

    pub fn from_name(n: &str) -> Option<Self> {
        OUR_CHECKSUMS.iter().copied().find(|c| c.name() == n)
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Checksum::Xxh128 | Checksum::Md5 => 16,
            Checksum::Xxh3 | Checksum::Xxh64 => 8,
        }
    }

    /// The strong checksum of one block, seeded as the daemon seeds it
    /// (the int32 seed sign-extended for xxhash; prepended for MD5, which
    /// is the order CF_CHKSUM_SEED_FIX asks for).
    pub fn block(self, seed: i32, data: &[u8]) -> [u8; 16] {
        let s64 = i64::from(seed) as u64;
        let mut out = [0u8; 16];
        match self {
            Checksum::Xxh128 => out = le128(xxh3_128_with_seed(data, s64)),
            Checksum::Xxh3 => out[..8].copy_from_slice(&xxh3_64_with_seed(data, s64).to_le_bytes()),
            Checksum::Xxh64 => out[..8].copy_from_slice(&xxh64(data, s64).to_le_bytes()),
            Checksum::Md5 => {
                let mut h = md5::Md5::new();
                if seed != 0 {
                    h.update(seed.to_le_bytes());
                }
                h.update(data);
                out.copy_from_slice(&h.finalize());
            }
        }
        out
    }

    /// A hasher for a whole file's checksum (unseeded).
    pub fn file_hasher(self) -> FileSum {
        match self {
            Checksum::Xxh128 | Checksum::Xxh3 => FileSum::Xxh3(Box::new(Xxh3::new()), self),
            Checksum::Xxh64 => FileSum::Xxh64(Xxh64::new(0)),
            Checksum::Md5 => FileSum::Md5(md5::Md5::new()),
        }
    }
}

/// xxh128 on the wire: low 64 bits little-endian, then high 64 bits.
fn le128(v: u128) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&(v as u64).to_le_bytes());
    out[8..].copy_from_slice(&((v >> 64) as u64).to_le_bytes());
    out
}

pub enum FileSum {
    Xxh3(Box<Xxh3>, Checksum),
    Xxh64(Xxh64),
    Md5(md5::Md5),
}

impl FileSum {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            FileSum::Xxh3(h, _) => h.update(data),
            FileSum::Xxh64(h) => h.update(data),
            FileSum::Md5(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Vec<u8> {
        match self {
            FileSum::Xxh3(h, Checksum::Xxh128) => le128(h.digest128()).to_vec(),
            FileSum::Xxh3(h, _) => h.digest().to_le_bytes().to_vec(),
            FileSum::Xxh64(h) => h.digest().to_le_bytes().to_vec(),
            FileSum::Md5(h) => h.finalize().to_vec(),
        }
    }
}

/// The rolling checksum of a block, each byte taken as a signed char.
pub fn sum1(data: &[u8]) -> u32 {
    let (mut s1, mut s2) = (0u32, 0u32);
    let n = data.len() as u32;
    for (i, &b) in data.iter().enumerate() {
        let x = b as i8 as i32 as u32;
        s1 = s1.wrapping_add(x);
        s2 = s2.wrapping_add((n - i as u32).wrapping_mul(x));
    }
    (s1 & 0xFFFF) | (s2 << 16)
}

/// `sum1` over a window that slides one byte at a time.
#[derive(Clone, Copy, Debug)]
pub struct Rolling {
    s1: u32,
    s2: u32,
    n: u32,
}

impl Rolling {
    pub fn new(window: &[u8]) -> Self {
        let mut r = Rolling {
            s1: 0,
            s2: 0,
            n: window.len() as u32,
        };
        for (i, &b) in window.iter().enumerate() {
            let x = b as i8 as i32 as u32;
            r.s1 = r.s1.wrapping_add(x);
            r.s2 = r.s2.wrapping_add((r.n - i as u32).wrapping_mul(x));
        }
        r
    }

    pub fn value(&self) -> u32 {
        (self.s1 & 0xFFFF) | (self.s2 << 16)
    }

    /// Drops `out` from the front and appends `inb` at the back.
    pub fn roll(&mut self, out: u8, inb: u8) {
        let o = out as i8 as i32 as u32;
        let i = inb as i8 as i32 as u32;
        self.s1 = self.s1.wrapping_sub(o).wrapping_add(i);
        self.s2 = self
            .s2
            .wrapping_sub(self.n.wrapping_mul(o))
            .wrapping_add(self.s1);
    }

    /// Drops `out` from the front without a byte coming in (the window
    /// shrinks at the end of the file).
    pub fn shrink(&mut self, out: u8) {
        let o = out as i8 as i32 as u32;
        self.s1 = self.s1.wrapping_sub(o);
        self.s2 = self.s2.wrapping_sub(self.n.wrapping_mul(o));
        self.n -= 1;
    }
}

/// The digests the daemon's authentication may negotiate, strongest first
/// (both sides must list them in this order to agree).
pub const AUTH_DIGESTS: &[&str] = &["sha512", "sha256", "sha1", "md5"];

/// `base64(H(password ‖ challenge))`, unpadded, as the daemon expects.
pub fn auth_response(digest: &str, password: &[u8], challenge: &str) -> Option<String> {
    fn h<D: Digest>(a: &[u8], b: &[u8]) -> Vec<u8> {
        let mut d = D::new();
        d.update(a);
        d.update(b);
        d.finalize().to_vec()
    }
    let c = challenge.as_bytes();
    let d = match digest {
        "sha512" => h::<sha2::Sha512>(password, c),
        "sha256" => h::<sha2::Sha256>(password, c),
        "sha1" => h::<sha1::Sha1>(password, c),
        "md5" => h::<md5::Md5>(password, c),
        _ => return None,
    };
    Some(base64_unpadded(&d))
}

fn base64_unpadded(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len() * 4 / 3 + 2);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..=chunk.len() {
            s.push(A[((v >> (18 - 6 * k)) & 63) as usize] as char);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_file_xxh128_matches_the_capture() {
        let mut h = Checksum::Xxh128.file_hasher();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(
            h.finish(),
            [
                0xc7, 0xb6, 0x15, 0xcc, 0x75, 0x87, 0x9b, 0xa9, 0x00, 0x49, 0x87, 0x3f, 0xe9, 0x09,
                0x8d, 0xdf
            ]
        );
    }

    #[test]
    fn rolling_equals_recomputed() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let n = 700;
        let mut r = Rolling::new(&data[..n]);
        for k in 1..data.len() - n {
            r.roll(data[k - 1], data[k + n - 1]);
            assert_eq!(r.value(), sum1(&data[k..k + n]), "at {k}");
        }
        let mut r = Rolling::new(&data[data.len() - 10..]);
        r.shrink(data[data.len() - 10]);
        assert_eq!(r.value(), sum1(&data[data.len() - 9..]));
    }

    #[test]
    fn base64_is_unpadded_standard() {
        assert_eq!(base64_unpadded(b"f"), "Zg");
        assert_eq!(base64_unpadded(b"fo"), "Zm8");
        assert_eq!(base64_unpadded(b"foo"), "Zm9v");
        assert_eq!(base64_unpadded(b"foobar"), "Zm9vYmFy");
        assert_eq!(auth_response("sha512", b"x", "y").unwrap().len(), 86);
        assert_eq!(auth_response("md5", b"x", "y").unwrap().len(), 22);
    }
}
