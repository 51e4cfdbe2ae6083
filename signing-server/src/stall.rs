//! Answers nobody reads: a connection whose writes make no progress for
//! `idle_timeout` is closed.
//!
//! hyper's timers cover reading only (a request head must come within
//! `idle_timeout`); a client that pipelines requests and never reads the
//! answers would otherwise hold its connection, the server's buffers and the
//! kernel's for ever. [`WriteWatch`] wraps a connection's socket: from the
//! first write that cannot proceed (the socket's send buffer is full), a
//! timer runs; any byte written stops it; if it fires, the pending write
//! fails, hyper closes the connection and [`WriteWatch::stalled`] says why.
//! The timer is polled with the write, so it wakes the connection itself: no
//! task of its own, nothing to forget when the connection ends.
//!
//! What one connection may queue is bounded besides: hyper buffers at most
//! `max_buf_size` of answers (and reads no further request while they wait),
//! rustls 64 KiB, and the kernel [`SEND_BUFFER`] (set on the socket at accept).

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// The kernel send buffer of a connection (`SO_SNDBUF`; Linux doubles it for
/// its bookkeeping): about 100 MB/s of answers at 4 ms round trip, and a
/// bound on what an unread connection holds in the kernel (autotuning would
/// let it grow to 4 MiB).
pub const SEND_BUFFER: usize = 256 << 10;

/// A socket whose stalled writes time out after `limit`.
#[derive(Debug)]
pub struct WriteWatch<IO> {
    io: IO,
    limit: Duration,
    /// Running while a write waits; `None` once a byte went out.
    deadline: Option<Pin<Box<Sleep>>>,
    stalled: Arc<AtomicBool>,
}

impl<IO> WriteWatch<IO> {
    /// Wraps `io`; writes that make no progress for `limit` fail.
    pub fn new(io: IO, limit: Duration) -> WriteWatch<IO> {
        WriteWatch {
            io,
            limit,
            deadline: None,
            stalled: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Set once a write timed out (readable after the connection is gone).
    pub fn stalled(&self) -> Arc<AtomicBool> {
        self.stalled.clone()
    }

    /// What a write that returned `r` means, with the timer.
    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => {
                let limit = self.limit;
                let timer = self
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.stalled.store(true, Ordering::Relaxed);
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer bytes read for {} s", limit.as_secs_f64()),
                )))
            }
            done => {
                self.deadline = None;
                done
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for WriteWatch<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WriteWatch<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_reads_fails_after_the_limit_and_progress_resets_it() {
        // A pipe of 64 bytes: full after 64 unread bytes.
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut w = WriteWatch::new(ours, Duration::from_secs(10));
        let stalled = w.stalled();
        w.write_all(&[1; 64]).await.unwrap();
        // Blocked for 9 s, then the reader takes some: the clock starts again.
        let writer = tokio::spawn(async move {
            let r = w.write_all(&[2; 64]).await;
            (w, r)
        });
        tokio::time::sleep(Duration::from_secs(9)).await;
        let mut got = [0u8; 32];
        theirs.read_exact(&mut got).await.unwrap();
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(!stalled.load(Ordering::Relaxed));
        // Then nothing is read: it fails after 10 s more.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (_w, r) = writer.await.unwrap();
        let e = r.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(stalled.load(Ordering::Relaxed));
        drop(theirs);
    }
}
