//! The client's public surface without a server: construction, configuration,
//! redaction, argument errors and executors.

use std::time::Duration;

use bytes::Bytes;
use quill::client::TokenStream;
use quill::client::{Call, Reply};
use quill::{ClientConfig, MessageStream, QuillClient, QuillError};

#[test]
fn construction_and_getters() {
    let c = QuillClient::new("https://example.com/api/", 1234, true).unwrap();
    assert_eq!(c.base_url(), "https://example.com/api");
    assert_eq!(c.timeout_ms(), 1234);
    assert!(c.compression_enabled());
    assert!(matches!(
        QuillClient::new("localhost:8080", 0, false),
        Err(QuillError::InvalidArgument { .. })
    ));
    let mut cfg = ClientConfig::new("http://h");
    cfg.ca_cert_pem =
        Some(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n".to_vec());
    let e = QuillClient::with_config(cfg).map(drop).unwrap_err();
    assert!(
        matches!(&e, QuillError::InvalidArgument { reason } if reason.contains("certificate")),
        "{e:?}"
    );
}

#[test]
fn debug_shows_names_not_secrets() {
    let c = QuillClient::new("http://h", 0, false).unwrap();
    c.set_api_key("KEY-123", None).unwrap();
    c.set_secret_header("X-Custom", "hidden-value").unwrap();
    c.set_header("X-Visible", "shown").unwrap();
    let dbg = format!("{c:?}");
    assert!(dbg.contains("X-API-Key") && dbg.contains("X-Custom") && dbg.contains("http://h"));
    assert!(!dbg.contains("KEY-123") && !dbg.contains("hidden-value") && !dbg.contains("shown"));
    assert_eq!(c.headers()[2], ("X-Visible".to_owned(), "shown".to_owned()));
    assert_eq!(c.headers_unredacted()[0].1, "KEY-123");
}

#[test]
fn bad_paths_fail_before_any_io() {
    let c = QuillClient::new("http://127.0.0.1:9", 1000, false).unwrap();
    let e = c
        .block_on(async {
            c.run::<Reply>(Call::proto("a/b", "M", Bytes::new()))
                .await
                .map(Reply::into_body)
        })
        .unwrap_err();
    assert!(matches!(e, QuillError::InvalidArgument { .. }), "{e}");
}

#[test]
fn refused_connection_is_a_connection_error_and_retries_stay_bounded() {
    let mut cfg = ClientConfig::new("http://127.0.0.1:9");
    cfg.max_retries = 2;
    cfg.timeout_ms = 5_000;
    let c = QuillClient::with_config(cfg).unwrap();
    let start = std::time::Instant::now();
    let e = c
        .block_on(async {
            c.run::<Reply>(Call::proto("s.v1.S", "M", Bytes::new()).idempotent(true))
                .await
                .map(Reply::into_body)
        })
        .unwrap_err();
    assert!(matches!(e, QuillError::Connection { .. }), "{e}");
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[test]
fn calls_work_from_a_foreign_executor() {
    // A current-thread runtime without I/O or time drivers stands in for uniffi's
    // (or any other) executor: the call still works because it runs on the client's
    // own runtime.
    let foreign = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let c = QuillClient::new("http://127.0.0.1:9", 1000, false).unwrap();
    let e = foreign
        .block_on(async {
            c.run::<Reply>(Call::proto("s.v1.S", "M", Bytes::new()))
                .await
                .map(Reply::into_body)
        })
        .unwrap_err();
    assert!(matches!(e, QuillError::Connection { .. }), "{e}");
}

/// A public root (DigiCert TLS ECC P384 Root G5), as an extra trusted root.
const ROOT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIICGTCCAZ+gAwIBAgIQCeCTZaz32ci5PhwLBCou8zAKBggqhkjOPQQDAzBOMQsw
CQYDVQQGEwJVUzEXMBUGA1UEChMORGlnaUNlcnQsIEluYy4xJjAkBgNVBAMTHURp
Z2lDZXJ0IFRMUyBFQ0MgUDM4NCBSb290IEc1MB4XDTIxMDExNTAwMDAwMFoXDTQ2
MDExNDIzNTk1OVowTjELMAkGA1UEBhMCVVMxFzAVBgNVBAoTDkRpZ2lDZXJ0LCBJ
bmMuMSYwJAYDVQQDEx1EaWdpQ2VydCBUTFMgRUNDIFAzODQgUm9vdCBHNTB2MBAG
ByqGSM49AgEGBSuBBAAiA2IABMFEoc8Rl1Ca3iOCNQfN0MsYndLxf3c1TzvdlHJS
7cI7+Oz6e2tYIOyZrsn8aLN1udsJ7MgT9U7GCh1mMEy7H0cKPGEQQil8pQgO4CLp
0zVozptjn4S1mU1YoI71VOeVyaNCMEAwHQYDVR0OBBYEFMFRRVBZqz7nLFr6ICIS
B4CIfBFqMA4GA1UdDwEB/wQEAwIBhjAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49
BAMDA2gAMGUCMQCJao1H5+z8blUD2WdsJk6Dxv3J+ysTvLd6jLRl0mlpYxNjOyZQ
LgGheQaRnUi/wr4CMEfDFXuxoJGZSZOoPHzoRgaLLPIxAJSdYsiJvRmEFOml+wG4
DXZDjC5Ty3zfDBeWUA==
-----END CERTIFICATE-----
";

#[test]
fn extra_root_certificates() {
    let mut cfg = ClientConfig::new("https://example.com");
    cfg.ca_cert_pem = Some(ROOT_PEM.as_bytes().to_vec());
    QuillClient::with_config(cfg.clone()).unwrap();
    cfg.ca_cert_pem = Some(ROOT_PEM.repeat(2).into_bytes());
    QuillClient::with_config(cfg.clone()).unwrap();
    cfg.ca_cert_pem = Some(b"no certificate here".to_vec());
    assert!(matches!(
        QuillClient::with_config(cfg),
        Err(QuillError::InvalidArgument { .. })
    ));
}

#[test]
fn client_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<QuillClient>();
    check::<MessageStream>();
    check::<TokenStream>();
}
