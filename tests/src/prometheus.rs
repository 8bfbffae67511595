//! A real Prometheus server and two tiny loopback HTTP servers, for canary-analysis tests.
//!
//! [`Exporter`] serves gauges whose values the test sets; [`Prometheus`] is the real server
//! (`.tools/bin/prometheus`, see `scripts/install-prometheus.sh`) scraping one exporter every
//! second; [`HttpCheck`] answers every request with a status code the test sets.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests larger than this (line, headers and body) are cut off; test clients send far less.
const MAX_REQUEST: usize = 64 * 1024;

/// An HTTP server on loopback serving `GET /metrics` in the Prometheus text format: one gauge per
/// name set with [`Exporter::set`]. Stops accepting when dropped.
#[derive(Debug)]
pub struct Exporter {
    server: Server,
    /// metric name -> label set (`""` or `{code="500"}`) -> value.
    gauges: Arc<Mutex<BTreeMap<String, BTreeMap<String, f64>>>>,
}

impl Exporter {
    /// Starts the exporter with no metrics.
    pub fn start() -> Self {
        let gauges: Arc<Mutex<BTreeMap<String, BTreeMap<String, f64>>>> = Arc::default();
        let shared = Arc::clone(&gauges);
        let server = Server::start("exporter", move |request| {
            if request.method == "GET" && request.path.split('?').next() == Some("/metrics") {
                let gauges = shared.lock().unwrap_or_else(PoisonError::into_inner);
                Response::new(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    exposition(&gauges),
                )
            } else {
                Response::new(404, "text/plain", "not found\n".to_owned())
            }
        });
        Exporter { server, gauges }
    }

    /// Sets the gauge `name` to `value`; `name` may carry labels: `http_requests{code="500"}`.
    pub fn set(&self, name: &str, value: f64) {
        let (family, labels) = split_series(name);
        self.gauges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(family.to_owned())
            .or_default()
            .insert(labels.to_owned(), value);
    }

    /// Stops exposing the series `name` (as [`Exporter::set`] names it).
    pub fn remove(&self, name: &str) {
        let (family, labels) = split_series(name);
        let mut gauges = self.gauges.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(series) = gauges.get_mut(family) {
            series.remove(labels);
            if series.is_empty() {
                gauges.remove(family);
            }
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }
}

/// Splits `name{labels}` into the metric name and the label part (`""` without labels).
fn split_series(name: &str) -> (&str, &str) {
    let (family, labels) = name.find('{').map_or((name, ""), |at| name.split_at(at));
    let valid = family.chars().enumerate().all(|(i, c)| {
        c == '_' || c == ':' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
    });
    assert!(
        !family.is_empty() && valid && (labels.is_empty() || labels.ends_with('}')),
        "{name:?} is not a Prometheus series name (name or name{{label=\"value\"}})"
    );
    (family, labels)
}

/// The Prometheus text format of `gauges`.
fn exposition(gauges: &BTreeMap<String, BTreeMap<String, f64>>) -> String {
    let mut text = String::new();
    for (family, series) in gauges {
        text.push_str(&format!("# TYPE {family} gauge\n"));
        for (labels, value) in series {
            text.push_str(&format!("{family}{labels} {}\n", sample_value(*value)));
        }
    }
    text
}

fn sample_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value == f64::INFINITY {
        "+Inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{value}")
    }
}

