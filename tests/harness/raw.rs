//! A raw protocol client for the cases real drivers never produce: wrong cancel
//! secrets, oversized or garbled messages, stalled authentication.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One backend message.
#[derive(Debug, Clone)]
pub struct Msg {
    /// Type byte.
    pub tag: u8,
    /// Body.
    pub body: Vec<u8>,
}

impl Msg {
    /// The field of an ErrorResponse/NoticeResponse.
    pub fn field(&self, code: u8) -> Option<String> {
        let mut rest = &self.body[..];
        while let Some((&t, tail)) = rest.split_first() {
            if t == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0)?;
            if t == code {
                return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
            }
            rest = &tail[end + 1..];
        }
        None
    }
}

/// A client speaking bytes.
pub struct Raw {
    /// The socket.
    pub stream: TcpStream,
    /// Gatehouse's cancel key for this session, once authenticated.
    pub key: Option<(i32, i32)>,
}

/// Encodes a startup message.
pub fn startup_message(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196608u32.to_be_bytes());
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend(body);
    msg
}

/// Encodes a tagged message.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Encodes a CancelRequest.
pub fn cancel_message(pid: i32, secret: i32) -> Vec<u8> {
    let mut msg = Vec::new();
    msg.extend_from_slice(&16u32.to_be_bytes());
    msg.extend_from_slice(&80877102u32.to_be_bytes());
    msg.extend_from_slice(&pid.to_be_bytes());
    msg.extend_from_slice(&secret.to_be_bytes());
    msg
}

impl Raw {
    /// Opens a TCP connection.
    pub async fn open(addr: SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.unwrap(),
            key: None,
        }
    }

    /// Connects and authenticates, reading through the first ReadyForQuery.
    pub async fn login(addr: SocketAddr, role: &str, token: &str) -> Raw {
        let mut raw = Raw::open(addr).await;
        raw.send(&startup_message(&[("user", role), ("database", "appdb")]))
            .await;
        let m = raw.recv().await.expect("auth request");
        assert_eq!(m.tag, b'R', "{m:?}");
        let mut pw = token.as_bytes().to_vec();
        pw.push(0);
        raw.send(&message(b'p', &pw)).await;
        loop {
            let m = raw.recv().await.expect("startup");
            match m.tag {
                b'K' => {
                    let pid = i32::from_be_bytes(m.body[0..4].try_into().unwrap());
                    let secret = i32::from_be_bytes(m.body[4..8].try_into().unwrap());
                    raw.key = Some((pid, secret));
                }
                b'Z' => return raw,
                b'E' => panic!("login failed: {:?}", m.field(b'M')),
                _ => {}
            }
        }
    }

    /// Writes bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads one message; `None` at end of stream.
    pub async fn recv(&mut self) -> Option<Msg> {
        let mut head = [0u8; 5];
        let mut got = 0;
        while got < 5 {
            match self.stream.read(&mut head[got..]).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => got += n,
            }
        }
        let len = u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 4];
        self.stream.read_exact(&mut body).await.ok()?;
        Some(Msg { tag: head[0], body })
    }

    /// Reads messages until ReadyForQuery (inclusive) or end of stream.
    pub async fn until_ready(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Some(m) = self.recv().await {
            let done = m.tag == b'Z';
            out.push(m);
            if done {
                break;
            }
        }
        out
    }

    /// Sends a simple query and returns its messages through ReadyForQuery.
    pub async fn query(&mut self, sql: &str) -> Vec<Msg> {
        self.query_bytes(sql.as_bytes()).await
    }

    /// Sends a simple query of arbitrary bytes.
    pub async fn query_bytes(&mut self, sql: &[u8]) -> Vec<Msg> {
        let mut body = sql.to_vec();
        body.push(0);
        self.send(&message(b'Q', &body)).await;
        self.until_ready().await
    }

    /// True when the peer closed the connection (after any pending messages).
    pub async fn closed(&mut self) -> bool {
        let mut buf = [0u8; 1024];
        loop {
            match self.stream.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    }
}
