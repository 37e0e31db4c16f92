//! A TCP proxy in front of a server, which a test can make misbehave the
//! ways a network does. For Kafka the broker advertises the proxy's port,
//! so every client connection goes through it.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwards both ways.
    None,
    /// Listens on nothing: connecting is refused. Connections open when it
    /// starts are cut.
    Refuse,
    /// Accepts connections but forwards nothing either way, as a link that
    /// went silent. When it ends, those connections are cut (what they held
    /// is dropped), as a silent link is in the end.
    Hang,
    /// Forwards requests but drops the server's replies: the server acts
    /// on requests whose answers the client never gets (a client that
    /// retries them sends them twice).
    HoldReplies,
}

pub struct FaultProxy {
    pub port: u16,
    fault: watch::Sender<Fault>,
    /// Bumped to close every open connection.
    cuts: watch::Sender<u64>,
    /// Whether the proxy listens now (it does not while refusing).
    listening: watch::Receiver<bool>,
}

impl FaultProxy {
    pub async fn start(target: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (fault, _) = watch::channel(Fault::None);
        let (cuts, _) = watch::channel(0);
        let (listens, listening) = watch::channel(true);
        tokio::spawn(listen(
            listener,
            target,
            fault.subscribe(),
            cuts.clone(),
            listens,
        ));
        FaultProxy {
            port,
            fault,
            cuts,
            listening,
        }
    }

    /// Closes every open connection, both ways.
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Starts `fault` (ending the one before); returns once it holds.
    pub async fn set(&self, fault: Fault) {
        let before = *self.fault.borrow();
        // The cut goes first, so a connection never forwards what a hang
        // held once the hang is over.
        if fault == Fault::Refuse || before == Fault::Hang {
            self.cut();
        }
        self.fault.send_replace(fault);
        let mut listening = self.listening.clone();
        listening
            .wait_for(|listens| *listens == (fault != Fault::Refuse))
            .await
            .expect("the proxy listens on");
    }

    /// Drops the server's replies from now on, or forwards them again.
    pub async fn hold_replies(&self, hold: bool) {
        let fault = if hold {
            Fault::HoldReplies
        } else {
            Fault::None
        };
        self.set(fault).await;
    }
}

/// Accepts connections, except while refusing: then the listener is closed,
/// so connecting gets a refusal (not a connection that dies), and it is
/// opened again on the same port when the refusal ends.
async fn listen(
    mut listener: TcpListener,
    target: u16,
    mut fault: watch::Receiver<Fault>,
    cuts: watch::Sender<u64>,
    listens: watch::Sender<bool>,
) {
    let port = listener.local_addr().unwrap().port();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => Some(accepted),
            refusing = fault.wait_for(|f| *f == Fault::Refuse) => {
                if refusing.is_err() {
                    return; // the proxy is gone
                }
                None
            }
        };
        match accepted {
            Some(Ok((client, _))) => {
                tokio::spawn(connection(client, target, fault.clone(), cuts.subscribe()));
            }
            Some(Err(_)) => {}
            None => {
                drop(listener);
                listens.send_replace(false);
                if fault.wait_for(|f| *f != Fault::Refuse).await.is_err() {
                    return;
                }
                listener = rebind(port).await;
                listens.send_replace(true);
            }
        }
    }
}

async fn rebind(port: u16) -> TcpListener {
    for _ in 0..100 {
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)).await {
            return listener;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("could not listen on port {port} again");
}

/// One client connection, until it is cut or either side closes.
async fn connection(
    client: TcpStream,
    target: u16,
    fault: watch::Receiver<Fault>,
    mut cuts: watch::Receiver<u64>,
) {
    cuts.mark_unchanged();
    let forward = async {
        // A connection made during a hang reaches nothing until it is cut.
        let mut waiting = fault.clone();
        if waiting.wait_for(|f| *f != Fault::Hang).await.is_err() {
            return;
        }
        let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
            return;
        };
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        tokio::select! {
            () = pump(client_read, server_write, fault.clone(), false) => {}
            () = pump(server_read, client_write, fault.clone(), true) => {}
        }
    };
    tokio::select! {
        // A cut wins over bytes a hang held and its end would release.
        biased;
        _ = cuts.changed() => {}
        () = forward => {}
    }
}

/// Copies one direction until either side closes; held while hanging, and
/// dropped while holding replies (`replies`: the server-to-client side).
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut fault: watch::Receiver<Fault>,
    replies: bool,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let Ok(now) = fault.wait_for(|f| *f != Fault::Hang).await.map(|f| *f) else {
            return;
        };
        if replies && now == Fault::HoldReplies {
            continue;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// The proxy is dropped with its test; its tasks end as their channels close.
impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Runs `steps` one after another, each for its time, then forwards again.
pub async fn run_faults(proxy: &FaultProxy, steps: &[(Fault, Duration)]) {
    for (fault, lasting) in steps {
        proxy.set(*fault).await;
        tokio::time::sleep(*lasting).await;
    }
    proxy.set(Fault::None).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that echoes what it reads.
    async fn echo_server() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.into_split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        port
    }

    /// What comes back for `sent`: `None` when nothing does for a while,
    /// `Some(empty)` when the connection was closed.
    async fn exchange(stream: &mut TcpStream, sent: &[u8]) -> Option<Vec<u8>> {
        if stream.write_all(sent).await.is_err() {
            return Some(Vec::new());
        }
        let mut reply = vec![0u8; 16];
        match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut reply)).await {
            Err(_) => None,
            Ok(Ok(n)) => Some(reply[..n].to_vec()),
            Ok(Err(_)) => Some(Vec::new()),
        }
    }

    async fn connect(proxy: &FaultProxy) -> std::io::Result<TcpStream> {
        TcpStream::connect(("127.0.0.1", proxy.port)).await
    }

    #[tokio::test]
    async fn the_proxy_holds_replies_cuts_refuses_and_hangs() {
        let proxy = FaultProxy::start(echo_server().await).await;
        let mut stream = connect(&proxy).await.unwrap();
        assert_eq!(exchange(&mut stream, b"a").await.unwrap(), b"a");

        proxy.set(Fault::HoldReplies).await;
        assert_eq!(
            exchange(&mut stream, b"b").await,
            None,
            "the reply is dropped"
        );
        proxy.set(Fault::None).await;
        assert_eq!(exchange(&mut stream, b"c").await.unwrap(), b"c");

        proxy.cut();
        assert_eq!(exchange(&mut stream, b"d").await.unwrap(), b"", "cut");

        proxy.set(Fault::Refuse).await;
        assert!(connect(&proxy).await.is_err(), "connecting is refused");

        proxy.set(Fault::Hang).await;
        let mut hung = connect(&proxy).await.expect("a hang accepts");
        assert_eq!(exchange(&mut hung, b"e").await, None, "nothing comes back");
        proxy.set(Fault::None).await;
        assert_eq!(
            exchange(&mut hung, b"f").await.unwrap(),
            b"",
            "cut when the hang ends"
        );

        let mut stream = connect(&proxy).await.unwrap();
        assert_eq!(exchange(&mut stream, b"g").await.unwrap(), b"g");
    }
}