/// A real Prometheus server on loopback scraping one target every second (job `canary`), with
/// its data and log in a fresh temporary directory. Killed when dropped.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    // Dropped after the process is killed (Drop runs before the fields are dropped).
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `exporter` and waits until it is ready.
    pub fn start(exporter: &Exporter) -> Self {
        Self::scraping(exporter.addr())
    }

    /// Starts Prometheus scraping `target` (`/metrics`, every second) and waits until it is
    /// ready; panics with Prometheus' log if it is not ready within 30 s.
    pub fn scraping(target: SocketAddr) -> Self {
        Self::with_scrape_config(&format!(
            "  - job_name: canary\n    static_configs:\n      - targets: ['{target}']\n"
        ))
    }

    /// Starts Prometheus scraping `https://TARGET/metrics` every second (job `https`), trusting
    /// the CA certificate in `ca_file` for the target's serving certificate.
    pub fn scraping_https(target: SocketAddr, ca_file: &std::path::Path) -> Self {
        Self::with_scrape_config(&format!(
            "  - job_name: https\n    scheme: https\n    tls_config:\n      ca_file: '{}'\n    \
             static_configs:\n      - targets: ['{target}']\n",
            ca_file.display()
        ))
    }

    /// Starts Prometheus with `scrape_configs` (YAML list items, indented two spaces), scraping
    /// and evaluating every second.
    fn with_scrape_config(scrape_configs: &str) -> Self {
        let bin = crate::tool("PROMETHEUS", "prometheus", "scripts/install-prometheus.sh");
        let dir = tempfile::Builder::new()
            .prefix("e2e-prometheus-")
            .tempdir()
            .expect("a temporary directory for Prometheus");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n{scrape_configs}"
            ),
        )
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", config.display()));
        let log = dir.path().join("prometheus.log");
        // The free port is found by binding and releasing it; another process may take it in
        // between, so a start that fails on the address is retried on a new port.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let addr = free_loopback_port();
            let mut child = spawn(&bin, &config, dir.path(), addr, &log);
            match wait_ready(&mut child, addr) {
                Ok(()) => {
                    return Prometheus {
                        child,
                        addr,
                        log,
                        _dir: dir,
                    };
                }
                Err(problem) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    if attempt < 3 && text.contains("address already in use") {
                        continue;
                    }
                    panic!("Prometheus ({}) {problem}; its log:\n{text}", bin.display());
                }
            }
        }
    }

    /// The base URL, like `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The value of the first sample of the instant query `promql` (a vector's first element or
    /// a scalar), or `None` when the result is empty. Panics when Prometheus cannot be asked or
    /// refuses the query.
    pub fn query(&self, promql: &str) -> Option<f64> {
        self.try_query(promql).unwrap_or_else(|e| {
            panic!(
                "Prometheus query {promql:?} failed: {e}; its log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            )
        })
    }

    /// Polls `promql` until it returns `expected` (NaN matches NaN; others within 1e-9
    /// relative), and panics with the last result after `timeout`.
    pub fn wait_for(&self, promql: &str, expected: f64, timeout: Duration) {
        crate::wait::until(
            &format!("Prometheus query {promql:?} to return {expected}"),
            timeout,
            || match self.query(promql) {
                Some(value) if same_value(value, expected) => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
    }

    fn try_query(&self, promql: &str) -> Result<Option<f64>, String> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let (status, body) = get(self.addr, &path).map_err(|e| e.to_string())?;
        let json: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| format!("HTTP {status}, not JSON ({e}): {body}"))?;
        if json["status"] != "success" {
            return Err(format!("HTTP {status}: {body}"));
        }
        let data = &json["data"];
        let sample = match data["resultType"].as_str() {
            Some("vector") => match data["result"].as_array() {
                Some(samples) if samples.is_empty() => return Ok(None),
                Some(samples) => &samples[0]["value"],
                None => return Err(format!("no result: {body}")),
            },
            Some("scalar") => &data["result"],
            _ => return Err(format!("neither a vector nor a scalar: {body}")),
        };
        let text = sample[1]
            .as_str()
            .ok_or_else(|| format!("no sample value: {body}"))?;
        text.parse::<f64>()
            .map(Some)
            .map_err(|e| format!("sample value {text:?}: {e}"))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(
    bin: &std::path::Path,
    config: &std::path::Path,
    dir: &std::path::Path,
    addr: SocketAddr,
    log: &std::path::Path,
) -> Child {
    let out = std::fs::File::create(log)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
    let err = out
        .try_clone()
        .expect("a log file handle can be duplicated");
    Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg(format!(
            "--web.console.templates={}",
            dir.join("consoles").display()
        ))
        .arg(format!(
            "--web.console.libraries={}",
            dir.join("console_libraries").display()
        ))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()))
}

