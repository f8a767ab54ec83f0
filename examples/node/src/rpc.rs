//! The node's local RPC: one JSON request per line on a TCP socket (keep it on 127.0.0.1),
//! one JSON answer per line. Requests: `{"submit":{"tx":"<hex of canonical bytes>"}}`,
//! `{"submit_batch":{"txs":["<hex>", …]}}` (answered `{"ok":true,"answers":[…]}`, one answer
//! per transaction), `"status"`, `{"block":{"height":7}}`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use commonware_utils::channel::{mpsc, oneshot};
use tracing::warn;

use crate::config::Result;
use crate::node::{RpcCall, RpcRequest};

/// The longest request line: a batch of hex-encoded transactions of at most
/// [`LIMIT_TXS`](crate::wire::LIMIT_TXS) bytes in all (what one relay message carries), with
/// room for the JSON around them. A longer request is refused unread.
pub const MAX_LINE: u64 =
    2 * crate::wire::LIMIT_TXS as u64 + 4 * crate::node::MAX_RPC_BATCH as u64 + 1024;

/// Serves the RPC at `addr` on a thread of its own, passing each request to the node.
pub fn serve(addr: SocketAddr, node: mpsc::UnboundedSender<RpcCall>) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("rpc {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let node = node.clone();
            std::thread::spawn(move || {
                if let Err(e) = connection(stream, &node) {
                    warn!("rpc connection: {e}");
                }
            });
        }
    });
    Ok(bound)
}

fn connection(stream: TcpStream, node: &mpsc::UnboundedSender<RpcCall>) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    // One request, one answer: waiting to coalesce small writes (Nagle) would only hold each
    // answer until the client's delayed acknowledgement, tens of milliseconds.
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        let n = (&mut reader).take(MAX_LINE).read_line(&mut line)?;
        if n == 0 {
            return Ok(());
        }
        if !line.ends_with('\n') && n as u64 >= MAX_LINE {
            writeln!(
                writer,
                "{}",
                serde_json::json!({"ok": false, "error": "request too long"})
            )?;
            return Ok(());
        }
        let answer = match serde_json::from_str::<RpcRequest>(line.trim()) {
            Ok(request) => {
                let (tx, rx) = oneshot::channel();
                if node.send((request, tx)).is_err() {
                    return Ok(());
                }
                rx.blocking_recv()
                    .unwrap_or_else(|_| serde_json::json!({"ok": false, "error": "node stopped"}))
            }
            Err(e) => serde_json::json!({"ok": false, "error": format!("bad request: {e}")}),
        };
        // One write per answer: the line and its newline in one segment.
        writer.write_all(format!("{answer}\n").as_bytes())?;
    }
}

/// Sends one request to the node at `addr` and returns its answer.
pub fn call(addr: SocketAddr, request: &RpcRequest) -> Result<serde_json::Value> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    writer.write_all(format!("{}\n", serde_json::to_string(request)?).as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).take(1 << 20).read_line(&mut line)?;
    Ok(serde_json::from_str(&line)?)
}
