//! Typed access to a `config.json` whose keys vary between families.

use serde_json::Value;

/// A view of a config object with alias-aware getters.
#[derive(Debug, Clone, Copy)]
pub struct Cfg<'a> {
    pub(crate) obj: &'a serde_json::Map<String, Value>,
}

impl<'a> Cfg<'a> {
    pub fn new(v: &'a Value) -> Option<Self> {
        v.as_object().map(|obj| Cfg { obj })
    }

    /// The first present, non-null value among `keys`.
    pub fn get(&self, keys: &[&str]) -> Option<&'a Value> {
        keys.iter()
            .filter_map(|k| self.obj.get(*k))
            .find(|v| !v.is_null())
    }

    pub fn has(&self, keys: &[&str]) -> bool {
        self.get(keys).is_some()
    }

    /// An unsigned integer (floats with no fraction are accepted: some configs write `1e6`).
    pub fn u64(&self, keys: &[&str]) -> Option<u64> {
        let v = self.get(keys)?;
        v.as_u64().or_else(|| {
            v.as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f < 9.0e15)
                .map(|f| f as u64)
        })
    }

    pub fn bool(&self, keys: &[&str]) -> Option<bool> {
        self.get(keys)?.as_bool()
    }

    pub fn str(&self, keys: &[&str]) -> Option<&'a str> {
        self.get(keys)?.as_str()
    }

    pub fn obj(&self, key: &str) -> Option<Cfg<'a>> {
        self.obj.get(key).and_then(Cfg::new)
    }

    pub fn str_list(&self, keys: &[&str]) -> Option<Vec<&'a str>> {
        self.get(keys)?
            .as_array()?
            .iter()
            .map(Value::as_str)
            .collect()
    }

    /// The `architectures` list (class names such as `LlamaForCausalLM`).
    pub fn architectures(&self) -> Vec<String> {
        self.str_list(&["architectures"])
            .unwrap_or_default()
            .into_iter()
            .map(String::from)
            .collect()
    }

    pub fn u64_list(&self, keys: &[&str]) -> Option<Vec<u64>> {
        self.get(keys)?
            .as_array()?
            .iter()
            .map(Value::as_u64)
            .collect()
    }
}
