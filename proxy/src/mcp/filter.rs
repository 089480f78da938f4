//! The answers a client with grants gets: list results (`tools/list`, `resources/list`,
//! `prompts/list`) with only the granted entries, and, for a batch with denied calls, keyward's
//! errors for those beside the backend's answers. A JSON answer is read whole (it is one
//! message or one batch); an SSE stream is rewritten event by event as events complete, carrying
//! at most one incomplete event, and passed on untouched once every list it waits for has come.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde_json::Value;

use crate::config::{Grants, Kind};

/// What to change in the answers to one POST.
#[derive(Debug)]
pub(crate) struct Answers {
    /// The list requests' ids, and what each lists.
    lists: Vec<(Value, Kind)>,
    grants: Arc<Grants>,
    /// keyward's own answers to add (errors for denied calls of a batch).
    extra: Vec<Value>,
}

impl Answers {
    pub(crate) fn new(lists: Vec<(Value, Kind)>, grants: Arc<Grants>, extra: Vec<Value>) -> Self {
        Self { lists, grants, extra }
    }

    /// Whether nothing needs changing.
    pub(crate) fn is_empty(&self) -> bool {
        self.lists.is_empty() && self.extra.is_empty()
    }

    /// Filters `message` if it answers one of the list requests; true if it did. That list is
    /// then no longer waited for.
    fn filter(&mut self, message: &mut Value) -> bool {
        let Some(id) = message.get("id") else { return false };
        let Some(at) = self.lists.iter().position(|(list, _)| list == id) else { return false };
        let (_, kind) = self.lists.swap_remove(at);
        let (field, key) = match kind {
            Kind::Tool => ("tools", "name"),
            Kind::Resource => ("resources", "uri"),
            Kind::Prompt => ("prompts", "name"),
        };
        let Some(entries) =
            message.pointer_mut(&format!("/result/{field}")).and_then(Value::as_array_mut)
        else {
            return false;
        };
        let grants = &self.grants;
        entries.retain(|entry| {
            entry.get(key).and_then(Value::as_str).is_some_and(|name| grants.allows(kind, name))
        });
        true
    }

    /// A whole JSON answer, rewritten.
    pub(crate) fn json(mut self, bytes: &[u8]) -> Option<Bytes> {
        let mut value: Value = serde_json::from_slice(bytes).ok()?;
        match &mut value {
            Value::Array(messages) => {
                for message in messages.iter_mut() {
                    self.filter(message);
                }
                messages.append(&mut self.extra);
            }
            message => {
                self.filter(message);
                if !self.extra.is_empty() {
                    let mut all = vec![message.take()];
                    all.append(&mut self.extra);
                    value = Value::Array(all);
                }
            }
        }
        serde_json::to_vec(&value).ok().map(Bytes::from)
    }

    /// An SSE stream's rewriter, refusing events longer than `max_event` bytes.
    pub(crate) fn sse(self, max_event: usize) -> Sse {
        Sse { answers: self, pending: BytesMut::new(), max_event, started: false }
    }
}

/// An event longer than the limit: the stream is cut rather than passed unchecked.
#[derive(Debug, thiserror::Error)]
#[error("an SSE event exceeded {0} bytes")]
pub(crate) struct EventTooLarge(pub(crate) usize);

impl crate::forward::Rewrite for Sse {
    fn data(&mut self, chunk: Bytes) -> Result<Bytes, crate::forward::BoxError> {
        Sse::data(self, chunk).map_err(Into::into)
    }

    fn end(&mut self) -> Result<Bytes, crate::forward::BoxError> {
        Ok(Sse::end(self))
    }
}

/// Rewrites an SSE stream chunk by chunk.
#[derive(Debug)]
pub(crate) struct Sse {
    answers: Answers,
    pending: BytesMut,
    max_event: usize,
    started: bool,
}

impl Sse {
    /// What to send for the next chunk of the stream: the events it completed, rewritten.
    pub(crate) fn data(&mut self, chunk: Bytes) -> Result<Bytes, EventTooLarge> {
        let mut out = BytesMut::new();
        if !self.started {
            self.started = true;
            for extra in self.answers.extra.drain(..) {
                out.extend_from_slice(b"event: message\ndata: ");
                out.extend_from_slice(extra.to_string().as_bytes());
                out.extend_from_slice(b"\n\n");
            }
        }
        if self.answers.lists.is_empty() && self.pending.is_empty() {
            if out.is_empty() {
                return Ok(chunk);
            }
            out.extend_from_slice(&chunk);
            return Ok(out.freeze());
        }
        self.pending.extend_from_slice(&chunk);
        while let Some(end) = event_end(&self.pending) {
            let event = self.pending.split_to(end).freeze();
            match self.rewrite(&event) {
                Some(rewritten) => out.extend_from_slice(&rewritten),
                None => out.extend_from_slice(&event),
            }
            if self.answers.lists.is_empty() {
                out.extend_from_slice(&self.pending.split());
                break;
            }
        }
        if self.pending.len() > self.max_event {
            return Err(EventTooLarge(self.max_event));
        }
        Ok(out.freeze())
    }

    /// What is left at the end of the stream (an unterminated last event, as it came).
    pub(crate) fn end(&mut self) -> Bytes {
        self.pending.split().freeze()
    }

