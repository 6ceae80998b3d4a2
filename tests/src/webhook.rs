//! A webhook receiver in a test's namespace: answers every POST with the status the test
//! sets and keeps the JSON bodies it received.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicU16, Ordering},
        Arc, Mutex,
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::netns;

/// A receiver; stops on drop.
pub struct Webhook {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    bodies: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
}

impl Webhook {
    /// Listens on `addr` inside namespace `ns`, answering 200 until told otherwise.
    pub fn start(ns: &str, addr: SocketAddr) -> Result<Self> {
        let listener = netns::in_netns(ns, || TcpListener::bind(addr))?
            .with_context(|| format!("bind the webhook receiver to {addr} in {ns}"))?;
        listener.set_nonblocking(true)?;
        let status = Arc::new(AtomicU16::new(200));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let (status, bodies, stop) = (status.clone(), bodies.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if let Ok(body) = answer(stream, status.load(Ordering::Relaxed)) {
                                bodies.lock().expect("bodies").push(body);
                            }
                        }
                        Err(_) => thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
        };
        Ok(Self {
            addr,
            status,
            bodies,
            stop,
            worker: Some(worker),
        })
    }

    /// The URL to give the daemon.
    pub fn url(&self) -> String {
        format!("http://{}/gate", self.addr)
    }

    /// Answers every later request with `status`.
    pub fn answer_with(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }

    /// The JSON bodies received so far.
    pub fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().expect("bodies").clone()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(worker) = self.worker.take() {
            worker.join().ok();
        }
    }
}

/// Reads one request and answers it with `status`; the request's JSON body.
fn answer(stream: TcpStream, status: u16) -> Result<Value> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().context("content-length")?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status} Test\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )?;
    Ok(serde_json::from_slice(&body)?)
}
