//! What the ingress span says about the MCP message keyward read, in the OpenTelemetry MCP
//! semantic conventions of semantic-conventions v1.41.0 (`docs/gen-ai/mcp.md`, status
//! Development; the last release before they moved, with these names, to
//! open-telemetry/semantic-conventions-genai): `mcp.method.name`,
//! `gen_ai.tool.name` and `gen_ai.operation.name = execute_tool` for `tools/call`,
//! `gen_ai.prompt.name` for `prompts/get`, `jsonrpc.request.id`, and when keyward itself
//! answers with a JSON-RPC error, `rpc.response.status_code` and `error.type` (the code as a
//! string), plus `rpc.jsonrpc.error_code` (the integer, the older RPC conventions' name, for
//! consumers that still chart it). `mcp.session.id` is a digest, never the id (see
//! [`super::session::digest`]).
//!
//! Never recorded: `mcp.resource.uri` (a URI can carry a credential or a person's data, and is
//! unbounded in cardinality), tool arguments and results (opt-in in the conventions; they are
//! the data keyward protects). The span is the HTTP exchange, so a batch (several messages in
//! one request) gets no per-message fields, only keyward's error code. Every value is the
//! client's text: it is capped in length here, and redacted on export like every attribute.
//! The fields are declared `Empty` on the ingress span; nothing is computed when the span is
//! not exported.

use serde_json::Value;
use tracing::Span;

use super::message;

/// The longest client-chosen text a span attribute carries, in bytes.
const MAX_TEXT: usize = 128;

/// Records the method, the tool or prompt, and the request id of a body that is one message.
pub(crate) fn describe(span: &Span, body: &message::Body) {
    let [message] = body.messages.as_slice() else { return };
    if span.is_disabled() {
        return;
    }
    let Some(method) = message::method(message) else { return };
    span.record("mcp.method.name", capped(method));
    let name = || message.get("params")?.get("name")?.as_str();
    match method {
        "tools/call" => {
            span.record("gen_ai.operation.name", "execute_tool");
            if let Some(tool) = name() {
                span.record("gen_ai.tool.name", capped(tool));
            }
        }
        "prompts/get" => {
            if let Some(prompt) = name() {
                span.record("gen_ai.prompt.name", capped(prompt));
            }
        }
        _ => {}
    }
    match message.get("id") {
        Some(Value::String(id)) => span.record("jsonrpc.request.id", capped(id)),
        Some(Value::Number(id)) => span.record("jsonrpc.request.id", id.to_string()),
        // Null or absent (a notification): not recorded, as the conventions say.
        _ => span,
    };
}

/// Records the JSON-RPC error code keyward answered with.
pub(crate) fn answered(span: &Span, code: i64) {
    if span.is_disabled() {
        return;
    }
    let text = code.to_string();
    span.record("rpc.response.status_code", text.as_str());
    span.record("error.type", text.as_str());
    span.record("rpc.jsonrpc.error_code", code);
}

/// `text`, cut at a character boundary at most [`MAX_TEXT`] bytes in.
fn capped(text: &str) -> &str {
    if text.len() <= MAX_TEXT {
        return text;
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        assert_eq!(capped("get_activity"), "get_activity");
        let long = "é".repeat(100);
        let cut = capped(&long);
        assert!(cut.len() <= MAX_TEXT && long.starts_with(cut) && !cut.is_empty());
    }
}
