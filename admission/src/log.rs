//! Structured logs: one JSON object a line on stderr.

use serde_json::{Map, Value};

/// Logs `message` with `fields`.
pub fn event(message: &str, fields: &[(&str, Value)]) {
    let mut line = Map::with_capacity(fields.len() + 2);
    line.insert("time".into(), jiff::Timestamp::now().to_string().into());
    line.insert("msg".into(), message.into());
    for (key, value) in fields {
        line.insert((*key).to_owned(), value.clone());
    }
    eprintln!("{}", Value::Object(line));
}
