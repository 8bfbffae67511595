//! A real headless Chromium, driven through its WebDriver (Debian's `chromium` and
//! `chromedriver`, installed by `scripts/install-browser.sh`), with blocking calls for the
//! suites. Each browser has its own chromedriver process and profile, stopped when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

/// One browser session.
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").finish_non_exhaustive()
    }
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium through it.
    pub fn start() -> Browser {
        let driver_bin = which("chromedriver");
        let chromium = which("chromium");
        let port = crate::net::free_port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().expect("a profile directory");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900",
                         format!("--user-data-dir={}", profile.path().display())],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let client = runtime.block_on(async {
            let mut last = None;
            for _ in 0..100 {
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                match ClientBuilder::new(connector)
                    .capabilities(capabilities.clone())
                    .connect(&url)
                    .await
                {
                    Ok(client) => return client,
                    Err(e) => last = Some(e),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("no WebDriver session at {url}: {last:?}");
        });
        Browser {
            runtime,
            client: Some(client),
            driver,
            _profile: profile,
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("a session")
    }

    pub fn goto(&self, url: &str) {
        self.runtime
            .block_on(self.client().goto(url))
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// The text of every element `css` selects.
    pub fn texts(&self, css: &str) -> Vec<String> {
        self.runtime.block_on(async {
            let mut texts = Vec::new();
            for element in self
                .client()
                .find_all(Locator::Css(css))
                .await
                .unwrap_or_default()
            {
                texts.push(element.text().await.unwrap_or_default());
            }
            texts
        })
    }

    /// The attribute `name` of the first element `css` selects.
    pub fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.runtime.block_on(async {
            let element = self.client().find(Locator::Css(css)).await.ok()?;
            element.attr(name).await.ok().flatten()
        })
    }

    /// Clicks the element `css` selects. A live page may replace it between finding and
    /// clicking (a stale element): then it is found again, for up to 5 s.
    pub fn click(&self, css: &str) {
        self.runtime.block_on(async {
            let mut last = String::new();
            for _ in 0..50 {
                match self.client().find(Locator::Css(css)).await {
                    Ok(element) => match element.click().await {
                        Ok(()) => return,
                        Err(e) => last = format!("cannot click {css}: {e}"),
                    },
                    Err(e) => last = format!("no {css}: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("{last}");
        });
    }

    /// The page's source as the browser holds it now (scripts' changes included).
    pub fn source(&self) -> String {
        self.runtime
            .block_on(self.client().source())
            .unwrap_or_default()
    }

    /// A PNG of the window.
    pub fn screenshot(&self, path: &Path) {
        let png = self
            .runtime
            .block_on(self.client().screenshot())
            .expect("a screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("the screenshot's directory");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(client.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn which(name: &str) -> std::path::PathBuf {
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{name} is not installed (scripts/install-browser.sh installs it)");
}
