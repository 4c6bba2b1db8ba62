//! A real Kafka-compatible broker (`tansu`) on a free port, killed on drop, and
//! a test consumer that reads a topic back.

use std::collections::HashMap;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// The broker binary: `TANSU`, else `~/.cache/gatehouse/tools/bin/tansu`
/// (where deploy/test.sh installs it), else on PATH.
pub fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU") {
        return p.into();
    }
    if let Some(home) = std::env::var_os("HOME") {
        let p = Path::new(&home).join(".cache/gatehouse/tools/bin/tansu");
        if p.is_file() {
            return p;
        }
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("tansu");
        if p.is_file() {
            return p;
        }
    }
    panic!("tansu not found: set TANSU, or run deploy/test.sh once (it installs tansu)");
}

/// A running tansu broker (in-memory storage), reached through a proxy that a
/// test can cut to make Kafka unreachable and restore, the broker keeping its
/// data meanwhile.
///
/// (tansu's PostgreSQL engine would survive a real restart, but it needs a
/// schema that the installed tansu does not ship; from the client's side a
/// broker whose connections are cut and refused is a broker that is down.)
pub struct Kafka {
    /// The port clients use (the proxy's, which tansu advertises).
    pub port: u16,
    broker_port: u16,
    child: Option<Child>,
    proxy: Proxy,
}

impl Kafka {
    /// A broker keeping its data in memory.
    pub fn start_memory() -> Kafka {
        let broker_port = free_port();
        let proxy = Proxy::start(broker_port);
        let mut k = Kafka {
            port: proxy.port,
            broker_port,
            child: None,
            proxy,
        };
        k.spawn();
        k
    }

    fn spawn(&mut self) {
        let listen = format!("tcp://127.0.0.1:{}", self.broker_port);
        let advertised = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(tansu_bin())
            .args(["broker", "--listener-url", &listen])
            .args(["--advertised-listener-url", &advertised])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        self.wait_ready();
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Polls until the broker answers a metadata request (20 s at most).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(c) = &mut self.child
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("tansu exited: {status}");
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.broker_port)).is_ok() {
                let consumer: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", self.brokers())
                    .create()
                    .unwrap();
                if consumer
                    .fetch_metadata(None, Duration::from_secs(2))
                    .is_ok()
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "tansu did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    /// Creates a topic (waits until it is visible).
    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .create()
            .unwrap();
        let res = admin
            .create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new(),
            )
            .await
            .expect("create topic");
        for r in res {
            r.expect("topic created");
        }
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .create()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let md = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(2))
                .ok();
            if md.is_some_and(|m| {
                m.topics().first().is_some_and(|t| {
                    t.error().is_none() && t.partitions().len() == partitions as usize
                })
            }) {
                return;
            }
            assert!(Instant::now() < deadline, "topic {topic} not visible");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kafka becomes unreachable: open connections are cut, new ones refused.
    pub fn cut(&self) {
        self.proxy.cut();
    }

    /// Kafka is reachable again.
    pub fn restore(&self) {
        self.proxy.restore();
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.proxy.close();
    }
}

/// A TCP relay whose listener and connections can be cut and restored.
struct Proxy {
    port: u16,
    state: Arc<ProxyState>,
}

struct ProxyState {
    target: u16,
    up: AtomicBool,
    closed: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
    listener: Mutex<Option<TcpListener>>,
}

impl Proxy {
    fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(ProxyState {
            target,
            up: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
            listener: Mutex::new(None),
        });
        spawn_acceptor(state.clone(), listener);
        Proxy { port, state }
    }

    fn cut(&self) {
        self.state.up.store(false, Ordering::SeqCst);
        if let Some(l) = self.state.listener.lock().unwrap().take() {
            // Wakes the acceptor, which then drops the listener: refused.
            let _ = TcpStream::connect(l.local_addr().unwrap());
        }
        for c in self.state.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(e) => {
                    assert!(Instant::now() < deadline, "rebind proxy port: {e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        self.state.up.store(true, Ordering::SeqCst);
        spawn_acceptor(self.state.clone(), listener);
    }

    fn close(&self) {
        self.state.closed.store(true, Ordering::SeqCst);
        self.cut();
    }
}

fn spawn_acceptor(state: Arc<ProxyState>, listener: TcpListener) {
    *state.listener.lock().unwrap() = Some(listener.try_clone().unwrap());
    std::thread::spawn(move || {
        for client in listener.incoming() {
            if !state.up.load(Ordering::SeqCst) || state.closed.load(Ordering::SeqCst) {
                return;
            }
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(("127.0.0.1", state.target)) else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            {
                let mut conns = state.conns.lock().unwrap();
                conns.push(client.try_clone().unwrap());
                conns.push(server.try_clone().unwrap());
            }
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(Shutdown::Both);
                    let _ = from.shutdown(Shutdown::Both);
                });
            }
        }
    });
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One record read back.
#[derive(Debug, Clone)]
pub struct Read {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key (the session id).
    pub key: String,
    /// The value, as JSON.
    pub value: serde_json::Value,
    /// The event-id header.
    pub event_id: Option<String>,
}

/// Reads every record of `topic` from the beginning until `pred` holds on all
/// records read (or `within` passes; then it panics with what it has).
/// Reads on until the end of every partition, so that extra copies are seen too.
pub fn read_topic(
    brokers: &str,
    topic: &str,
    within: Duration,
    mut pred: impl FnMut(&[Read]) -> bool,
) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("gatehouse-test-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .unwrap();
    let partitions: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + within;
    let mut out: Vec<Read> = Vec::new();
    let mut next: HashMap<i32, i64> = partitions.iter().map(|p| (*p, 0)).collect();
    loop {
        // Done when the predicate holds and every partition is read to its end.
        if pred(&out) {
            let at_end = partitions.iter().all(|&p| {
                consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(5))
                    .is_ok_and(|(_, hi)| next[&p] >= hi)
            });
            if at_end {
                return out;
            }
        }
        assert!(
            Instant::now() < deadline,
            "topic {topic}: condition not met within {within:?}; read {} records",
            out.len()
        );
        for _ in 0..10_000 {
            let Some(m) = consumer.poll(Duration::from_millis(100)) else {
                break;
            };
            let m = m.expect("consume");
            next.insert(m.partition(), m.offset() + 1);
            let event_id = m.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == "gatehouse-event-id")
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            });
            out.push(Read {
                partition: m.partition(),
                offset: m.offset(),
                key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                value: serde_json::from_slice(m.payload().unwrap_or_default())
                    .expect("records are JSON"),
                event_id,
            });
        }
    }
}
