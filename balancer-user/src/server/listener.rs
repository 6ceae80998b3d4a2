//! The control socket's listener, bounded: at most [`MAX_CONNECTIONS`] connections are
//! served at once (further ones wait in the socket's backlog), and a connection that
//! sends nothing for [`IDLE`] while the server waits for it is closed. Idle or abandoned
//! clients can neither exhaust the daemon's file descriptors nor hold a place for ever.
//!
//! Each connection carries its peer's uid from the socket's credentials (`SO_PEERCRED`):
//! the history says who made a change with it ([`Peer`]).

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{extract::connect_info::Connected, serve::IncomingStream};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{unix::SocketAddr, UnixListener, UnixStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a connection may keep the server waiting for its next bytes.
pub const IDLE: Duration = Duration::from_secs(60);

/// A Unix listener that serves at most `limit` connections at once, each closed after
/// `idle` without the bytes the server waits for.
pub struct Bounded {
    inner: UnixListener,
    places: Arc<Semaphore>,
    idle: Duration,
}

impl Bounded {
    /// Bounds `inner` to `limit` connections and `idle` waits.
    pub fn new(inner: UnixListener, limit: usize, idle: Duration) -> Self {
        Self {
            inner,
            places: Arc::new(Semaphore::new(limit)),
            idle,
        }
    }
}

impl axum::serve::Listener for Bounded {
    type Io = Held;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Held, SocketAddr) {
        let place = Arc::clone(&self.places)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        loop {
            let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
            // Linux always has a connected Unix socket's credentials; a connection without
            // them could not be told apart from another user's, so it is not served.
            let uid = match io.peer_cred() {
                Ok(credentials) => credentials.uid(),
                Err(e) => {
                    tracing::warn!("control connection closed: no peer credentials: {e}");
                    continue;
                }
            };
            let held = Held {
                io,
                uid,
                _place: place,
                idle: self.idle,
                deadline: Box::pin(tokio::time::sleep(self.idle)),
            };
            return (held, addr);
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted connection holding its place; reading fails with `TimedOut` when the peer
/// sent nothing for the idle time since it connected, last sent, or was last answered.
pub struct Held {
    io: UnixStream,
    uid: u32,
    _place: OwnedSemaphorePermit,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

/// Who is at the other end of a control connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The peer process's user id, from the socket's credentials.
    pub uid: u32,
}

impl Connected<IncomingStream<'_, Bounded>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Bounded>) -> Self {
        Self {
            uid: stream.io().uid,
        }
    }
}

impl Held {
    fn rearm(&mut self) {
        let next = Instant::now() + self.idle;
        self.deadline.as_mut().reset(next);
    }
}

impl AsyncRead for Held {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.rearm();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the control connection was idle too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl AsyncWrite for Held {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.rearm();
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn socket(name: &str) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("balancer-{name}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    #[tokio::test]
    async fn a_connection_carries_the_uid_of_its_peer() {
        let path = socket("peer");
        let mut listener = Bounded::new(UnixListener::bind(&path).unwrap(), 2, IDLE);
        let _client = UnixStream::connect(&path).await.unwrap();
        let (held, _) = listener.accept().await;
        // SAFETY: getuid cannot fail and touches no memory.
        let uid = unsafe { libc::getuid() };
        assert_eq!(held.uid, uid);
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn a_connection_over_the_limit_waits_for_a_place() {
        let path = socket("bounded");
        let mut listener = Bounded::new(UnixListener::bind(&path).unwrap(), 2, IDLE);
        let _a = UnixStream::connect(&path).await.unwrap();
        let _b = UnixStream::connect(&path).await.unwrap();
        let _c = UnixStream::connect(&path).await.unwrap();
        let (first, _) = listener.accept().await;
        let (second, _) = listener.accept().await;
        let third = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(third.is_err(), "a third connection was served at once");
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(2), listener.accept()).await;
        assert!(third.is_ok(), "the freed place was not taken");
        drop(second);
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_idle_time_and_a_talking_one_is_not() {
        let path = socket("idle");
        let idle = Duration::from_millis(300);
        let mut listener = Bounded::new(UnixListener::bind(&path).unwrap(), 4, idle);
        let mut silent_client = UnixStream::connect(&path).await.unwrap();
        let (mut silent, _) = listener.accept().await;
        let started = std::time::Instant::now();
        let mut buf = [0u8; 8];
        let err = silent.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(
            started.elapsed() >= idle,
            "closed after {:?}",
            started.elapsed()
        );
        drop(silent);
        assert_eq!(silent_client.read(&mut buf).await.unwrap(), 0, "not closed");

        // Bytes every 200 ms keep a connection alive past the idle time.
        let mut talking_client = UnixStream::connect(&path).await.unwrap();
        let (mut talking, _) = listener.accept().await;
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            talking_client.write_all(b"x").await.unwrap();
            assert_eq!(talking.read(&mut buf).await.unwrap(), 1);
        }
        let _ = std::fs::remove_file(&path);
    }
}
