//! The `.spark` artifact: one file holding a compiled model.
//!
//! ```text
//! 0   magic "SPARKC\0\0"
//! 8   format version (u32 LE), then 4 reserved bytes
//! 16  header length (u64 LE)
//! 24  header checksum (xxh3-64 of the header bytes)
//! 32  weights checksum (xxh3-64 of the weight section)
//! 40  weight section offset (u64 LE, a multiple of 256)
//! 48  weight section length (u64 LE)
//! 56  reserved (8 bytes)
//! 64  header: a prost-encoded [`Header`]
//! ..  zero padding to the weight section, which runs to the end of the file
//! ```
//!
//! The weight section is 256-byte aligned in the file, so a runtime can memory-map it and hand
//! tensors to a GPU without copying; every weight inside it is 256-byte aligned too.

mod plan;
pub mod proto;

pub use plan::{arrange, eval, Arrangement};
pub use proto::{
    Buffer, BufferKind, DimBound, Factor, Header, Kernel, KernelPlan, MemoryPlan, OutputAccuracy,
    ProductQuantization, Quantization, SizeExpr, TensorSpec, Term,
};

use bytes::Bytes;
use prost::Message;
use std::io::Write;
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::xxh3_64;

/// The first eight bytes of every artifact.
pub const MAGIC: &[u8; 8] = b"SPARKC\0\0";
/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Alignment of the weight section and of each weight in it, in bytes.
pub const WEIGHT_ALIGN: u64 = 256;
/// The external-data location the embedded graph uses for the weight section.
pub const WEIGHTS_LOCATION: &str = "sparkc:weights";
/// Bytes before the header.
const PREAMBLE: usize = 64;

/// Why an artifact cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The file does not start with the magic bytes.
    #[error("not a sparkc artifact (the file does not start with the .spark magic bytes)")]
    NotArtifact,
    /// Written by an incompatible version of the format.
    #[error("artifact format version {found}; this runtime reads version {expected}: recompile the model with this sparkc")]
    Version {
        /// The file's version.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// Shorter than its own preamble says.
    #[error("artifact is truncated: {0}")]
    Truncated(String),
    /// A checksum or a field does not match.
    #[error("artifact is corrupted: {0}")]
    Corrupt(String),
    /// The header does not decode.
    #[error("artifact header does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// A loaded artifact: its header, and its weight section in place (memory-mapped when opened
/// from a file).
#[derive(Clone, Debug)]
pub struct Artifact {
    /// Everything but the weights.
    pub header: Header,
    weights: Bytes,
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

impl Artifact {
    /// Maps and checks the artifact at `path`.
    pub fn open(path: &Path) -> Result<Artifact, ArtifactError> {
        let io = |source| ArtifactError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only; an artifact rewritten underneath a running process is
        // the user's own race, as with any memory-mapped model file.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Artifact::from_bytes(Bytes::from_owner(map))
    }

    /// Checks and decodes an artifact held in memory; the weights stay in `bytes`.
    pub fn from_bytes(bytes: Bytes) -> Result<Artifact, ArtifactError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(ArtifactError::NotArtifact);
        }
        if bytes.len() < PREAMBLE {
            return Err(ArtifactError::Truncated(format!(
                "{} bytes, shorter than the {PREAMBLE}-byte preamble",
                bytes.len()
            )));
        }
        let mut version = [0u8; 4];
        version.copy_from_slice(&bytes[8..12]);
        let version = u32::from_le_bytes(version);
        if version != FORMAT_VERSION {
            return Err(ArtifactError::Version {
                found: version,
                expected: FORMAT_VERSION,
            });
        }
        let header_len = le_u64(&bytes, 16);
        let (header_sum, weights_sum) = (le_u64(&bytes, 24), le_u64(&bytes, 32));
        let (weights_at, weights_len) = (le_u64(&bytes, 40), le_u64(&bytes, 48));
        let file_len = bytes.len() as u64;
        let header_end = (PREAMBLE as u64)
            .checked_add(header_len)
            .filter(|&end| end <= file_len)
            .ok_or_else(|| {
                ArtifactError::Truncated(format!(
                    "the header needs {header_len} bytes; the file has {file_len}"
                ))
            })?;
        let weights_end = weights_at
            .checked_add(weights_len)
            .filter(|&end| end <= file_len)
            .ok_or_else(|| {
                ArtifactError::Truncated(format!(
                    "the weight section needs bytes {weights_at}..{}; the file has {file_len}",
                    weights_at.saturating_add(weights_len)
                ))
            })?;
        if weights_at % WEIGHT_ALIGN != 0 || weights_at < header_end {
            return Err(ArtifactError::Corrupt(format!(
                "the weight section starts at {weights_at}, not a {WEIGHT_ALIGN}-byte boundary after the header"
            )));
        }
        let header_bytes = &bytes[PREAMBLE..header_end as usize];
        if xxh3_64(header_bytes) != header_sum {
            return Err(ArtifactError::Corrupt(
                "the header checksum does not match".into(),
            ));
        }
        let weights = bytes.slice(weights_at as usize..weights_end as usize);
        if xxh3_64(&weights) != weights_sum {
            return Err(ArtifactError::Corrupt(
                "the weight section checksum does not match".into(),
            ));
        }
        let header = Header::decode(header_bytes)?;
        check_weights(&header, weights.len() as u64)?;
        Ok(Artifact { header, weights })
    }

    /// The weight section.
    pub fn weights(&self) -> &Bytes {
        &self.weights
    }

    /// Writes `header` and `weights` as an artifact file; returns the bytes written.
    pub fn write(path: &Path, header: &Header, weights: &[u8]) -> Result<u64, ArtifactError> {
        let io = |source| ArtifactError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::create(path).map_err(io)?;
        let mut out = std::io::BufWriter::new(file);
        let written = Artifact::encode(header, weights, &mut out).map_err(io)?;
        out.flush().map_err(io)?;
        Ok(written)
    }

    /// Encodes an artifact into `out`; returns the bytes written.
    pub fn encode(header: &Header, weights: &[u8], out: &mut dyn Write) -> std::io::Result<u64> {
        let header_bytes = header.encode_to_vec();
        let header_end = (PREAMBLE + header_bytes.len()) as u64;
        let weights_at = header_end.div_ceil(WEIGHT_ALIGN) * WEIGHT_ALIGN;
        let mut preamble = Vec::with_capacity(PREAMBLE);
        preamble.extend_from_slice(MAGIC);
        preamble.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        preamble.extend_from_slice(&[0; 4]);
        for field in [
            header_bytes.len() as u64,
            xxh3_64(&header_bytes),
            xxh3_64(weights),
            weights_at,
            weights.len() as u64,
            0,
        ] {
            preamble.extend_from_slice(&field.to_le_bytes());
        }
        out.write_all(&preamble)?;
        out.write_all(&header_bytes)?;
        out.write_all(&vec![0; (weights_at - header_end) as usize])?;
        out.write_all(weights)?;
        Ok(weights_at + weights.len() as u64)
    }
}

