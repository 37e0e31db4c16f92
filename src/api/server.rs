//! The listener: hyper, with the limits a public port needs and axum's own
//! `serve` does not set. A client must send its request head within the
//! header timeout (which also closes idle keep-alive connections), and at
//! most `max_connections` are open at once: one more is answered 503 and
//! closed. hyper's own answers to requests it cannot parse (400, 414, 431)
//! carry no body; they are rewritten to problem+json on their way out
//! (`ProblemOnParseError`), so a client sees the same kind of error for
//! every refusal.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::problem::{ApiError, ErrorCode};

/// Limits of the listener, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    /// Time a client has to send a whole request head, and that a
    /// keep-alive connection may sit idle between requests.
    pub header_timeout: Duration,
    /// Connections open at once; one more gets 503 and is closed.
    pub max_connections: usize,
}

impl ListenerLimits {
    pub fn of(config: &crate::config::Config) -> ListenerLimits {
        ListenerLimits {
            header_timeout: config.header_timeout,
            max_connections: config.max_connections,
        }
    }
}

/// Serves `router` on `listener` until `shutdown`, then lets in-flight
/// requests finish and returns once every connection is closed (the caller
/// bounds how long it waits for that).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ListenerLimits,
    shutdown: CancellationToken,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let max = limits.max_connections.clamp(1, u32::MAX as usize);
    let open = Arc::new(Semaphore::new(max));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was taken: wait a moment rather than spin.
                    warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            debug!(%peer, "connection limit reached; answering 503");
            tokio::spawn(refuse(stream, max));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(ProblemOnParseError::new(stream));
        let service = TowerToHyperService::new(router.clone());
        let connection = http.serve_connection(io, service).with_upgrades();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = shutdown.cancelled() => {
                    // Finish the request in flight, then close.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    // Every connection gives its permit back once closed.
    let _ = open.acquire_many_owned(max as u32).await;
}

/// Answers a connection over the limit with a 503 problem and closes it.
async fn refuse(mut stream: TcpStream, max: usize) {
    let response = ApiError::new(
        ErrorCode::Overloaded,
        format!("this instance has {max} connections open, its limit; retry shortly"),
    )
    .retry_after(Duration::from_secs(1))
    .to_http1_bytes();
    let write = async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// A connection's stream that turns hyper's bodiless answers to requests
/// it cannot parse into problem+json. hyper writes such an answer as a
/// bare head (`HTTP/1.1 400 Bad Request`, `content-length: 0`, no
/// `content-type`) and then closes the connection. The API's own answers
/// always carry a `content-type`, so a head without one is hyper's.
pub struct ProblemOnParseError<S> {
    inner: S,
    /// A rewritten answer still being written, and how much of it is out.
    replacement: Option<(Vec<u8>, usize)>,
}

impl<S> ProblemOnParseError<S> {
    pub fn new(inner: S) -> Self {
        ProblemOnParseError {
            inner,
            replacement: None,
        }
    }
}

impl<S: AsyncWrite + Unpin> ProblemOnParseError<S> {
    /// Writes out what is left of a replacement; ready once none is left.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.replacement {
            if *written == bytes.len() {
                self.replacement = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ProblemOnParseError<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ProblemOnParseError<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_replacement(cx))?;
        if let Some(problem) = parse_error_problem(buf) {
            // The whole head counts as written; the problem goes out instead.
            self.replacement = Some((problem, 0));
            ready!(self.poll_replacement(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_replacement(cx))?;
        // hyper queues a bodiless answer as one buffer: the head.
        if let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && parse_error_problem(first).is_some()
        {
            return self.poll_write(cx, first);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The problem+json answer replacing `head`, when `head` is hyper's bare
/// answer to a request it could not parse.
fn parse_error_problem(head: &[u8]) -> Option<Vec<u8>> {
    // Every write passes here: look at the status first, so a body or a
    // successful answer costs a prefix comparison.
    let status = head
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| head.strip_prefix(b"HTTP/1.0 "))?
        .get(..3)?;
    let (code, detail) = match status {
        b"400" => (
            ErrorCode::MalformedRequest,
            "the request is not valid HTTP/1.1: check the request line, header names and values, and send one Content-Length",
        ),
        b"414" => (
            ErrorCode::UriTooLong,
            "the request target is too long; send long values in a POST body",
        ),
        b"431" => (
            ErrorCode::HeadersTooLarge,
            "the request's headers are too large or too many",
        ),
        _ => return None,
    };
    let text = std::str::from_utf8(head).ok()?;
    let (_, rest) = text.split_once("\r\n")?;
    if !rest.ends_with("\r\n\r\n") {
        return None;
    }
    let lower = rest.to_ascii_lowercase();
    let bare = lower.contains("content-length: 0\r\n") && !lower.contains("content-type:");
    bare.then(|| ApiError::new(code, detail).to_http1_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_hypers_bare_answers() {
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Sun, 06 Dec 2026 03:00:00 GMT\r\n\r\n";
        let problem = String::from_utf8(parse_error_problem(bare).unwrap()).unwrap();
        assert!(problem.starts_with("HTTP/1.1 431 "), "{problem}");
        assert!(problem.contains("content-type: application/problem+json\r\n"));
        assert!(problem.contains("connection: close\r\n"));
        assert!(problem.contains("/problems/headers-too-large"));
        let body = problem.split_once("\r\n\r\n").unwrap().1;
        assert!(problem.contains(&format!("content-length: {}\r\n", body.len())));

        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 0\r\n\r\n";
        assert!(parse_error_problem(ours).is_none());
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(parse_error_problem(ok).is_none());
        assert!(parse_error_problem(b"{\"rows\":[]}").is_none());
    }
}
