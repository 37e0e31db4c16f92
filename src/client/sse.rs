//! A Server-Sent Events parser (the WHATWG `text/event-stream` format), fed
//! the bytes as they arrive: lines end with CR, LF or CRLF, `:` starts a
//! comment (the server's heartbeats), a blank line ends an event, and an
//! event without data is none.

/// One event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// The `event:` type; empty means the default, `message` (a chunk).
    pub kind: String,
    pub id: Option<String>,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    /// The last byte fed was a CR: an LF right after it ends no second line.
    after_cr: bool,
    pending: Event,
    has_data: bool,
}

impl Parser {
    /// Feeds the next bytes of the stream; returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        for &byte in bytes {
            let after_cr = std::mem::replace(&mut self.after_cr, byte == b'\r');
            match byte {
                b'\n' if after_cr => {}
                b'\r' | b'\n' => {
                    let line = std::mem::take(&mut self.line);
                    events.extend(self.line_ended(&String::from_utf8_lossy(&line)));
                }
                _ => self.line.push(byte),
            }
        }
        events
    }

    fn line_ended(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.pending);
            let has_data = std::mem::take(&mut self.has_data);
            return has_data.then_some(event);
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.pending.data.push('\n');
                }
                self.pending.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.pending.kind = value.to_owned(),
            "id" if !value.contains('\0') => self.pending.id = Some(value.to_owned()),
            _ => {} // `retry`, and fields this client does not know
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, id: Option<&str>, data: &str) -> Event {
        Event {
            kind: kind.into(),
            id: id.map(Into::into),
            data: data.into(),
        }
    }

    #[test]
    fn events_split_anywhere_and_any_line_ending_parse_the_same() {
        let stream = b": heartbeat\n\nid: 0\ndata: {\"a\":1}\n\nid:1\r\ndata:x\r\ndata: y\r\n\r\nevent: end\rdata: {}\r\r";
        let expected = vec![
            event("", Some("0"), "{\"a\":1}"),
            event("", Some("1"), "x\ny"),
            event("end", None, "{}"),
        ];
        for split in 0..stream.len() {
            let mut parser = Parser::default();
            let mut events = parser.feed(&stream[..split]);
            events.extend(parser.feed(&stream[split..]));
            assert_eq!(events, expected, "split at {split}");
        }
    }

    #[test]
    fn an_event_without_data_is_none() {
        let mut parser = Parser::default();
        assert!(parser.feed(b"event: ping\nid: 3\n\n").is_empty());
    }
}
