//! What keyward reads of the MCP conversation itself, on the ingress:
//! - for a client with grants (`tools`, `resources`, `prompts`), every POST body: a call of a
//!   primitive it is not granted is answered by keyward and never forwarded, list answers come
//!   back with only the granted entries ([`filter`]);
//! - for every request, `Mcp-Method` / `Mcp-Name` must agree with the body when keyward reads it;
//! - for every client, session ids are bound to it ([`session`]);
//! - what it read is recorded on the request's span, in the MCP semantic conventions
//!   ([`span`]).
//!
//! The rule for bodies, exactly: a POST from a client with grants is read whole (up to
//! `ingress.max_body_bytes`) whatever its `Content-Type`. Not JSON: 400 with JSON-RPC -32700.
//! JSON that is not a JSON-RPC message or a non-empty batch of them: 400 with -32600. Otherwise
//! each message is checked: `tools/call` by `params.name`, `resources/read`, `subscribe` and
//! `unsubscribe` by `params.uri`, `prompts/get` by `params.name` (a call without the field is
//! denied); a denied request is answered with -32602 for its id, a denied notification
//! dropped; answers to the server (`result`/`error`) and every other method pass. If nothing is
//! left to forward, keyward answers alone (200 `application/json`, or 202 when only
//! notifications were sent); else the rest goes on, and keyward's errors join the backend's
//! answer. GET and DELETE carry no body to check. Policy is always decided from the body,
//! never from the headers.

pub(crate) mod filter;
pub(crate) mod message;
pub(crate) mod session;
pub(crate) mod span;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName};
use serde_json::Value;

use crate::config::{Grants, Kind};
use message::code;

/// `Mcp-Method` (2026-07-28).
pub(crate) const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
/// `Mcp-Name` (2026-07-28).
pub(crate) const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");

/// What to do with one POST body.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Forward `body` (the original bytes, or the batch without its denied calls), and change
    /// the answer as `answers` says.
    Forward { body: Bytes, answers: filter::Answers },
    /// keyward answers alone: the HTTP status and the JSON-RPC body (none: 202).
    Answer { status: http::StatusCode, body: Option<Value> },
}

/// The calls a body had that its client may not make: kind and name (for the audit log and
/// the metrics).
pub(crate) type Denied = Vec<(Kind, String)>;

/// Decides what happens to a POST body from a client with `grants`, and which of its calls
/// were denied. The current span (the request's) learns the message and keyward's error code.
pub(crate) fn decide(headers: &HeaderMap, body: Bytes, grants: &Arc<Grants>) -> (Decision, Denied) {
    let span = tracing::Span::current();
    let parsed = match message::parse(&body) {
        Ok(parsed) => parsed,
        Err(invalid) => {
            span::answered(&span, invalid.code());
            let body = Some(message::error(None, invalid.code(), invalid.message()));
            return (Decision::Answer { status: http::StatusCode::BAD_REQUEST, body }, Vec::new());
        }
    };
    span::describe(&span, &parsed);
    if let Some(mismatch) = header_mismatch(headers, &parsed) {
        span::answered(&span, code::HEADER_MISMATCH);
        let body = Some(message::error(None, code::HEADER_MISMATCH, mismatch));
        return (Decision::Answer { status: http::StatusCode::BAD_REQUEST, body }, Vec::new());
    }
    let mut kept = Vec::with_capacity(parsed.messages.len());
    let mut errors = Vec::new();
    let mut denied = Vec::new();
    let mut lists = Vec::new();
    for message in parsed.messages {
        if let Some((kind, name)) = message::target(&message) {
            if !name.is_some_and(|name| grants.allows(kind, name)) {
                denied.push((kind, name.unwrap_or_default().to_owned()));
                if let Some(id) = message.get("id") {
                    errors.push(message::error(
                        Some(id),
                        code::NOT_PERMITTED,
                        message::not_permitted(kind),
                    ));
                }
                continue;
            }
        }
        if let (Some(kind), Some(id)) = (message::listed(&message), message.get("id")) {
            if grants.of(kind).is_some() {
                lists.push((id.clone(), kind));
            }
        }
        kept.push(message);
    }
    if !errors.is_empty() {
        span::answered(&span, code::NOT_PERMITTED);
    }
    let decision = if denied.is_empty() {
        Decision::Forward { body, answers: filter::Answers::new(lists, grants.clone(), Vec::new()) }
    } else if kept.is_empty() {
        let body = match (parsed.batch, errors.len()) {
            (_, 0) => None,
            (false, _) => errors.pop(),
            (true, _) => Some(Value::Array(errors)),
        };
        let status = if body.is_some() { http::StatusCode::OK } else { http::StatusCode::ACCEPTED };
        Decision::Answer { status, body }
    } else {
        let rest = if parsed.batch { Value::Array(kept) } else { kept.remove(0) };
        let body = Bytes::from(serde_json::to_vec(&rest).expect("JSON values serialize"));
        Decision::Forward { body, answers: filter::Answers::new(lists, grants.clone(), errors) }
    };
    (decision, denied)
}

