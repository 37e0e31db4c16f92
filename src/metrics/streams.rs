//! Push streams' series: how many are open by transport, how many were
//! refused at the cap, and how many ended early and why.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Counter;

/// What carries a push stream; a label value from a closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Sse,
    WebSocket,
}

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::WebSocket => "websocket",
        }
    }
}

#[derive(Debug, Default)]
pub struct StreamMetrics {
    open_sse: AtomicU64,
    open_websocket: AtomicU64,
    /// Jobs with a push feed in this process, set before each render.
    pub feeds: AtomicU64,
    pub refused_total: Counter,
    pub slow_dropped_total: Counter,
}

impl StreamMetrics {
    fn open(&self, transport: Transport) -> &AtomicU64 {
        match transport {
            Transport::Sse => &self.open_sse,
            Transport::WebSocket => &self.open_websocket,
        }
    }

    pub fn opened(&self, transport: Transport) {
        self.open(transport).fetch_add(1, Ordering::Relaxed);
    }

    pub fn closed(&self, transport: Transport) {
        self.open(transport).fetch_sub(1, Ordering::Relaxed);
    }

    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP pseudostream_streams_open Push streams this instance serves now, by transport.\n# TYPE pseudostream_streams_open gauge"
        );
        for transport in [Transport::Sse, Transport::WebSocket] {
            let _ = writeln!(
                out,
                "pseudostream_streams_open{{transport=\"{}\"}} {}",
                transport.label(),
                self.open(transport).load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP pseudostream_stream_feeds Jobs this instance reads for push streams (one feed each, however many streams watch it).\n# TYPE pseudostream_stream_feeds gauge\npseudostream_stream_feeds {}",
            self.feeds.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP pseudostream_streams_refused_total Push streams refused at PSEUDOSTREAM_MAX_STREAMS.\n# TYPE pseudostream_streams_refused_total counter\npseudostream_streams_refused_total {}",
            self.refused_total.get()
        );
        let _ = writeln!(
            out,
            "# HELP pseudostream_streams_slow_dropped_total Push streams dropped because their client fell PSEUDOSTREAM_STREAM_BUFFER chunks behind.\n# TYPE pseudostream_streams_slow_dropped_total counter\npseudostream_streams_slow_dropped_total {}",
            self.slow_dropped_total.get()
        );
    }
}
