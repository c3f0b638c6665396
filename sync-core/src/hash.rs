//! The content hash of an object's data.
//!
//! SHA-256 of the stored JSON text, in lower-case hex. It is a standard digest on purpose:
//! browsers compute it with WebCrypto, mirrors with any library, and the same function names
//! content-addressed blobs.

use alloc::string::String;
use sha2::{Digest, Sha256};

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

/// The `hash` the server gives an object whose data is `data_json`.
pub fn data_hash(data_json: &str) -> String {
    sha256_hex(data_json.as_bytes())
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
