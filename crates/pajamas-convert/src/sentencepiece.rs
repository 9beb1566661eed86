//! A minimal reader of SentencePiece `tokenizer.model` files (a protobuf `ModelProto`):
//! only the pieces (text, score, type) that GGUF's `llama` tokenizer model needs.

use std::path::Path;

use crate::tokenizer::{token_type, TokenizerError, Vocab};

fn invalid(path: &Path, message: impl Into<String>) -> TokenizerError {
    TokenizerError::Invalid {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Protobuf wire reader over a byte slice; every read is bounds-checked.
struct Wire<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Wire<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn fixed32(&mut self) -> Option<u32> {
        let s = self.buf.get(self.pos..self.pos + 4)?;
        self.pos += 4;
        Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn skip(&mut self, wire_type: u64) -> Option<()> {
        match wire_type {
            0 => self.varint().map(|_| ()),
            1 => {
                self.pos = self.pos.checked_add(8).filter(|p| *p <= self.buf.len())?;
                Some(())
            }
            2 => self.bytes().map(|_| ()),
            5 => self.fixed32().map(|_| ()),
            _ => None,
        }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

/// One piece: (text, score, sentencepiece type).
fn piece(bytes: &[u8]) -> Option<(String, f32, u64)> {
    let mut w = Wire { buf: bytes, pos: 0 };
    let (mut text, mut score, mut ty) = (String::new(), 0.0f32, 1u64);
    while !w.done() {
        let key = w.varint()?;
        match (key >> 3, key & 7) {
            (1, 2) => text = String::from_utf8(w.bytes()?.to_vec()).ok()?,
            (2, 5) => score = f32::from_bits(w.fixed32()?),
            (3, 0) => ty = w.varint()?,
            (_, wt) => w.skip(wt)?,
        }
    }
    Some((text, score, ty))
}

/// Reads a SentencePiece model into a GGUF `llama` vocabulary.
pub fn spm_vocab(path: &Path, vocab_size: u64) -> Result<Vocab, TokenizerError> {
    let data = std::fs::read(path).map_err(|e| invalid(path, e.to_string()))?;
    let mut w = Wire { buf: &data, pos: 0 };
    let mut v = Vocab {
        model: "llama".into(),
        add_bos: Some(true),
        add_eos: Some(false),
        ..Default::default()
    };
    while !w.done() {
        let key = w
            .varint()
            .ok_or_else(|| invalid(path, "truncated protobuf"))?;
        if key >> 3 == 1 && key & 7 == 2 {
            let bytes = w.bytes().ok_or_else(|| invalid(path, "truncated piece"))?;
            let (text, score, ty) = piece(bytes)
                .ok_or_else(|| invalid(path, format!("malformed piece #{}", v.tokens.len())))?;
            let t = match ty {
                2 => token_type::UNKNOWN,
                3 => token_type::CONTROL,
                4 => token_type::USER_DEFINED,
                5 => token_type::UNUSED,
                6 => token_type::BYTE,
                _ => token_type::NORMAL,
            };
            if t == token_type::UNKNOWN {
                v.unk = Some(v.tokens.len() as u32);
            }
            v.tokens.push(text);
            v.scores.push(score);
            v.types.push(t);
        } else {
            w.skip(key & 7)
                .ok_or_else(|| invalid(path, "truncated protobuf field"))?;
        }
    }
    if v.tokens.is_empty() {
        return Err(invalid(path, "no pieces: not a SentencePiece model"));
    }
    while (v.tokens.len() as u64) < vocab_size {
        let i = v.tokens.len();
        v.tokens.push(format!("[PAD{i}]"));
        v.scores.push(-1000.0);
        v.types.push(token_type::UNUSED);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut x: u64, out: &mut Vec<u8>) {
        loop {
            let b = (x & 0x7f) as u8;
            x >>= 7;
            if x == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn encode_piece(text: &str, score: f32, ty: u64) -> Vec<u8> {
        let mut p = vec![0x0a];
        varint(text.len() as u64, &mut p);
        p.extend_from_slice(text.as_bytes());
        p.push(0x15);
        p.extend_from_slice(&score.to_le_bytes());
        p.push(0x18);
        varint(ty, &mut p);
        let mut out = vec![0x0a];
        varint(p.len() as u64, &mut out);
        out.extend(p);
        out
    }

    #[test]
    fn reads_pieces_and_pads() {
        let mut model = Vec::new();
        model.extend(encode_piece("<unk>", 0.0, 2));
        model.extend(encode_piece("<s>", 0.0, 3));
        model.extend(encode_piece("<0x0A>", 0.0, 6));
        model.extend(encode_piece("▁the", -3.5, 1));
        // an unrelated field (trainer_spec, field 2) must be skipped
        model.extend([0x12, 0x02, 0x08, 0x01]);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.model");
        std::fs::write(&p, &model).unwrap();
        let v = spm_vocab(&p, 6).unwrap();
        assert_eq!(
            v.tokens,
            vec!["<unk>", "<s>", "<0x0A>", "▁the", "[PAD4]", "[PAD5]"]
        );
        assert_eq!(v.types, vec![2, 3, 6, 1, 5, 5]);
        assert_eq!(v.scores[3], -3.5);
        assert_eq!(v.unk, Some(0));
        std::fs::write(&p, &model[..model.len() - 9]).unwrap();
        assert!(spm_vocab(&p, 0).is_err());
    }
}
