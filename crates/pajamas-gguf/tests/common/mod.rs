//! Test helpers: a byte-level GGUF builder independent of the crate's writer, so hostile
//! files can say anything.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub struct Raw {
    pub buf: Vec<u8>,
}

impl Raw {
    /// Magic, version and the two counts.
    pub fn new(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw {
            buf: b"GGUF".to_vec(),
        };
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }

    pub fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key).u32(4).u32(v)
    }

    pub fn kv_str(&mut self, key: &str, v: &str) -> &mut Self {
        self.str(key).u32(8).str(v)
    }

    /// A tensor info: name, dims (innermost first), ggml type id, offset.
    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }

    pub fn pad(&mut self, align: usize) -> &mut Self {
        while !self.buf.len().is_multiple_of(align) {
            self.buf.push(0);
        }
        self
    }

    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.buf.resize(self.buf.len() + n, 0);
        self
    }
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A small valid file: two metadata entries, an F32 tensor of 8 elements and a Q8_0 tensor of
/// 2 rows of 32, packed at alignment 32.
pub fn small_valid() -> Vec<u8> {
    let mut r = Raw::new(3, 2, 3);
    r.kv_str("general.architecture", "llama")
        .kv_u32("general.alignment", 32)
        .str("tokenizer.ggml.tokens")
        .u32(9)
        .u32(8)
        .u64(3)
        .str("a")
        .str("bc")
        .str("");
    r.tensor("norm.weight", &[8], 0, 0)
        .tensor("blk.0.attn_q.weight", &[32, 2], 8, 32);
    r.pad(32);
    for i in 0..8u32 {
        r.bytes(&(i as f32).to_le_bytes());
    }
    for i in 0..68u8 {
        r.u8(i);
    }
    r.pad(32);
    r.buf
}
