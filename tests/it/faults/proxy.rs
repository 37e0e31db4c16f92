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
}

impl FaultProxy {
    pub async fn start(target: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (fault, _) = watch::channel(Fault::None);
        let (cuts, _) = watch::channel(0);
        let proxy = FaultProxy { port, fault, cuts };
        tokio::spawn(listen(
            listener,
            target,
            proxy.fault.subscribe(),
            proxy.cuts.clone(),
        ));
        proxy
    }

    /// Closes every open connection, both ways.
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Starts `fault` (ending the one before).
    pub fn set(&self, fault: Fault) {
        let before = *self.fault.borrow();
        // The cut goes first, so a connection never forwards what a hang
        // held once the hang is over.
        if fault == Fault::Refuse || before == Fault::Hang {
            self.cut();
        }
        self.fault.send_replace(fault);
    }

    /// Drops the server's replies from now on, or forwards them again.
    pub fn hold_replies(&self, hold: bool) {
        self.set(if hold {
            Fault::HoldReplies
        } else {
            Fault::None
        });
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
                if fault.wait_for(|f| *f != Fault::Refuse).await.is_err() {
                    return;
                }
                listener = rebind(port).await;
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
        proxy.set(*fault);
        tokio::time::sleep(*lasting).await;
    }
    proxy.set(Fault::None);
}
