//! Byte-level BPE over one pre-tokenized word, with llama.cpp's merge order and
//! fallbacks (`llm_tokenizer_bpe_session::tokenize` in `llama-vocab.cpp`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// GPT-2's `bytes_to_unicode`: every byte as a printable character, so that BPE tokens
/// are strings. Printable Latin-1 bytes stand for themselves; the other 68 bytes (control
/// characters, space, DEL, NBSP, soft hyphen) map to U+0100.. in byte order.
pub(crate) fn byte_chars() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        map[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(next).expect("U+0100..U+0143 are characters");
            next += 1;
            c
        };
    }
    map
}

/// A string that occurs in the vocabulary or in a merge (a BPE symbol's text).
struct Piece {
    text: Box<str>,
    /// The token with exactly this text, if any.
    token: Option<u32>,
}

/// Fx-style hashing for the integer keys of the merge table: the default SipHash would
/// dominate the merge loop.
#[derive(Default)]
struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type IntMap<V> = HashMap<u64, V, BuildHasherDefault<IntHasher>>;

fn pair(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

/// The vocabulary and merges, with every string interned as a piece id.
pub(crate) struct Bpe {
    pieces: Vec<Piece>,
    piece_ids: HashMap<Box<str>, u32>,
    /// (left piece, right piece) -> (rank, merged piece).
    merges: IntMap<(u32, u32)>,
    /// The piece of each byte's character.
    byte_piece: [u32; 256],
    /// The token of each one-byte (ASCII) string: llama.cpp's last resort for a symbol
    /// that is not a token.
    ascii_token: [Option<u32>; 128],
}

/// One symbol of the word being merged, in a doubly linked list.
#[derive(Clone, Copy)]
struct Sym {
    piece: u32,
    prev: u32,
    next: u32,
    alive: bool,
}

const NONE: u32 = u32::MAX;

/// A queued merge: (rank, left index, right index, left piece, right piece). The heap
/// pops the smallest: lowest rank, then leftmost, llama.cpp's order.
type Candidate = (u32, u32, u32, u32, u32);

impl Bpe {
    /// `tokens[i]` is the text of token `i`; `merges` are `"left right"` in rank order.
    pub fn new(tokens: &[String], merges: &[String]) -> Bpe {
        let mut bpe = Bpe {
            pieces: Vec::with_capacity(tokens.len() + 256),
            piece_ids: HashMap::with_capacity(tokens.len() + 256),
            merges: IntMap::default(),
            byte_piece: [0; 256],
            ascii_token: [None; 128],
        };
        // A text held by several tokens maps to the last (llama.cpp's token_to_id).
        for (i, t) in tokens.iter().enumerate() {
            let p = bpe.intern(t);
            bpe.pieces[p as usize].token = Some(i as u32);
        }
        let chars = byte_chars();
        let mut buf = [0u8; 4];
        for (b, c) in chars.iter().enumerate() {
            bpe.byte_piece[b] = bpe.intern(c.encode_utf8(&mut buf));
        }
        for b in 0..128u8 {
            bpe.ascii_token[b as usize] = bpe.token(char::from(b).encode_utf8(&mut buf));
        }
        bpe.merges.reserve(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            // llama.cpp splits at the first space after the first byte.
            let bytes = m.as_bytes();
            let Some(sp) = (1..bytes.len()).find(|&i| bytes[i] == b' ') else {
                continue;
            };
            let (left, right) = (&m[..sp], &m[sp + 1..]);
            let l = bpe.intern(left);
            let r = bpe.intern(right);
            let merged = bpe.intern(&format!("{left}{right}"));
            // A repeated pair keeps its first (best) rank.
            bpe.merges
                .entry(pair(l, r))
                .or_insert((rank as u32, merged));
        }
        bpe
    }

    fn intern(&mut self, text: &str) -> u32 {
        if let Some(&p) = self.piece_ids.get(text) {
            return p;
        }
        let p = self.pieces.len() as u32;
        self.pieces.push(Piece {
            text: text.into(),
            token: None,
        });
        self.piece_ids.insert(text.into(), p);
        p
    }

    /// The token whose text is `text`.
    pub fn token(&self, text: &str) -> Option<u32> {
        self.pieces[*self.piece_ids.get(text)? as usize].token
    }

    /// Appends the tokens of one word (its raw UTF-8 bytes).
    ///
    /// Symbols start as one byte each and the adjacent pair with the lowest merge rank
    /// is merged first, the leftmost on ties, until no pair has a merge. A final symbol
    /// that is not a token is emitted as the tokens of its one-byte characters, and its
    /// other characters are dropped, as llama.cpp does (it never panics on a byte the
    /// vocabulary lacks).
    pub fn encode_word(&self, word: &[u8], out: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        let mut syms: Vec<Sym> = word
            .iter()
            .enumerate()
            .map(|(i, &b)| Sym {
                piece: self.byte_piece[b as usize],
                prev: if i == 0 { NONE } else { i as u32 - 1 },
                next: if i + 1 == word.len() {
                    NONE
                } else {
                    i as u32 + 1
                },
                alive: true,
            })
            .collect();
        let mut queue: BinaryHeap<Reverse<Candidate>> = BinaryHeap::new();
        let push = |queue: &mut BinaryHeap<_>, syms: &[Sym], l: u32, r: u32| {
            if l == NONE || r == NONE {
                return;
            }
            let (lp, rp) = (syms[l as usize].piece, syms[r as usize].piece);
            if let Some(&(rank, _)) = self.merges.get(&pair(lp, rp)) {
                queue.push(Reverse((rank, l, r, lp, rp)));
            }
        };
        for i in 1..syms.len() as u32 {
            push(&mut queue, &syms, i - 1, i);
        }
        while let Some(Reverse((_, l, r, lp, rp))) = queue.pop() {
            let (ls, rs) = (syms[l as usize], syms[r as usize]);
            // Stale: a side was merged away or grew since the pair was queued.
            if !ls.alive || !rs.alive || ls.piece != lp || rs.piece != rp {
                continue;
            }
            let merged = self.merges[&pair(lp, rp)].1;
            syms[l as usize].piece = merged;
            syms[l as usize].next = rs.next;
            syms[r as usize].alive = false;
            if rs.next != NONE {
                syms[rs.next as usize].prev = l;
            }
            push(&mut queue, &syms, ls.prev, l);
            push(&mut queue, &syms, l, rs.next);
        }
        let mut i = 0u32;
        while i != NONE {
            let piece = &self.pieces[syms[i as usize].piece as usize];
            match piece.token {
                Some(t) => out.push(t),
                None => out.extend(
                    piece
                        .text
                        .bytes()
                        .filter(|b| b.is_ascii())
                        .filter_map(|b| self.ascii_token[b as usize]),
                ),
            }
            i = syms[i as usize].next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_is_gpt2s() {
        let m = byte_chars();
        let mut seen: Vec<char> = m.to_vec();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 256);
        assert_eq!(m[b'a' as usize], 'a');
        assert_eq!(m[b' ' as usize], 'Ġ');
        assert_eq!(m[b'\n' as usize], 'Ċ');
        assert_eq!(m[0], 'Ā');
        assert_eq!(m[0xAD], 'Ń');
        assert_eq!(m[0xE9], 'é');
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn enc(bpe: &Bpe, word: &str) -> Vec<u32> {
        let mut out = Vec::new();
        bpe.encode_word(word.as_bytes(), &mut out);
        out
    }

    #[test]
    fn merges_apply_by_rank_not_vocabulary_order() {
        let tokens = strings(&["a", "b", "c", "ab", "bc", "abc"]);
        let bc_first = Bpe::new(&tokens, &strings(&["b c", "a b", "a bc"]));
        assert_eq!(enc(&bc_first, "abc"), [5]);
        assert_eq!(enc(&bc_first, "abcab"), [5, 3]);
        let ab_first = Bpe::new(&tokens, &strings(&["a b", "b c", "a bc"]));
        assert_eq!(enc(&ab_first, "abc"), [3, 2]);
    }

    #[test]
    fn ties_merge_leftmost_first() {
        let bpe = Bpe::new(&strings(&["a", "aa"]), &strings(&["a a"]));
        assert_eq!(enc(&bpe, "aaa"), [1, 0]);
        assert_eq!(enc(&bpe, "aaaa"), [1, 1]);
    }

    #[test]
    fn repeated_merge_keeps_first_rank() {
        let tokens = strings(&["a", "b", "c", "ab", "bc"]);
        let bpe = Bpe::new(&tokens, &strings(&["a b", "b c", "a b"]));
        assert_eq!(enc(&bpe, "abc"), [3, 2]);
    }

    #[test]
    fn unknown_symbols_fall_back_to_ascii_bytes_or_vanish() {
        // "x y" merges to "xy", which is not a token: its one-byte characters are used.
        let bpe = Bpe::new(&strings(&["x", "y", "Ġ"]), &strings(&["x y"]));
        assert_eq!(enc(&bpe, "xy"), [0, 1]);
        // 'é' is bytes C3 A9 -> "Ã©": not tokens, and not ASCII: dropped, no panic.
        assert_eq!(enc(&bpe, "xé y"), [0, 2, 1]);
        assert_eq!(enc(&bpe, ""), Vec::<u32>::new());
    }
}
