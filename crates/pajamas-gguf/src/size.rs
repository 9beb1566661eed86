//! The size of a GGUF header before writing it: what a size budget has to leave for the
//! metadata and tensor infos. The header does not depend on the tensors' types (each info
//! holds a u32 type id and a u64 offset whatever the type), so it is known before the
//! per-tensor types are chosen.

use crate::format::DEFAULT_ALIGNMENT;
use crate::value::{encode_str, Value};

/// Bytes from the start of the file to the data section: magic, version, counts, the
/// metadata entries, the tensor infos (`(name, n_dims)`), and the padding to the
/// alignment (`general.alignment` if present in `metadata`, else 32).
pub fn header_size(metadata: &[(String, Value)], tensors: &[(&str, usize)]) -> u64 {
    let mut buf = Vec::new();
    let mut n = 4 + 4 + 8 + 8u64;
    let mut align = u64::from(DEFAULT_ALIGNMENT);
    for (k, v) in metadata {
        buf.clear();
        encode_str(k, &mut buf);
        v.encode(&mut buf);
        n += buf.len() as u64 + 4;
        if k == "general.alignment" {
            if let Some(a) = v.as_uint().filter(|a| a.is_power_of_two()) {
                align = a;
            }
        }
    }
    for (name, dims) in tensors {
        n += 8 + name.len() as u64 + 4 + 8 * *dims as u64 + 4 + 8;
    }
    n.div_ceil(align) * align
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GgmlType, GgufFile, GgufWriter};

    #[test]
    fn matches_the_writer() {
        let dir = std::env::temp_dir().join(format!("pajamas-gguf-size-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.gguf");
        let meta: Vec<(String, Value)> = vec![
            ("general.architecture".into(), Value::String("llama".into())),
            ("llama.block_count".into(), Value::U32(2)),
            ("x.f".into(), Value::F32(1.5)),
        ];
        let tensors = [("output_norm.weight", 1usize), ("blk.0.attn_q.weight", 2)];
        let mut w = GgufWriter::create(&path).unwrap();
        for (k, v) in &meta {
            w.add_metadata(k, v.clone()).unwrap();
        }
        w.add_tensor_info("output_norm.weight", &[64], GgmlType::F32)
            .unwrap();
        w.add_tensor_info("blk.0.attn_q.weight", &[64, 3], GgmlType::F16)
            .unwrap();
        w.begin_data().unwrap();
        w.write_tensor("output_norm.weight", &[0u8; 256]).unwrap();
        w.write_tensor("blk.0.attn_q.weight", &[0u8; 384]).unwrap();
        w.finish().unwrap();
        let f = GgufFile::open(&path).unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        assert_eq!(header_size(&meta, &tensors), size - 256 - 384);
        drop(f);
        std::fs::remove_dir_all(&dir).ok();
    }
}
