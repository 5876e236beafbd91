//! Shared by the Rust integration tests: the bundled `quill-server` as a child process.
#![allow(dead_code)] // each test crate uses a different subset

pub mod raw;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use quill::client::HttpVersion;
use quill::{ClientConfig, QuillClient};

/// The HTTP version of the clients `Server` makes: `QUILL_TEST_HTTP_VERSION` (`auto`,
/// `http1`, `http2`), so one suite runs over each (`scripts/test` runs it twice).
pub fn http_version() -> HttpVersion {
    match std::env::var("QUILL_TEST_HTTP_VERSION") {
        Ok(name) => HttpVersion::from_name(&name).expect("QUILL_TEST_HTTP_VERSION"),
        Err(_) => HttpVersion::Auto,
    }
}

/// The `Prefer` header the clients of `Server` send (cleartext).
pub fn expected_prefer() -> &'static str {
    if http_version() == HttpVersion::Http2 {
        "prism=turbo"
    } else {
        "prism=classic"
    }
}

/// A `quill-server` child process, killed when dropped (also when a test panics).
pub struct Server {
    child: Child,
    pub url: String,
}

impl Server {
    /// Starts `quill-server --port 0 <args>` and waits for its `listening on` line.
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_quill-server"))
            .args(["--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start quill-server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read the listening line");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Server { child, url }
    }

    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in the URL")
    }

    /// A client with a 10 s timeout; the trailing `/` exercises URL normalisation.
    pub fn client(&self) -> QuillClient {
        self.client_with(|_| {})
    }

    pub fn client_with(&self, edit: impl FnOnce(&mut ClientConfig)) -> QuillClient {
        let mut cfg = ClientConfig::new(format!("{}/", self.url));
        cfg.timeout_ms = 10_000;
        cfg.http_version = http_version();
        edit(&mut cfg);
        QuillClient::with_config(cfg).unwrap()
    }
}

impl Server {
    /// Kills the server process now (as a crash would) and waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
