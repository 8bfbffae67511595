//! Real Git repositories for the suites, made with the `git` CLI in a temporary directory and
//! isolated from the user's Git configuration.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The environment the suites run `git` in: none of the user's configuration, one author.
pub const ISOLATED: [(&str, &str); 6] = [
    ("GIT_CONFIG_GLOBAL", "/dev/null"),
    ("GIT_CONFIG_NOSYSTEM", "1"),
    ("GIT_AUTHOR_NAME", "E2E Author"),
    ("GIT_AUTHOR_EMAIL", "author@e2e.invalid"),
    ("GIT_COMMITTER_NAME", "E2E Author"),
    ("GIT_COMMITTER_EMAIL", "author@e2e.invalid"),
];

/// Runs git in `dir` in the [`ISOLATED`] environment and returns its trimmed stdout; panics on
/// failure.
pub fn git_in(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .envs(ISOLATED)
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A non-bare repository whose `main` branch tests commit to; fetched over `file://`.
#[derive(Debug)]
pub struct Repo {
    dir: tempfile::TempDir,
}

impl Default for Repo {
    fn default() -> Self {
        Self::new()
    }
}

impl Repo {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("e2e-repo-")
            .tempdir()
            .expect("a temporary directory");
        let repo = Repo { dir };
        repo.git(&["init", "--quiet", "--initial-branch=main"]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The `file://` URL of the repository.
    pub fn url(&self) -> String {
        format!("file://{}", self.path().display())
    }

    /// Runs git in the repository and returns its trimmed stdout; panics on failure.
    pub fn git(&self, args: &[&str]) -> String {
        git_in(self.path(), args)
    }

    /// Writes a file (creating directories).
    pub fn write(&self, path: &str, contents: &str) -> &Self {
        let full: PathBuf = self.path().join(path);
        std::fs::create_dir_all(full.parent().expect("a file has a parent"))
            .expect("create directories");
        std::fs::write(&full, contents).expect("write a file");
        self
    }

    pub fn remove(&self, path: &str) -> &Self {
        self.git(&["rm", "--quiet", path]);
        self
    }

    /// Commits everything and returns the new commit id.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "--all"]);
        self.git(&["commit", "--quiet", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }
}

/// Serves one repository over smart HTTP on loopback by running `git http-backend` as a CGI
/// program per request, as a web server in front of Git would. Stops when dropped.
#[derive(Debug)]
pub struct HttpRemote {
    url: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    addr: std::net::SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
    ca: Option<(tempfile::TempDir, PathBuf)>,
}

impl Repo {
    /// Starts serving this repository over HTTP.
    pub fn serve_http(&self) -> HttpRemote {
        self.serve_with("127.0.0.1", None, None)
    }

    /// Starts serving this repository over HTTP on `ip`, e.g. the address pods of a cluster with
    /// real nodes reach the host at.
    pub fn serve_http_on(&self, ip: &str) -> HttpRemote {
        self.serve_with(ip, None, None)
    }

    /// Starts serving this repository over HTTPS, with a certificate from a fresh test CA, to one
    /// account only (HTTP Basic). Clients trust the CA through `HttpRemote::ca_file`.
    pub fn serve_https_with_account(&self, username: &str, password: &str) -> HttpRemote {
        use base64::Engine as _;
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        let (tls, ca_pem) = crate::tls::loopback_server("e2e git remote CA");
        let mut remote = self.serve_with(
            "127.0.0.1",
            Some(format!("Basic {token}")),
            Some(std::sync::Arc::new(tls)),
        );
        let ca_dir = tempfile::tempdir().expect("a directory for the CA");
        let ca_file = ca_dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem).expect("write the CA");
        remote.ca = Some((ca_dir, ca_file));
        remote
    }

    fn serve_with(
        &self,
        ip: &str,
        authorization: Option<String>,
        server_tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    ) -> HttpRemote {
        let root = self
            .path()
            .parent()
            .expect("a repository has a parent")
            .to_owned();
        let name = self
            .path()
            .file_name()
            .expect("a repository has a name")
            .to_string_lossy()
            .into_owned();
        let https = server_tls.is_some();
        let listener = std::net::TcpListener::bind((ip, 0))
            .unwrap_or_else(|e| panic!("cannot listen on {ip}: {e}"));
        let addr = listener.local_addr().expect("bound address");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stalled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (stopped, stalling, accepted) = (stop.clone(), stalled.clone(), connections.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if stalling.load(std::sync::atomic::Ordering::SeqCst) {
                    // A hanging server: the connection is accepted and never answered, until
                    // the stall ends or the client gives up.
                    let (stalling, stopped) = (stalling.clone(), stopped.clone());
                    std::thread::spawn(move || {
                        let mut probe = [0u8; 1];
                        let _ = stream.set_nonblocking(true);
                        while stalling.load(std::sync::atomic::Ordering::SeqCst)
                            && !stopped.load(std::sync::atomic::Ordering::SeqCst)
                        {
                            // Read and drop what the client sends; stop once it hangs up.
                            match std::io::Read::read(&mut &stream, &mut probe) {
                                Ok(0) => break,
                                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => break,
                                _ => std::thread::sleep(std::time::Duration::from_millis(20)),
                            }
                        }
                    });
                    continue;
                }
                let root = root.clone();
                let authorization = authorization.clone();
                let tls = server_tls.clone();
                std::thread::spawn(move || {
                    let served = match tls {
                        None => http::serve(stream, &root, authorization.as_deref()),
                        Some(config) => match rustls::ServerConnection::new(config) {
                            Ok(conn) => http::serve(
                                rustls::StreamOwned::new(conn, stream),
                                &root,
                                authorization.as_deref(),
                            ),
                            Err(err) => Err(std::io::Error::other(err)),
                        },
                    };
                    if let Err(err) = served {
                        eprintln!("git http remote: {err}");
                    }
                });
            }
        });
        let scheme = if https { "https" } else { "http" };
        HttpRemote {
            url: format!("{scheme}://{addr}/{name}"),
            stop,
            stalled,
            connections,
            addr,
            thread: Some(thread),
            ca: None,
        }
    }
}

