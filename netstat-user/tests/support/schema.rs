//! netstat's JSON schema (schema/netstat.schema.json), compiled once per
//! test process: `check` validates a document against one of its
//! definitions, so every test that reads netstat's JSON also checks it.
use std::{collections::HashMap, sync::Mutex, sync::OnceLock};

use serde_json::Value;

const SCHEMA: &str = include_str!("../../../schema/netstat.schema.json");

fn validators() -> &'static Mutex<HashMap<String, &'static jsonschema::Validator>> {
    static V: OnceLock<Mutex<HashMap<String, &'static jsonschema::Validator>>> = OnceLock::new();
    V.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The validator for `#/$defs/<def>` ("" = the whole schema: any document).
fn validator(def: &str) -> &'static jsonschema::Validator {
    let mut m = validators().lock().unwrap();
    if let Some(v) = m.get(def) {
        return v;
    }
    let mut schema: Value = serde_json::from_str(SCHEMA).expect("schema/netstat.schema.json is JSON");
    if !def.is_empty() {
        assert!(schema["$defs"].get(def).is_some(), "the schema has no definition {def:?}");
        schema["oneOf"] = serde_json::json!([{ "$ref": format!("#/$defs/{def}") }]);
    }
    let v: &'static jsonschema::Validator =
        Box::leak(Box::new(jsonschema::draft202012::new(&schema).expect("schema/netstat.schema.json compiles")));
    m.insert(def.to_string(), v);
    v
}

/// What is wrong with `doc` as a `def` ("" = any netstat document).
pub fn errors(doc: &Value, def: &str) -> Vec<String> {
    validator(def)
        .iter_errors(doc)
        .map(|e| {
            let mut msg = e.to_string();
            msg.truncate(160);
            format!("at {} (schema {}): {msg}", e.instance_path(), e.schema_path())
        })
        .collect()
}

/// Panic, showing the document, unless it is a valid `def`.
pub fn check(doc: &Value, def: &str) {
    let errs = errors(doc, def);
    assert!(errs.is_empty(), "not a valid {def:?} of schema 1: {errs:#?}\n{doc}");
}

/// The definition a --stream --json line must match.
pub fn stream_def(line: &Value) -> &'static str {
    if line["type"] == "lost" { "lost" } else { "event" }
}