    /// The event rewritten, if it carries one of the list answers.
    fn rewrite(&mut self, event: &[u8]) -> Option<Vec<u8>> {
        let text = std::str::from_utf8(event).ok()?;
        let mut data = String::new();
        let mut other = Vec::new();
        for line in text.lines() {
            if let Some(value) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value.strip_prefix(' ').unwrap_or(value));
            } else if !line.is_empty() {
                other.push(line);
            }
        }
        let mut message: Value = serde_json::from_str(&data).ok()?;
        if !self.answers.filter(&mut message) {
            return None;
        }
        let mut out = String::new();
        for line in other {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("data: ");
        out.push_str(&message.to_string());
        out.push_str("\n\n");
        Some(out.into_bytes())
    }
}

/// The end (after the blank line) of the first complete event in `buffer`.
fn event_end(buffer: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 1 < buffer.len() {
        match (buffer[i], buffer[i + 1]) {
            (b'\n', b'\n') => return Some(i + 2),
            (b'\r', b'\n') if buffer[i + 2..].starts_with(b"\r\n") => return Some(i + 4),
            (b'\r', b'\r') => return Some(i + 2),
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Glob;

    fn grants() -> Arc<Grants> {
        let tools: Vec<Glob> = serde_json::from_str(r#"["get_activity_*"]"#).unwrap();
        Arc::new(Grants { tools: Some(tools), ..Grants::default() })
    }

    fn list(id: i64) -> String {
        serde_json::json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [
            {"name": "get_activity_by_date"}, {"name": "get_sleep_by_date"},
            {"name": "get_activity_records"}], "nextCursor": "c2"}})
        .to_string()
    }

    fn names(message: &Value) -> Vec<&str> {
        message["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn a_json_list_keeps_the_granted_entries_and_its_cursor() {
        let answers = Answers::new(vec![(1.into(), Kind::Tool)], grants(), vec![]);
        let out: Value =
            serde_json::from_slice(&answers.json(list(1).as_bytes()).unwrap()).unwrap();
        assert_eq!(names(&out), ["get_activity_by_date", "get_activity_records"]);
        assert_eq!(out["result"]["nextCursor"], "c2");
        // Another id's answer is not touched.
        let answers = Answers::new(vec![(2.into(), Kind::Tool)], grants(), vec![]);
        let out: Value =
            serde_json::from_slice(&answers.json(list(1).as_bytes()).unwrap()).unwrap();
        assert_eq!(names(&out).len(), 3);
    }

    #[test]
    fn sse_events_are_rewritten_as_they_complete_even_split_anywhere() {
        let stream = format!(
            "event: message\nid: 1\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}}\n\n\
             event: message\r\ndata: {}\r\n\r\ndata: after\n\n",
            list(7)
        );
        for split in 1..stream.len() {
            let mut sse = Answers::new(vec![(7.into(), Kind::Tool)], grants(), vec![]).sse(1 << 20);
            let (a, b) = stream.as_bytes().split_at(split);
            let mut out = sse.data(Bytes::copy_from_slice(a)).unwrap().to_vec();
            out.extend_from_slice(&sse.data(Bytes::copy_from_slice(b)).unwrap());
            out.extend_from_slice(&sse.end());
            let text = String::from_utf8(out).unwrap();
            let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
            assert!(events[0].contains("notifications/progress"), "{split}: {text}");
            assert!(events[1].starts_with("event: message\ndata: "), "{split}: {text}");
            let data: Value =
                serde_json::from_str(&events[1]["event: message\ndata: ".len()..]).unwrap();
            assert_eq!(names(&data), ["get_activity_by_date", "get_activity_records"]);
            assert_eq!(events[2], "data: after");
        }
    }

    #[test]
    fn the_first_event_passes_before_the_second_arrives_and_a_huge_event_is_refused() {
        let mut sse = Answers::new(vec![(7.into(), Kind::Tool)], grants(), vec![]).sse(64);
        let first = sse
            .data(Bytes::from_static(b"data: {\"jsonrpc\":\"2.0\",\"method\":\"x\"}\n\ndata: {"))
            .unwrap();
        assert!(first.starts_with(b"data: {\"jsonrpc\"") && first.ends_with(b"\n\n"));
        assert!(sse.data(Bytes::from(vec![b'a'; 100])).is_err());
    }

    #[test]
    fn denied_calls_of_a_batch_are_answered_beside_the_backend_s() {
        let error = serde_json::json!({"jsonrpc": "2.0", "id": 9, "error": {"code": -32602}});
        let answers = Answers::new(vec![], grants(), vec![error.clone()]);
        let out: Value = serde_json::from_slice(
            &answers.json(br#"[{"jsonrpc":"2.0","id":8,"result":{}}]"#).unwrap(),
        )
        .unwrap();
        assert_eq!(out.as_array().unwrap().len(), 2);
        let mut sse = Answers::new(vec![], grants(), vec![error]).sse(64);
        let out = sse.data(Bytes::from_static(b"data: x\n\n")).unwrap();
        assert!(out.starts_with(b"event: message\ndata: {") && out.ends_with(b"data: x\n\n"));
    }
}
