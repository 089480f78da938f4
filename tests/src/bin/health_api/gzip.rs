//! A gzip writer small enough to carry here: one DEFLATE block with the fixed Huffman codes
//! (RFC 1951 §3.2.6), literals only. It does not make a body smaller; it makes it unreadable
//! without inflating it, which is all the `gzip` leak mode needs: the key is in the body, and no
//! byte of it is in the wire bytes in any form a scanner of the raw body could match.

/// `data` as a gzip member (RFC 1952) that any inflater reads back.
pub(crate) fn compress(data: &[u8]) -> Vec<u8> {
    // ID1 ID2, CM = deflate, no flags, no mtime, no extra flags, OS unknown.
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut bits = Bits { out: &mut out, byte: 0, used: 0 };
    // BFINAL = 1, BTYPE = 01 (fixed codes): header fields go least significant bit first.
    bits.push(0b1, 1);
    bits.push(0b01, 2);
    for &byte in data {
        let (code, len) = literal(u16::from(byte));
        bits.push_code(code, len);
    }
    let (code, len) = end_of_block();
    bits.push_code(code, len);
    bits.finish();
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(u32::try_from(data.len()).unwrap_or(u32::MAX)).to_le_bytes());
    out
}

/// The fixed code of a literal byte: 0..=143 take 8 bits from 0x30, 144..=255 9 bits from
/// 0x190.
fn literal(value: u16) -> (u16, u8) {
    if value < 144 {
        (0x30 + value, 8)
    } else {
        (0x190 + value - 144, 9)
    }
}

/// Symbol 256, seven zero bits.
fn end_of_block() -> (u16, u8) {
    (0, 7)
}

/// Packs bits into bytes from the least significant bit up, as DEFLATE does.
struct Bits<'a> {
    out: &'a mut Vec<u8>,
    byte: u8,
    used: u8,
}

impl Bits<'_> {
    /// A field: its least significant bit first.
    fn push(&mut self, value: u16, len: u8) {
        for i in 0..len {
            self.bit((value >> i) & 1 == 1);
        }
    }

    /// A Huffman code: its most significant bit first.
    fn push_code(&mut self, code: u16, len: u8) {
        for i in (0..len).rev() {
            self.bit((code >> i) & 1 == 1);
        }
    }

    fn bit(&mut self, set: bool) {
        if set {
            self.byte |= 1 << self.used;
        }
        self.used += 1;
        if self.used == 8 {
            self.out.push(self.byte);
            self.byte = 0;
            self.used = 0;
        }
    }

    fn finish(self) {
        if self.used > 0 {
            self.out.push(self.byte);
        }
    }
}

/// CRC-32 (IEEE, reflected), as gzip's trailer wants it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_value_and_a_known_member() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        // What zlib's inflate reads as "a": header, 0x4b 0x04 0x00 (the block), crc, size.
        assert_eq!(
            compress(b"a"),
            [
                0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 0x4b, 0x04, 0x00, 0x43, 0xbe, 0xb7, 0xe8, 1,
                0, 0, 0
            ]
        );
    }
}