impl HttpRemote {
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Makes the remote hang (`true`): connections are accepted and never answered, as a remote
    /// behind a stuck proxy or an overloaded server does. `false` serves again.
    pub fn set_stalled(&self, stalled: bool) {
        self.stalled
            .store(stalled, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many connections the remote has accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The PEM file of the CA that signed an HTTPS remote's certificate.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca.as_ref().map(|(_, file)| file.as_path())
    }
}

impl Drop for HttpRemote {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

mod http {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::path::Path;
    use std::process::{Command, Stdio};

    /// Answers one HTTP/1.1 request with the output of `git http-backend`, then closes.
    pub fn serve(
        mut stream: impl Read + Write,
        root: &Path,
        authorization: Option<&str>,
    ) -> std::io::Result<()> {
        let mut reader = BufReader::new(&mut stream);
        let mut request_line = String::new();
        reader.read_line(&mut request_line)?;
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let target = parts.next().unwrap_or_default().to_owned();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size)?;
                let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                    .unwrap_or(0);
                let mut chunk = vec![0; size + 2];
                reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(length) = header("content-length").and_then(|v| v.parse::<usize>().ok())
        {
            body.resize(length, 0);
            reader.read_exact(&mut body)?;
        }

        if let Some(expected) = authorization
            && header("authorization").as_deref() != Some(expected)
        {
            write!(
                stream,
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            return stream.flush();
        }
        let mut cgi = Command::new("git");
        cgi.arg("http-backend")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("GIT_PROJECT_ROOT", root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("REQUEST_METHOD", &method)
            .env("PATH_INFO", path)
            .env("QUERY_STRING", query)
            .env("CONTENT_LENGTH", body.len().to_string())
            .env("REMOTE_ADDR", "127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(t) = header("content-type") {
            cgi.env("CONTENT_TYPE", t);
        }
        if let Some(e) = header("content-encoding") {
            cgi.env("HTTP_CONTENT_ENCODING", e);
        }
        if let Some(p) = header("git-protocol") {
            cgi.env("GIT_PROTOCOL", p);
        }
        let mut child = cgi.spawn()?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let writer = std::thread::spawn(move || stdin.write_all(&body));
        let output = child.wait_with_output()?;
        let _ = writer.join();

        let split = output
            .stdout
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| (i, 4))
            .or_else(|| {
                output
                    .stdout
                    .windows(2)
                    .position(|w| w == b"\n\n")
                    .map(|i| (i, 2))
            });
        let (head, payload) = match split {
            Some((i, n)) => (
                String::from_utf8_lossy(&output.stdout[..i]).into_owned(),
                &output.stdout[i + n..],
            ),
            None => (String::new(), &output.stdout[..]),
        };
        let mut status = "200 OK".to_owned();
        let mut response_headers = String::new();
        for line in head.lines() {
            match line.split_once(':') {
                Some((name, value)) if name.eq_ignore_ascii_case("status") => {
                    status = value.trim().to_owned()
                }
                Some(_) => response_headers.push_str(&format!("{}\r\n", line.trim_end())),
                None => {}
            }
        }
        write!(
            stream,
            "HTTP/1.1 {status}\r\n{response_headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
            payload.len()
        )?;
        stream.write_all(payload)?;
        stream.flush()
    }
}
