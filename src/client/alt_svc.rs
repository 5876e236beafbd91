//! `Alt-Svc` (RFC 7838): how a server reached over TCP says it also speaks HTTP/3, and
//! on which UDP port. `auto` clients over TLS learn it from any response, as browsers
//! do, and send later calls over HTTP/3 (`transport.rs`).
//!
//! Only the same host is accepted (`h3=":443"`, or `h3="host:443"` naming the host the
//! client already dials): an advertisement never sends a call, or its headers, to
//! another host.

use std::sync::atomic::{AtomicU32, Ordering};

use reqwest::header::{HeaderMap, ALT_SVC};

/// What `Alt-Svc` headers say about HTTP/3 on the server's host.
#[derive(Debug, Default)]
pub(crate) struct AltSvc {
    /// The advertised UDP port; 0 = none (never advertised, or cleared).
    port: AtomicU32,
}

/// One header's word on HTTP/3.
#[derive(Debug, PartialEq, Eq)]
enum Advert {
    Port(u16),
    Clear,
    Nothing,
}

impl AltSvc {
    /// Notes the `Alt-Svc` headers of one response from `host`.
    pub fn learn(&self, headers: &HeaderMap, host: &str) {
        for value in headers.get_all(ALT_SVC) {
            let Ok(text) = value.to_str() else { continue };
            match parse(text, host) {
                Advert::Port(port) => self.port.store(u32::from(port), Ordering::Relaxed),
                Advert::Clear => self.port.store(0, Ordering::Relaxed),
                Advert::Nothing => {}
            }
        }
    }

    /// The UDP port the server advertised for HTTP/3, if it has.
    pub fn h3_port(&self) -> Option<u16> {
        u16::try_from(self.port.load(Ordering::Relaxed))
            .ok()
            .filter(|&p| p != 0)
    }
}

/// The first `h3` alternative for `host` in one header value.
fn parse(value: &str, host: &str) -> Advert {
    let value = value.trim();
    if value.eq_ignore_ascii_case("clear") {
        return Advert::Clear;
    }
    for entry in value.split(',') {
        // `proto="authority"; ma=…; persist=…`: the parameters do not change the choice.
        let alternative = entry.split(';').next().unwrap_or_default().trim();
        let Some((protocol, authority)) = alternative.split_once('=') else {
            continue;
        };
        if protocol.trim() != "h3" {
            continue;
        }
        let authority = authority.trim().trim_matches('"');
        let Some((alt_host, port)) = authority.rsplit_once(':') else {
            continue;
        };
        let alt_host = alt_host.trim_start_matches('[').trim_end_matches(']');
        if !alt_host.is_empty() && !alt_host.eq_ignore_ascii_case(host) {
            continue;
        }
        if let Some(port) = port.parse().ok().filter(|&p: &u16| p != 0) {
            return Advert::Port(port);
        }
    }
    Advert::Nothing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_h3_on_the_same_host_is_taken() {
        let cases = [
            (r#"h3=":8443"; ma=86400"#, Advert::Port(8443)),
            (
                r#"h2=":443", h3=":4433"; ma=60; persist=1"#,
                Advert::Port(4433),
            ),
            (r#"h3="example.test:9443""#, Advert::Port(9443)),
            (r#"h3="EXAMPLE.test:9443""#, Advert::Port(9443)),
            (r#"h3="elsewhere.test:443""#, Advert::Nothing),
            (r#"h3-29=":443""#, Advert::Nothing),
            (r#"h3=":0""#, Advert::Nothing),
            (r#"h3=":99999""#, Advert::Nothing),
            (r#"h3=nonsense"#, Advert::Nothing),
            ("", Advert::Nothing),
            ("clear", Advert::Clear),
        ];
        for (value, want) in cases {
            assert_eq!(parse(value, "example.test"), want, "{value:?}");
        }
        assert_eq!(parse(r#"h3="[::1]:443""#, "::1"), Advert::Port(443));
    }

    proptest::proptest! {
        /// Header values are network bytes: any text parses without panicking, and a
        /// port is only ever taken from the text itself.
        #[test]
        fn any_value_parses_safely(value in ".{0,80}", host in "[a-z.]{0,12}") {
            if let Advert::Port(port) = parse(&value, &host) {
                let needle = [":", &port.to_string()].concat();
                proptest::prop_assert!(value.contains(&needle));
            }
        }
    }

    #[test]
    fn learning_and_clearing() {
        let alt = AltSvc::default();
        let mut headers = HeaderMap::new();
        alt.learn(&headers, "h");
        assert_eq!(alt.h3_port(), None);
        headers.insert(ALT_SVC, r#"h3=":7000""#.parse().unwrap());
        alt.learn(&headers, "h");
        assert_eq!(alt.h3_port(), Some(7000));
        headers.insert(ALT_SVC, "clear".parse().unwrap());
        alt.learn(&headers, "h");
        assert_eq!(alt.h3_port(), None);
    }
}