/// Whether `Mcp-Method` / `Mcp-Name`, when present, disagree with the body.
pub(crate) fn header_mismatch(headers: &HeaderMap, body: &message::Body) -> Option<&'static str> {
    let method = headers.get(MCP_METHOD);
    let name = headers.get(MCP_NAME);
    if method.is_none() && name.is_none() {
        return None;
    }
    let [message] = body.messages.as_slice() else {
        return Some("Mcp-Method and Mcp-Name describe one message, not a batch");
    };
    if method.is_some_and(|m| Some(m.as_bytes()) != message::method(message).map(str::as_bytes)) {
        return Some("the Mcp-Method header does not match the body's method");
    }
    if name.is_some_and(|n| Some(n.as_bytes()) != message::name(message).map(str::as_bytes)) {
        return Some("the Mcp-Name header does not match the body's params");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Glob;

    fn grants(tools: &str) -> Arc<Grants> {
        let tools: Vec<Glob> = serde_json::from_str(tools).unwrap();
        Arc::new(Grants { tools: Some(tools), ..Grants::default() })
    }

    fn call(id: i64, tool: &str) -> Value {
        serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": {}}})
    }

    fn answer((decision, _): (Decision, Denied)) -> (u16, Option<Value>) {
        match decision {
            Decision::Answer { status, body } => (status.as_u16(), body),
            Decision::Forward { .. } => panic!("forwarded"),
        }
    }

    #[test]
    fn a_denied_call_is_answered_and_an_allowed_one_forwarded() {
        let grants = grants(r#"["get_activity_*"]"#);
        let headers = HeaderMap::new();
        let denied = Bytes::from(call(3, "get_sleep_by_date").to_string());
        let (status, body) = answer(decide(&headers, denied, &grants));
        assert_eq!(status, 200);
        let body = body.unwrap();
        assert_eq!((body["id"].as_i64(), body["error"]["code"].as_i64()), (Some(3), Some(-32602)));
        assert_eq!(body["error"]["message"], "tool not permitted for this client");
        let allowed = Bytes::from(call(4, "get_activity_by_date").to_string());
        let (decision, denied) = decide(&headers, allowed.clone(), &grants);
        assert!(denied.is_empty());
        assert!(matches!(decision, Decision::Forward { body, .. } if body == allowed));
    }

    #[test]
    fn a_batch_is_checked_element_by_element() {
        let grants = grants(r#"["a"]"#);
        let batch = Value::Array(vec![call(1, "a"), call(2, "b")]);
        let (decision, denied) = decide(&HeaderMap::new(), Bytes::from(batch.to_string()), &grants);
        assert_eq!(denied, [(Kind::Tool, "b".to_owned())]);
        let Decision::Forward { body, answers } = decision else { panic!("nothing forwarded") };
        let forwarded: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(forwarded, Value::Array(vec![call(1, "a")]));
        let merged: Value = serde_json::from_slice(
            &answers.json(br#"[{"jsonrpc":"2.0","id":1,"result":{}}]"#).unwrap(),
        )
        .unwrap();
        assert_eq!(merged[1]["id"], 2);
    }

    #[test]
    fn bad_bodies_and_disagreeing_headers_get_400() {
        let grants = grants(r#"[]"#);
        let (status, body) = answer(decide(&HeaderMap::new(), Bytes::from_static(b"{"), &grants));
        assert_eq!((status, body.unwrap()["error"]["code"].as_i64()), (400, Some(-32700)));
        let mut headers = HeaderMap::new();
        headers.insert(MCP_METHOD, "tools/list".parse().unwrap());
        let body = Bytes::from(call(1, "x").to_string());
        let (status, body) = answer(decide(&headers, body, &grants));
        assert_eq!((status, body.unwrap()["error"]["code"].as_i64()), (400, Some(-32020)));
        let notification =
            serde_json::json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "x"}});
        let (status, body) =
            answer(decide(&HeaderMap::new(), Bytes::from(notification.to_string()), &grants));
        assert_eq!((status, body), (202, None));
    }
}
