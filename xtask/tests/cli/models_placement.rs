//! `cargo xtask models load|unload` against a stand-in orcd (a one-request HTTP server on
//! loopback): the request it sends, its output, and orcd's refusals passed on with the hint.

use crate::support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::mpsc;

/// Answers one request with `status` and `body`; returns its URL and the request line it got.
fn one_answer(status: &str, body: &'static str) -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let status = status.to_owned();
    let (sender, received) = mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 2 {
            line.clear();
        }
        let _ = sender.send(request_line.trim().to_owned());
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    });
    (url, received)
}

#[test]
fn load_asks_orcd_for_the_model_on_the_host_and_prints_its_answer() {
    let (url, request) = one_answer("200 OK", r#"{"model":"gemma3-270m","status":"loaded"}"#);
    let outcome = support::xtask()
        .run([
            "--json",
            "models",
            "load",
            "gemma3-270m",
            "--host",
            "gpu-box",
            "--orchestrator-url",
            &url,
        ])
        .success();
    assert_eq!(
        request.recv().unwrap(),
        "POST /v2/models/gemma3-270m/load?host=gpu-box HTTP/1.1"
    );
    assert_eq!(outcome.json()["status"], "loaded");
}

#[test]
fn unload_names_the_workers_and_refusals_carry_orcds_reason() {
    let (url, request) = one_answer(
        "200 OK",
        r#"{"model":"gemma3-270m","status":"unloading","workers":["h-gemma3-270m-1"]}"#,
    );
    let outcome = support::xtask()
        .run([
            "models",
            "unload",
            "gemma3-270m",
            "--orchestrator-url",
            &url,
        ])
        .success();
    assert_eq!(
        request.recv().unwrap(),
        "POST /v2/models/gemma3-270m/unload HTTP/1.1"
    );
    assert!(
        outcome.stdout.contains("stopping h-gemma3-270m-1"),
        "{outcome}"
    );

    let (url, _) = one_answer(
        "403 Forbidden",
        r#"{"error":"loading and unloading models needs an operator token","error_type":"unauthorized"}"#,
    );
    let outcome =
        support::xtask().run(["models", "load", "gemma3-270m", "--orchestrator-url", &url]);
    assert_eq!(outcome.code(), 1, "{outcome}");
    assert!(
        outcome.stderr.contains("needs an operator token"),
        "{outcome}"
    );
    assert!(outcome.stderr.contains("hint:"), "{outcome}");

    let outcome = support::xtask().run(["models", "load", "a/b", "--orchestrator-url", &url]);
    assert_eq!(outcome.code(), 1, "{outcome}");
    assert!(outcome.stderr.contains("is not a valid model"), "{outcome}");
}
