//! How a source's query task becomes a [`RowStream`]: the task sends batches
//! of rows down a bounded channel, and its error, if any, last. Dropping the
//! stream aborts the task; when the channel closes, the task is joined, so
//! a panic surfaces as an error rather than a silently short result.

use std::collections::VecDeque;
use std::future::Future;

use futures::StreamExt;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use super::{Row, RowStream, SourceError};

/// What a producing task sends: a batch of rows, or why it stopped.
pub(crate) type Sent<B> = Result<B, SourceError>;

/// Spawns `produce` on `runtime` with the sending half of a channel of
/// `capacity` batches; an error it returns is sent after its batches.
/// Dropping the returned handle aborts the task.
pub(crate) fn spawn_producer<B, Fut>(
    runtime: &Handle,
    capacity: usize,
    produce: impl FnOnce(mpsc::Sender<Sent<B>>) -> Fut,
) -> (mpsc::Receiver<Sent<B>>, AbortOnDropHandle<()>)
where
    B: Send + 'static,
    Fut: Future<Output = Result<(), SourceError>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(capacity);
    let err_tx = tx.clone();
    let produced = produce(tx);
    let task = runtime.spawn(async move {
        if let Err(e) = produced.await {
            // The consumer may already be gone; then nobody needs the error.
            let _ = err_tx.send(Err(e)).await;
        }
    });
    (rx, AbortOnDropHandle::new(task))
}

/// Joins a query's task (one that has closed its channel, or a count): a
/// panic (or a runtime shut down under it) is an error, not the end of the
/// rows.
pub(crate) async fn joined<T>(task: AbortOnDropHandle<T>) -> Result<T, SourceError> {
    task.await.map_err(|e| {
        SourceError::Internal(if e.is_panic() {
            format!("query task panicked: {e}")
        } else {
            format!("query task stopped before it finished: {e}")
        })
    })
}

/// [`spawn_producer`], as the stream of the rows it sends.
pub(crate) fn spawn_row_stream<B, Fut>(
    runtime: &Handle,
    capacity: usize,
    produce: impl FnOnce(mpsc::Sender<Sent<B>>) -> Fut,
) -> RowStream
where
    B: IntoIterator<Item = Row> + Send + 'static,
    Fut: Future<Output = Result<(), SourceError>> + Send + 'static,
{
    let (rx, task) = spawn_producer(runtime, capacity, produce);
    let state = (rx, VecDeque::<Row>::new(), Some(task));
    futures::stream::unfold(state, |(mut rx, mut buf, mut task)| async move {
        loop {
            if let Some(row) = buf.pop_front() {
                return Some((Ok(row), (rx, buf, task)));
            }
            match rx.recv().await {
                Some(Ok(rows)) => buf.extend(rows),
                Some(Err(e)) => return Some((Err(e), (rx, buf, task))),
                None => {
                    let e = joined(task.take()?).await.err()?;
                    return Some((Err(e), (rx, buf, task)));
                }
            }
        }
    })
    .boxed()
}
