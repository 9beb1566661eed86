//! Offline resolution of hub ids (`ORG/NAME`) through the local HuggingFace cache.
//!
//! The cache lays a model out as `models--ORG--NAME/refs/main` (a commit hash) and
//! `models--ORG--NAME/snapshots/<hash>/` (the files). We never touch the network.

use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};

/// The environment the cache location depends on, separated out so tests can inject it.
#[derive(Debug, Clone, Default)]
pub struct CacheEnv {
    pub hf_hub_cache: Option<PathBuf>,
    pub hf_home: Option<PathBuf>,
    pub home: Option<PathBuf>,
}

impl CacheEnv {
    /// Reads `HF_HUB_CACHE`, `HF_HOME` and `HOME` from the process environment.
    pub fn from_process() -> Self {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        CacheEnv {
            hf_hub_cache: var("HF_HUB_CACHE"),
            hf_home: var("HF_HOME"),
            home: var("HOME"),
        }
    }

    /// `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    pub fn hub_dir(&self) -> Option<PathBuf> {
        if let Some(p) = &self.hf_hub_cache {
            return Some(p.clone());
        }
        if let Some(p) = &self.hf_home {
            return Some(p.join("hub"));
        }
        self.home
            .as_ref()
            .map(|h| h.join(".cache").join("huggingface").join("hub"))
    }
}

/// Whether `s` has the shape of a hub id: `ORG/NAME`, each part non-empty and made of
/// letters, digits, `-`, `_` and `.` (not `.` or `..` alone).
pub fn looks_like_hub_id(s: &str) -> bool {
    let mut parts = s.split('/');
    let (Some(org), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let ok = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    ok(org) && ok(name)
}

/// Resolves `ORG/NAME` to its snapshot folder in the cache (revision from `refs/main`;
/// if that ref is missing and exactly one snapshot exists, that one).
pub fn resolve_hub_id(id: &str, env: &CacheEnv) -> Result<PathBuf> {
    let not_found = |looked: &Path| ModelError::NotInCache {
        id: id.to_string(),
        looked: looked.display().to_string(),
    };
    let Some(hub) = env.hub_dir() else {
        return Err(ModelError::NotInCache {
            id: id.to_string(),
            looked: "no cache folder: HF_HUB_CACHE, HF_HOME and HOME are all unset".into(),
        });
    };
    let repo = hub.join(format!("models--{}", id.replace('/', "--")));
    let snapshots = repo.join("snapshots");
    let ref_main = repo.join("refs").join("main");
    if let Ok(rev) = std::fs::read_to_string(&ref_main) {
        let rev = rev.trim();
        let dir = snapshots.join(rev);
        if !rev.is_empty() && !rev.contains('/') && dir.is_dir() {
            return Ok(dir);
        }
        return Err(not_found(&dir));
    }
    let entries: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    match entries.as_slice() {
        [only] => Ok(only.clone()),
        _ => Err(not_found(&ref_main)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_id_shape() {
        assert!(looks_like_hub_id("Qwen/Qwen3-8B"));
        assert!(looks_like_hub_id("HuggingFaceTB/SmolLM2-135M-Instruct"));
        assert!(!looks_like_hub_id("Qwen3-8B"));
        assert!(!looks_like_hub_id("a/b/c"));
        assert!(!looks_like_hub_id("../x"));
        assert!(!looks_like_hub_id("/abs/path"));
    }

    #[test]
    fn cache_dir_precedence() {
        let mut env = CacheEnv {
            hf_hub_cache: Some("/c".into()),
            hf_home: Some("/h".into()),
            home: Some("/home/u".into()),
        };
        assert_eq!(env.hub_dir().unwrap(), PathBuf::from("/c"));
        env.hf_hub_cache = None;
        assert_eq!(env.hub_dir().unwrap(), PathBuf::from("/h/hub"));
        env.hf_home = None;
        assert_eq!(
            env.hub_dir().unwrap(),
            PathBuf::from("/home/u/.cache/huggingface/hub")
        );
    }

    #[test]
    fn resolves_through_refs_main() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("hub/models--Org--Model");
        std::fs::create_dir_all(repo.join("snapshots/abc123")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots/old999")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        let env = CacheEnv {
            hf_home: Some(tmp.path().to_path_buf()),
            ..Default::default()
        };
        assert_eq!(
            resolve_hub_id("Org/Model", &env).unwrap(),
            repo.join("snapshots/abc123")
        );
        let e = resolve_hub_id("Org/Other", &env).unwrap_err().to_string();
        assert!(
            e.contains("models--Org--Other") && e.contains("hf download Org/Other"),
            "{e}"
        );
    }
}
