//! The JSON-RPC messages a client POSTs to the MCP endpoint, as far as keyward's grants need
//! them: each message's `id`, `method` and the primitive it names (`params.name` of a tool or
//! prompt, `params.uri` of a resource). A body is one message or, as 2025-03-26 allowed, a
//! batch (an array); answers to the server's requests (`result`/`error`, no `method`) pass.

use serde_json::Value;

use crate::config::Kind;

/// JSON-RPC error codes keyward answers with.
pub(crate) mod code {
    /// The body is not JSON.
    pub(crate) const PARSE_ERROR: i64 = -32700;
    /// JSON, but not a JSON-RPC message.
    pub(crate) const INVALID_REQUEST: i64 = -32600;
    /// A call of a tool, resource or prompt the client is not granted.
    pub(crate) const NOT_PERMITTED: i64 = -32602;
    /// `Mcp-Method` or `Mcp-Name` disagrees with the body (2026-07-28 `HeaderMismatch`).
    pub(crate) const HEADER_MISMATCH: i64 = -32020;
}

/// A parsed POST body.
#[derive(Debug)]
pub(crate) struct Body {
    /// The messages, in order.
    pub(crate) messages: Vec<Value>,
    /// Whether they came as an array.
    pub(crate) batch: bool,
}

/// Why a body is refused before anything else is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Invalid {
    /// Not JSON.
    Json,
    /// Not a JSON-RPC message or batch of them.
    Shape,
}

impl Invalid {
    pub(crate) fn code(self) -> i64 {
        match self {
            Invalid::Json => code::PARSE_ERROR,
            Invalid::Shape => code::INVALID_REQUEST,
        }
    }

    pub(crate) fn message(self) -> &'static str {
        match self {
            Invalid::Json => "the request body is not JSON",
            Invalid::Shape => "the request body is not a JSON-RPC message",
        }
    }
}

/// Parses a POST body.
pub(crate) fn parse(bytes: &[u8]) -> Result<Body, Invalid> {
    let value: Value = serde_json::from_slice(bytes).map_err(|_| Invalid::Json)?;
    let (messages, batch) = match value {
        Value::Array(messages) if !messages.is_empty() => (messages, true),
        Value::Object(_) => (vec![value], false),
        _ => return Err(Invalid::Shape),
    };
    if !messages.iter().all(|m| m.get("jsonrpc").and_then(Value::as_str) == Some("2.0")) {
        return Err(Invalid::Shape);
    }
    Ok(Body { messages, batch })
}

/// The message's method, when it is a request or notification.
pub(crate) fn method(message: &Value) -> Option<&str> {
    message.get("method")?.as_str()
}

/// The primitive a call names, when the method is one grants govern.
pub(crate) fn target(message: &Value) -> Option<(Kind, Option<&str>)> {
    let params = message.get("params");
    let field = |name: &str| params.and_then(|p| p.get(name)).and_then(Value::as_str);
    match method(message)? {
        "tools/call" => Some((Kind::Tool, field("name"))),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            Some((Kind::Resource, field("uri")))
        }
        "prompts/get" => Some((Kind::Prompt, field("name"))),
        _ => None,
    }
}

/// The kind a list request lists.
pub(crate) fn listed(message: &Value) -> Option<Kind> {
    match method(message)? {
        "tools/list" => Some(Kind::Tool),
        "resources/list" => Some(Kind::Resource),
        "prompts/list" => Some(Kind::Prompt),
        _ => None,
    }
}

/// The name `Mcp-Name` must agree with: `params.name`, else `params.uri`.
pub(crate) fn name(message: &Value) -> Option<&str> {
    let params = message.get("params")?;
    params.get("name").or_else(|| params.get("uri"))?.as_str()
}

/// A JSON-RPC error response for `id` (null when the message had none).
pub(crate) fn error(id: Option<&Value>, code: i64, message: &str) -> Value {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "error": {"code": code, "message": message},
    })
}

/// What a denied call is told.
pub(crate) fn not_permitted(kind: Kind) -> &'static str {
    match kind {
        Kind::Tool => "tool not permitted for this client",
        Kind::Resource => "resource not permitted for this client",
        Kind::Prompt => "prompt not permitted for this client",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_a_batch_and_what_is_no_message() {
        let one = parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}"#)
            .unwrap();
        assert!(!one.batch && one.messages.len() == 1);
        assert_eq!(target(&one.messages[0]), Some((Kind::Tool, Some("t"))));
        let batch = parse(
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},
            {"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"u://x"}}]"#,
        )
        .unwrap();
        assert!(batch.batch);
        assert_eq!(listed(&batch.messages[0]), Some(Kind::Tool));
        assert_eq!(target(&batch.messages[1]), Some((Kind::Resource, Some("u://x"))));
        assert_eq!(name(&batch.messages[1]), Some("u://x"));
        assert_eq!(parse(b"{not json").unwrap_err(), Invalid::Json);
        for shape in [&b"[]"[..], b"3", b"\"x\"", br#"{"id":1}"#, br#"[{"jsonrpc":"2.0"},{}]"#] {
            assert_eq!(parse(shape).unwrap_err(), Invalid::Shape);
        }
        let reply = parse(br#"{"jsonrpc":"2.0","id":5,"result":{}}"#).unwrap();
        assert_eq!(target(&reply.messages[0]), None);
    }
}