/// Checks that every weight buffer of the memory plan lies inside a weight section of
/// `section_len` bytes.
fn check_weights(header: &Header, section_len: u64) -> Result<(), ArtifactError> {
    let buffers = header.memory.iter().flat_map(|m| &m.buffers);
    for b in buffers.filter(|b| b.kind() == BufferKind::Weight) {
        let bytes = b.bytes.as_ref().and_then(|e| plan::eval(e, &|_| None).ok());
        let end = bytes.and_then(|n| b.weight_offset.checked_add(u64::try_from(n).ok()?));
        if end.is_none_or(|end| end > section_len) {
            return Err(ArtifactError::Corrupt(format!(
                "weight '{}' lies outside the weight section",
                b.name
            )));
        }
    }
    Ok(())
}

/// Appends `bytes` to a weight section at the next aligned offset; returns that offset.
pub fn push_weight(section: &mut Vec<u8>, bytes: &[u8]) -> u64 {
    let at = (section.len() as u64).div_ceil(WEIGHT_ALIGN) * WEIGHT_ALIGN;
    section.resize(at as usize, 0);
    section.extend_from_slice(bytes);
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Header, Vec<u8>) {
        let header = Header {
            producer: "sparkc test".into(),
            model_name: "m".into(),
            targets: vec!["sm_121a".into()],
            ..Header::default()
        };
        let mut weights = Vec::new();
        push_weight(&mut weights, &[1, 2, 3]);
        let second = push_weight(&mut weights, &[4; 300]);
        assert_eq!(second, 256);
        (header, weights)
    }

    fn encoded() -> Vec<u8> {
        let (header, weights) = sample();
        let mut out = Vec::new();
        Artifact::encode(&header, &weights, &mut out).expect("encodes");
        out
    }

    #[test]
    fn round_trip_keeps_header_and_aligned_weights() {
        let bytes = encoded();
        let artifact = Artifact::from_bytes(Bytes::from(bytes.clone())).expect("decodes");
        assert_eq!(artifact.header, sample().0);
        assert_eq!(artifact.weights().as_ref(), sample().1.as_slice());
        assert_eq!(le_u64(&bytes, 40) % WEIGHT_ALIGN, 0);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = encoded();
        for len in 0..bytes.len() {
            let err = Artifact::from_bytes(Bytes::from(bytes[..len].to_vec()))
                .expect_err("a truncated artifact is refused");
            assert!(
                matches!(
                    err,
                    ArtifactError::NotArtifact | ArtifactError::Truncated(_)
                ),
                "length {len}: {err}"
            );
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = encoded();
        let header_end = PREAMBLE + le_u64(&bytes, 16) as usize;
        let weights_at = le_u64(&bytes, 40) as usize;
        for at in (0..bytes.len()).filter(|&i| {
            !(56..64).contains(&i)
                && !(header_end..weights_at).contains(&i)
                && !(12..16).contains(&i)
        }) {
            let mut bad = bytes.clone();
            bad[at] ^= 0x5a;
            assert!(
                Artifact::from_bytes(Bytes::from(bad)).is_err(),
                "a flipped byte at {at} went unnoticed"
            );
        }
    }

    #[test]
    fn another_version_is_named() {
        let mut bytes = encoded();
        bytes[8] = 9;
        let err = Artifact::from_bytes(Bytes::from(bytes)).expect_err("refused");
        assert!(err.to_string().contains("version 9"), "{err}");
    }
}
