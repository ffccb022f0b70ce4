//! A headless Chromium for one test: chromedriver started on a free port, a WebDriver session on it, bounded
//! waits on CSS selectors, and screenshots saved in the target directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use e2e::SETTLE;
use fantoccini::elements::Element;
use fantoccini::error::NewSessionError;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How long chromedriver and Chromium may take to start and open a session: seconds on an idle machine, more
/// while other tests build and run on two cores.
const START: Duration = Duration::from_secs(60);

/// How often a wait looks again. The console polls every second, so a tenth of that adds little to a wait.
const POLL: Duration = Duration::from_millis(100);

/// The window the screenshots show: a laptop screen, tall enough for the whole console.
pub const WIDE: (u32, u32) = (1280, 1280);

pub struct Browser {
    client: Client,
    /// Killed on drop, with the Chromium it started.
    _driver: Child,
    shots: PathBuf,
    /// Which browser of this test binary it is, for the name of its failure screenshot.
    number: usize,
}

static STARTED: AtomicUsize = AtomicUsize::new(0);

/// Where the screenshots go: `browser-screenshots/` in the target directory this test binary was built in
/// (`<target>/<profile>/deps/<test binary>`), so they stay inside the repository's build output.
pub fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test binary lives in <target>/<profile>/deps");
    target.join("browser-screenshots")
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("its address").port()
}

impl Browser {
    /// Starts chromedriver and opens a headless Chromium session; panics, saying what to install, when either
    /// is missing.
    pub async fn start() -> Browser {
        Browser::start_with(&[]).await
    }

    /// As [`Browser::start`], with `env` set for chromedriver and so for the Chromium it starts (`TZ`: the
    /// browser's time zone).
    pub async fn start_with(env: &[(&str, &str)]) -> Browser {
        let shots = screenshot_dir();
        std::fs::create_dir_all(&shots).expect("creating the screenshot folder");
        let port = free_port();
        let mut driver = match Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                shots.join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "chromedriver is not installed (not on PATH): this test needs Debian's chromium and \
                 chromium-driver; run scripts/setup.sh, which installs them"
            ),
            Err(e) => panic!("starting chromedriver: {e}"),
        };
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), "chrome".into());
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "args": [
                    "--headless=new",
                    // CI runs as root, where Chromium's sandbox cannot start.
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--hide-scrollbars",
                    "--force-device-scale-factor=1",
                    // The date and time inputs take what is typed in the order of this locale (mm/dd/yyyy).
                    "--lang=en-US",
                    format!("--window-size={},{}", WIDE.0, WIDE.1),
                ]
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + START;
        let client = loop {
            if let Ok(Some(status)) = driver.try_wait() {
                panic!(
                    "chromedriver exited at start ({status}); its log: {}",
                    shots.join("chromedriver.log").display()
                );
            }
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                // chromedriver does not listen yet: look again until the deadline.
                Err(
                    NewSessionError::Failed(_)
                    | NewSessionError::FailedC(_)
                    | NewSessionError::Lost(_),
                ) if Instant::now() < deadline => {}
                Err(e) => panic!(
                    "no headless Chromium session from chromedriver within {START:?}: {e}. This test needs \
                     Debian's chromium and chromium-driver: run scripts/setup.sh, which installs them \
                     (chromedriver's log: {})",
                    shots.join("chromedriver.log").display()
                ),
            }
            tokio::time::sleep(POLL).await;
        };
        Browser {
            client,
            _driver: driver,
            shots,
            number: STARTED.fetch_add(1, Ordering::Relaxed),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("opening the page");
    }

    /// Waits until an element matches `css`, for at most [`SETTLE`]; on timeout fails (see [`Browser::fail`])
    /// with `what`.
    pub async fn wait_for(&self, css: &str, what: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(SETTLE)
            .every(POLL)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(e) => {
                self.fail(&format!("waited {SETTLE:?} for {what} ({css}): {e}"))
                    .await
            }
        }
    }

    /// Saves `failed-<n>.png` (n: this browser's number in the test binary) and panics with `why` and the
    /// page's text.
    pub async fn fail(&self, why: &str) -> ! {
        let shot = self.screenshot(&format!("failed-{}", self.number)).await;
        let text = match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        panic!(
            "{why}; the page showed:\n{text}\n(screenshot: {})",
            shot.display()
        );
    }

    /// Waits until the element matching `css` is displayed and its text contains `expected`, for at most
    /// [`SETTLE`]; returns the whole text.
    pub async fn wait_for_text(&self, css: &str, expected: &str) -> String {
        let deadline = Instant::now() + SETTLE;
        let mut last = String::from("(no such element)");
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                let shown = element.is_displayed().await.unwrap_or(false);
                let text = element.text().await.unwrap_or_default();
                if shown && text.contains(expected) {
                    return text;
                }
                last = if shown {
                    format!("{text:?}")
                } else {
                    "(hidden)".to_owned()
                };
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "waited {SETTLE:?} for {css} to show {expected:?}; it showed {last}"
                ))
                .await
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The elements matching `css` now.
    pub async fn all(&self, css: &str) -> Vec<Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .expect("finding elements")
    }

    /// Runs `script` in the page and returns its value.
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, vec![])
            .await
            .expect("running a script in the page")
    }

    /// Saves the page as `<name>.png` in the screenshot folder; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("taking a screenshot");
        let path = self.shots.join(format!("{name}.png"));
        write(&path, &png);
        path
    }

    pub async fn resize(&self, (width, height): (u32, u32)) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("resizing the window");
    }

    pub async fn close(self) {
        self.client.close().await.expect("closing the browser");
    }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
