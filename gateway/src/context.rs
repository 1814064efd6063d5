//! Context variables: the typed values that routing rules test.
//!
//! A workstream declares its variables (`text`, `number` or `bool`); values arrive as JSON
//! from customers, bots and IVR connectors and are checked against those declarations here,
//! once, so the routing core only ever sees well-typed values.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The declared type of a context variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VarType {
    Text,
    Number,
    Bool,
}

impl fmt::Display for VarType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VarType::Text => "text",
            VarType::Number => "number",
            VarType::Bool => "bool",
        })
    }
}

/// A context variable's value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Text(String),
    Number(f64),
    Bool(bool),
}

impl Value {
    /// The type this value has.
    pub fn var_type(&self) -> VarType {
        match self {
            Value::Text(_) => VarType::Text,
            Value::Number(_) => VarType::Number,
            Value::Bool(_) => VarType::Bool,
        }
    }

    /// Empty means "never set" for rules; an empty text counts as empty too.
    pub fn is_empty(&self) -> bool {
        matches!(self, Value::Text(s) if s.is_empty())
    }

    /// Converts a JSON value to the declared type. Text must be a JSON string; numbers and
    /// bools also accept their string spelling, because IVR connectors (Twilio's
    /// `customParameters`, SIP headers) only carry strings. `Ok(None)` means "unset" (JSON null).
    pub fn from_json(ty: VarType, json: &serde_json::Value) -> Result<Option<Value>, String> {
        use serde_json::Value as J;
        match (ty, json) {
            (_, J::Null) => Ok(None),
            (VarType::Text, J::String(s)) => Ok(Some(Value::Text(s.clone()))),
            (VarType::Number, J::Number(n)) => {
                n.as_f64().map(|f| Some(Value::Number(f))).ok_or_else(|| "number out of range".to_owned())
            }
            (VarType::Number, J::String(s)) => match s.trim().parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(Some(Value::Number(f))),
                _ => Err(format!("expected a number, got {s:?}")),
            },
            (VarType::Bool, J::Bool(b)) => Ok(Some(Value::Bool(*b))),
            (VarType::Bool, J::String(s)) if s == "true" => Ok(Some(Value::Bool(true))),
            (VarType::Bool, J::String(s)) if s == "false" => Ok(Some(Value::Bool(false))),
            (ty, other) => Err(format!("expected {ty}, got {}", json_kind(other))),
        }
    }

    /// Parses the command-line spelling (`--var K=V`) for the declared type.
    pub fn parse_str(ty: VarType, s: &str) -> Result<Value, String> {
        match ty {
            VarType::Text => Ok(Value::Text(s.to_owned())),
            _ => Value::from_json(ty, &serde_json::Value::String(s.to_owned()))
                .map(|v| v.unwrap_or(Value::Text(String::new()))),
        }
    }

    /// Keeps an undeclared variable as it came, so it still reaches the agent (Copilot
    /// Studio's `va_*` variables, for example). Objects and arrays are kept as JSON text.
    pub fn from_json_untyped(json: &serde_json::Value) -> Option<Value> {
        use serde_json::Value as J;
        match json {
            J::Null => None,
            J::String(s) => Some(Value::Text(s.clone())),
            J::Bool(b) => Some(Value::Bool(*b)),
            J::Number(n) => n.as_f64().map(Value::Number),
            other => Some(Value::Text(other.to_string())),
        }
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a bool",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "text",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A conversation's context variables, ordered by name so that what we print is stable.
pub type Context = BTreeMap<String, Value>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn coercion_table() {
        let cases = [
            (VarType::Text, json!("CreditCard"), Ok(Some(Value::Text("CreditCard".into())))),
            (VarType::Text, json!(5), Err(())),
            (VarType::Number, json!(5), Ok(Some(Value::Number(5.0)))),
            (VarType::Number, json!("5.5"), Ok(Some(Value::Number(5.5)))),
            (VarType::Number, json!("five"), Err(())),
            (VarType::Bool, json!("true"), Ok(Some(Value::Bool(true)))),
            (VarType::Bool, json!(1), Err(())),
            (VarType::Bool, json!(null), Ok(None)),
        ];
        for (ty, input, want) in cases {
            let got = Value::from_json(ty, &input).map_err(|_| ());
            assert_eq!(got, want, "{ty} from {input}");
        }
    }
}
