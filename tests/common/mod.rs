//! Shared by the Rust integration tests: the bundled `quill-server` as a child process.
#![allow(dead_code)] // each test crate uses a different subset

pub mod raw;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use quill::client::HttpVersion;
use quill::{ClientConfig, QuillClient};

/// The HTTP version of the clients `Server` makes: `QUILL_TEST_HTTP_VERSION` (`auto`,
/// `http1`, `http2`, `http3`), so one suite runs over each (`scripts/test` runs it
/// three times). Under `http3` every `Server` serves TLS with a throwaway certificate
/// (HTTP/3 needs it) and its clients trust it.
pub fn http_version() -> HttpVersion {
    match std::env::var("QUILL_TEST_HTTP_VERSION") {
        Ok(name) => HttpVersion::from_name(&name).expect("QUILL_TEST_HTTP_VERSION"),
        Err(_) => HttpVersion::Auto,
    }
}

/// The `Prefer` header the clients of `Server` send.
pub fn expected_prefer() -> &'static str {
    match http_version() {
        HttpVersion::Http2 => "prism=turbo",
        HttpVersion::Http3 => "prism=hyper",
        _ => "prism=classic",
    }
}

/// Whether this run's clients speak HTTP/3 (and its servers serve TLS).
pub fn over_http3() -> bool {
    http_version() == HttpVersion::Http3
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written once per test
/// process: (certificate PEM path, key PEM path, certificate PEM).
pub fn test_certificate() -> &'static (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    static CERT: std::sync::OnceLock<(std::path::PathBuf, std::path::PathBuf, Vec<u8>)> =
        std::sync::OnceLock::new();
    CERT.get_or_init(|| {
        let cert = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .expect("self-signed certificate");
        let dir = std::env::temp_dir().join(format!("quill-test-cert-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("certificate directory");
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        let pem = cert.cert.pem();
        std::fs::write(&cert_path, &pem).expect("write certificate");
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
        (cert_path, key_path, pem.into_bytes())
    })
}

/// A `quill-server` child process, killed when dropped (also when a test panics).
pub struct Server {
    child: Child,
    pub url: String,
}

impl Server {
    /// Starts `quill-server --port 0 <args>` and waits for its `listening on` line.
    pub fn start(args: &[&str]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_quill-server"));
        command.args(["--port", "0"]).args(args);
        if over_http3() && !args.contains(&"--tls-cert") {
            let (cert, key, _) = test_certificate();
            command
                .arg("--tls-cert")
                .arg(cert)
                .arg("--tls-key")
                .arg(key);
        }
        let mut child = command
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
        if over_http3() {
            cfg.ca_cert_pem = Some(test_certificate().2.clone());
        }
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
