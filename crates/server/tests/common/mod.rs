//! Shared helpers: a server on a tiny random model on 127.0.0.1:0, and a plain HTTP client
//! (ureq) that reads JSON bodies and server-sent events.

#![allow(dead_code)]

use candle_core::quantized::GgmlDType;
use ferrite_llm::testing::{temp_dir, write_gguf, TinySpec};
use ferrite_llm::{load_model, ComputeDType, FullCache, KvCache};
use ferrite_server::{KvFactory, Server, ServerConfig};
use serde_json::Value;
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;

/// Builds `full`, `sink:S+W` / `window:W`, `quant:` / `kivi:` / `gear:` and composed
/// `sink:S+W/gear:...` caches for `geometry` (as `ferrite serve` does).
pub fn factory(geometry: ferrite_llm::KvGeometry) -> KvFactory {
    Arc::new(move |spec: &str| -> anyhow::Result<Box<dyn KvCache>> {
        if spec.contains('/') {
            return ferrite_gear::build(spec, &geometry);
        }
        match spec.split_once(':').map_or(spec, |(name, _)| name) {
            "full" if spec == "full" => Ok(Box::new(FullCache::new(&geometry))),
            "quant" | "kivi" | "gear" => ferrite_gear::build(spec, &geometry),
            _ => ferrite_streaming::build(spec, &geometry),
        }
    })
}

/// A server on the tiny model written under a fresh temp dir named `name`.
pub fn tiny_server(name: &str, config: ServerConfig) -> Server {
    let dir = temp_dir(name);
    let path = write_gguf(
        &dir.join("tiny.gguf"),
        &TinySpec::default(),
        GgmlDType::Q8_0,
    )
    .expect("write tiny model");
    server_on(&path, config)
}

/// A server on the model at `path`.
pub fn server_on(path: &Path, config: ServerConfig) -> Server {
    let m = load_model(path, ComputeDType::Quantized).expect("load model");
    let f = factory(m.model.kv_geometry());
    Server::start(ServerConfig { port: 0, ..config }, m, f).expect("start server")
}

/// Base URL of a server.
pub fn url(s: &Server, path: &str) -> String {
    format!("http://{}{}", s.addr(), path)
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(std::time::Duration::from_secs(60))
        .build()
}

/// POSTs a raw body; returns status and parsed JSON body (Null when not JSON).
pub fn post_raw(s: &Server, path: &str, body: &str) -> (u16, Value) {
    let r = agent()
        .post(&url(s, path))
        .set("Content-Type", "application/json")
        .send_string(body);
    read(r)
}

/// POSTs only the head of a request whose `Content-Length` declares `declared` bytes, over a
/// plain socket, and reads the answer. A server that refuses an oversized body answers from the
/// declared length and closes; a client that went on writing the body could meet a reset
/// before reading that answer (ureq does), so the refusal is tested this way, deterministically.
pub fn post_declared_length(s: &Server, path: &str, declared: usize) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(s.addr()).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("read timeout");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n{{\"prompt\": \"",
        s.addr()
    );
    stream.write_all(head.as_bytes()).expect("write head");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// POSTs JSON.
pub fn post(s: &Server, path: &str, body: &Value) -> (u16, Value) {
    post_raw(s, path, &body.to_string())
}

/// GETs a path.
pub fn get(s: &Server, path: &str) -> (u16, Value) {
    read(agent().get(&url(s, path)).call())
}

fn read(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// An open SSE response.
pub struct SseReader {
    /// HTTP status.
    pub status: u16,
    lines: std::io::Lines<std::io::BufReader<Box<dyn std::io::Read + Send + Sync>>>,
}

impl SseReader {
    /// Next `data:` payload (`None` at the end of the body).
    pub fn next_data(&mut self) -> Option<String> {
        for line in self.lines.by_ref() {
            let line = line.ok()?;
            if let Some(d) = line.strip_prefix("data: ") {
                return Some(d.to_string());
            }
        }
        None
    }

    /// Every remaining payload up to and including `[DONE]`.
    pub fn collect(mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(d) = self.next_data() {
            let done = d == "[DONE]";
            out.push(d);
            if done {
                break;
            }
        }
        out
    }
}

/// POSTs a streaming request and returns the open event stream.
pub fn post_stream(s: &Server, path: &str, body: &Value) -> SseReader {
    let resp = match agent()
        .post(&url(s, path))
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
    {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let reader: Box<dyn std::io::Read + Send + Sync> = resp.into_reader();
    SseReader {
        status,
        lines: std::io::BufReader::new(reader).lines(),
    }
}

/// A one-turn user chat body.
pub fn chat_body(text: &str, max_tokens: usize) -> Value {
    serde_json::json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

/// Polls `/health` until `pred` holds (or panics after `secs`).
pub fn wait_health(s: &Server, secs: f64, pred: impl Fn(&Value) -> bool) -> Value {
    let t0 = std::time::Instant::now();
    loop {
        let (_, h) = get(s, "/health");
        if pred(&h) {
            return h;
        }
        assert!(
            t0.elapsed().as_secs_f64() < secs,
            "health never matched: {h}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
