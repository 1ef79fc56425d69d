//! An HTTP/1.1 server that can really stop (listener closed, every open connection dropped, so
//! clients see connection refused and their held blocking queries die) and start again on the
//! same port. `axum::serve` cannot do this: its graceful shutdown waits for open connections, and
//! a blocking query may be held for minutes.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

struct Running {
    stop: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

/// One API's listener and the app it serves.
pub(crate) struct Server {
    addr: SocketAddr,
    app: Router,
    running: Mutex<Option<Running>>,
}

impl Server {
    /// Starts serving `app` on an already bound listener.
    pub(crate) fn serve(listener: TcpListener, addr: SocketAddr, app: Router) -> Server {
        let running = spawn(listener, app.clone());
        Server {
            addr,
            app,
            running: Mutex::new(Some(running)),
        }
    }

    /// Whether it is accepting connections.
    pub(crate) async fn is_running(&self) -> bool {
        self.running.lock().await.is_some()
    }

    /// Closes the listener and every open connection; returns once the port is closed.
    pub(crate) async fn stop(&self) {
        let running = self.running.lock().await.take();
        if let Some(r) = running {
            let _ = r.stop.send(true);
            let _ = r.accept.await;
        }
    }

    /// Binds the same address again and resumes serving. A no-op when already running.
    pub(crate) async fn start(&self) -> std::io::Result<()> {
        let mut slot = self.running.lock().await;
        if slot.is_some() {
            return Ok(());
        }
        // The port was ours a moment ago; a short retry covers a slow kernel release.
        let mut last = None;
        for _ in 0..50 {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => {
                    *slot = Some(spawn(listener, self.app.clone()));
                    return Ok(());
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("bind failed")))
    }
}

fn spawn(listener: TcpListener, app: Router) -> Running {
    // The only change ever sent is the stop; receivers cloned from the never-updated original
    // see it even when cloned after it was sent.
    let (stop, stopped) = watch::channel(false);
    let accept = tokio::spawn(accept_loop(listener, app, stopped));
    Running { stop, accept }
}

async fn accept_loop(listener: TcpListener, app: Router, stopped: watch::Receiver<bool>) {
    let mut stop_signal = stopped.clone();
    loop {
        tokio::select! {
            _ = stop_signal.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, app.clone(), stopped.clone()));
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

async fn connection(stream: TcpStream, app: Router, mut stopped: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    let service = TowerToHyperService::new(app);
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = conn => {}
        // Dropping the connection future closes the socket, even mid-request.
        _ = stopped.changed() => {}
    }
}