fn wait_ready(child: &mut Child, addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited ({status}) before it was ready"));
        }
        let last = match get(addr, "/-/ready") {
            Ok((200, _)) => return Ok(()),
            Ok((status, body)) => format!("HTTP {status}: {}", body.trim()),
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            return Err(format!(
                "was not ready within {READY_TIMEOUT:?} (last /-/ready: {last})"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn free_loopback_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port on 127.0.0.1")
}

fn same_value(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An HTTP server on loopback answering every request with the status code the test sets (200
/// at first), for health or webhook checks. Stops accepting when dropped.
#[derive(Debug)]
pub struct HttpCheck {
    server: Server,
    status: Arc<AtomicU16>,
    requests: Arc<AtomicUsize>,
}

impl HttpCheck {
    /// Starts the server answering 200.
    pub fn start() -> Self {
        let status = Arc::new(AtomicU16::new(200));
        let requests = Arc::new(AtomicUsize::new(0));
        let (shared_status, shared_requests) = (Arc::clone(&status), Arc::clone(&requests));
        let server = Server::start("http check", move |_request| {
            shared_requests.fetch_add(1, Ordering::SeqCst);
            let status = shared_status.load(Ordering::SeqCst);
            Response::new(status, "text/plain", format!("status {status}\n"))
        });
        HttpCheck {
            server,
            status,
            requests,
        }
    }

    /// Answers every following request with `status` (100..=999).
    pub fn set_status(&self, status: u16) {
        assert!(
            (100..=999).contains(&status),
            "{status} is not an HTTP status code"
        );
        self.status.store(status, Ordering::SeqCst);
    }

    /// The base URL, like `http://127.0.0.1:PORT` (every path answers the same).
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// How many requests were answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A plain HTTP GET of `url` (`http://HOST:PORT/PATH` only) with `Connection: close`: the status
/// code and the body.
pub fn http_get(url: &str) -> std::io::Result<(u16, String)> {
    let invalid = || std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{url:?}"));
    let rest = url.strip_prefix("http://").ok_or_else(invalid)?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |at| rest.split_at(at));
    let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)?
        .next()
        .ok_or_else(invalid)?;
    get(addr, path)
}

fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    // HTTP/1.0: the server ends the body by closing, never with chunked encoding.
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let malformed = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("malformed HTTP response: {text:?}"),
        )
    };
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(malformed)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(malformed)?;
    Ok((status, body.to_owned()))
}

/// The accept loop shared by [`Exporter`] and [`HttpCheck`]: one thread, one more per
/// connection; dropping it stops accepting (the threads never hold up process exit).
#[derive(Debug)]
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

#[derive(Debug)]
struct Request {
    method: String,
    path: String,
}

#[derive(Debug)]
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn new(status: u16, content_type: &'static str, body: String) -> Self {
        Response {
            status,
            content_type,
            body,
        }
    }
}

impl Server {
    fn start(name: &str, respond: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("cannot listen for the {name} on 127.0.0.1: {e}"));
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let respond = Arc::new(respond);
        std::thread::Builder::new()
            .name(format!("e2e {name} {addr}"))
            .spawn(move || {
                for stream in listener.incoming() {
                    if stopped.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let respond = Arc::clone(&respond);
                    std::thread::spawn(move || {
                        let _ = answer(stream, &*respond);
                    });
                }
            })
            .expect("a server thread starts");
        Server { addr, stop }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag and drops the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn answer(mut stream: TcpStream, respond: &dyn Fn(&Request) -> Response) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 || raw.len() > MAX_REQUEST {
            return Ok(());
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    // Reads a body the client sent, so closing does not reset the connection under it.
    let body_len = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_REQUEST);
    let mut have = raw.len() - head_end;
    while have < body_len {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        have += n;
    }
    let mut first = head.lines().next().unwrap_or_default().split_whitespace();
    let request = Request {
        method: first.next().unwrap_or_default().to_owned(),
        path: first.next().unwrap_or_default().to_owned(),
    };
    let response = respond(&request);
    let body = if request.method == "HEAD" {
        ""
    } else {
        &response.body
    };
    write!(
        stream,
        "HTTP/1.0 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len(),
    )?;
    stream.flush()?;
    stream.shutdown(Shutdown::Write)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}
