//! `quill-server`: the bundled Quill test and demo server (see docs/server.md).
//!
//! `quill-server --port 0` prints `listening on http://127.0.0.1:PORT` once ready.

fn main() -> std::process::ExitCode {
    quill::server::main_with_args(std::env::args().skip(1))
}
