//! End-to-end tests of the server on loopback with an independent HTTP client (ureq), on a
//! tiny random model: OpenAI shapes, streaming, concurrency, sessions, bad input, disconnects
//! and shutdown.

mod common;

use common::*;
use ferrite_server::{Overflow, ServerConfig};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn config() -> ServerConfig {
    ServerConfig {
        model_name: "tiny".into(),
        ..Default::default()
    }
}

#[test]
fn models_health_and_unknown_routes() {
    let s = tiny_server("routes", config());
    let (st, m) = get(&s, "/v1/models");
    assert_eq!(st, 200);
    assert_eq!(m["object"], "list");
    assert_eq!(m["data"][0]["id"], "tiny");
    let (st, h) = get(&s, "/health");
    assert_eq!(st, 200);
    assert_eq!(h["status"], "ok");
    let (st, e) = get(&s, "/v1/nope");
    assert_eq!(st, 404);
    assert_eq!(e["error"]["type"], "not_found_error");
}

#[test]
fn chat_non_streaming_and_streaming_agree() {
    let s = tiny_server("chat", config());
    let body = chat_body("the cat sat on the mat", 12);
    let (st, r) = post(&s, "/v1/chat/completions", &body);
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["object"], "chat.completion");
    assert_eq!(r["choices"][0]["message"]["role"], "assistant");
    let content = r["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let u = &r["usage"];
    assert!(u["prompt_tokens"].as_u64().unwrap() > 5);
    assert!(u["completion_tokens"].as_u64().unwrap() <= 12);
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap())
    );
    let finish = r["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(finish == "stop" || finish == "length");

    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    sbody["stream_options"] = json!({"include_usage": true});
    let ev = post_stream(&s, "/v1/chat/completions", &sbody);
    assert_eq!(ev.status, 200);
    let data = ev.collect();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, content, "greedy stream and non-stream differ");
    let finish_chunk = chunks
        .iter()
        .find(|c| !c["choices"][0]["finish_reason"].is_null())
        .expect("a finish chunk");
    assert_eq!(finish_chunk["choices"][0]["finish_reason"], finish);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    assert_eq!(usage["usage"], r["usage"]);
}

#[test]
fn completions_stream_and_stop_sequences() {
    let s = tiny_server("completions", config());
    let body = json!({"prompt": "the ant ate", "max_tokens": 10, "temperature": 0});
    let (st, r) = post(&s, "/v1/completions", &body);
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["object"], "text_completion");
    let text = r["choices"][0]["text"].as_str().unwrap().to_string();
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let data = post_stream(&s, "/v1/completions", &sbody).collect();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let streamed: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(streamed, text);
    // A stop sequence cut from the greedy text ends the reply right before it.
    let chars: Vec<char> = text.chars().collect();
    if chars.len() >= 4 {
        let stop: String = chars[2..4].iter().collect();
        let mut b = body.clone();
        b["stop"] = json!([stop]);
        let (st, r) = post(&s, "/v1/completions", &b);
        assert_eq!(st, 200, "{r}");
        let cut = r["choices"][0]["text"].as_str().unwrap();
        assert_eq!(cut, &text[..text.find(&stop).unwrap()]);
        assert_eq!(r["choices"][0]["finish_reason"], "stop");
    }
    // Token-id prompts work too.
    let (st, r) = post(
        &s,
        "/v1/completions",
        &json!({"prompt": [5, 6, 7], "max_tokens": 3}),
    );
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["usage"]["prompt_tokens"], 3);
}

fn assert_error(st: u16, body: &Value, want: u16, param: Option<&str>) {
    assert_eq!(st, want, "{body}");
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(e["type"].is_string(), "{body}");
    assert!(
        e.get("param").is_some() && e.get("code").is_some(),
        "{body}"
    );
    if let Some(p) = param {
        assert_eq!(e["param"], p, "{body}");
    }
}

#[test]
fn bad_input_gets_openai_style_4xx() {
    let s = tiny_server(
        "bad",
        ServerConfig {
            max_body_bytes: 64 * 1024,
            ..config()
        },
    );
    let chat = "/v1/chat/completions";
    let (st, b) = post_raw(&s, chat, "{\"messages\": [");
    assert_error(st, &b, 400, None);
    assert_eq!(b["error"]["code"], "invalid_json");
    let (st, b) = post_raw(&s, chat, "");
    assert_error(st, &b, 400, None);
    let cases: Vec<(Value, &str)> = vec![
        (json!({"messages": "hi"}), "messages"),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}),
            "temperature",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}),
            "max_tokens",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}),
            "stream",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "bogus": 1}),
            "bogus",
        ),
        (json!({"messages": []}), "messages"),
        (
            json!({"messages": [{"role": "user", "content": "  "}]}),
            "messages[0].content",
        ),
        (
            json!({"messages": [{"role": "robot", "content": "hi"}]}),
            "messages[0].role",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "n": 2}),
            "n",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}),
            "max_tokens",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 9}),
            "temperature",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "kv": "nonsense"}),
            "kv",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "stop": ""}),
            "stop",
        ),
        (json!({"prompt": "hi"}), "prompt"),
        (json!({}), "messages"),
    ];
    for (body, param) in cases {
        let (st, b) = post(&s, chat, &body);
        assert_error(st, &b, 400, Some(param));
    }
    let (st, b) = post(&s, "/v1/completions", &json!({"prompt": ""}));
    assert_error(st, &b, 400, Some("prompt"));
    let (st, b) = post(&s, "/v1/completions", &json!({"prompt": [999999]}));
    assert_error(st, &b, 400, Some("prompt"));
    // Over-long: the tiny model's context is 128 tokens.
    let long = "the cat sat on the mat ".repeat(40);
    let (st, b) = post(&s, chat, &chat_body(&long, 4));
    assert_error(st, &b, 400, Some("messages"));
    assert_eq!(b["error"]["code"], "context_length_exceeded");
    // Too large a body: refused from its declared length, before it is read.
    let (st, b) = post_declared_length(&s, "/v1/completions", 100 * 1024);
    assert_error(st, &b, 413, None);
    // The server still answers.
    let (st, _) = post(&s, chat, &chat_body("hi", 2));
    assert_eq!(st, 200);
}

#[test]
fn over_long_prompts_truncate_when_configured_and_stream_with_sink() {
    let s = tiny_server(
        "truncate",
        ServerConfig {
            overflow: Overflow::Truncate,
            ..config()
        },
    );
    let long = "the cat sat on the mat ".repeat(40);
    let (st, r) = post(&s, "/v1/chat/completions", &chat_body(&long, 4));
    assert_eq!(st, 200, "{r}");
    assert!(r["usage"]["prompt_tokens"].as_u64().unwrap() < 128);
    let mut b = chat_body(&long, 4);
    b["kv"] = json!("sink:4+28");
    let (st, r) = post(&s, "/v1/chat/completions", &b);
    assert_eq!(st, 200, "{r}");
    assert!(r["usage"]["prompt_tokens"].as_u64().unwrap() > 128);
    assert_eq!(r["ferrite"]["kv"], "sink:4+28");
    assert!(r["ferrite"]["cache_tokens"].as_u64().unwrap() <= 32);
}

#[test]
fn concurrent_requests_each_get_their_own_answer() {
    let s = tiny_server(
        "concurrent",
        ServerConfig {
            parallel: 2,
            queue: 16,
            ..config()
        },
    );
    let prompts = [
        "the cat",
        "an ant",
        "the hat on",
        "in the mat",
        "then the",
        "ate the",
    ];
    let solo: Vec<Value> = prompts
        .iter()
        .map(|p| post(&s, "/v1/chat/completions", &chat_body(p, 8)).1)
        .collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let s = &s;
                scope.spawn(move || {
                    let mut b = chat_body(p, 8);
                    if i % 2 == 1 {
                        b["stream"] = json!(true);
                        let data = post_stream(s, "/v1/chat/completions", &b).collect();
                        data.iter()
                            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                            .filter_map(|c| {
                                c["choices"][0]["delta"]["content"]
                                    .as_str()
                                    .map(str::to_owned)
                            })
                            .collect::<String>()
                    } else {
                        let (st, r) = post(s, "/v1/chat/completions", &b);
                        assert_eq!(st, 200, "{r}");
                        r["choices"][0]["message"]["content"]
                            .as_str()
                            .unwrap()
                            .to_string()
                    }
                })
            })
            .collect();
        for (h, solo) in handles.into_iter().zip(&solo) {
            assert_eq!(
                h.join().unwrap(),
                solo["choices"][0]["message"]["content"].as_str().unwrap()
            );
        }
    });
}

/// A request that runs for a while: a streaming cache and many tokens.
fn long_body(session: Option<&str>) -> Value {
    let mut b = chat_body("the cat sat", 8192);
    b["stream"] = json!(true);
    b["kv"] = json!("sink:4+28");
    b["temperature"] = json!(1.0);
    // a random tiny model samples EOS now and then: keep going so only cancellation ends it
    b["ignore_eos"] = json!(true);
    if let Some(id) = session {
        b["session"] = json!(id);
    }
    b
}

#[test]
fn a_full_queue_is_429_and_a_disconnect_cancels_and_frees_the_session() {
    let s = tiny_server(
        "queue",
        ServerConfig {
            parallel: 1,
            queue: 0,
            ..config()
        },
    );
    let mut busy = post_stream(&s, "/v1/chat/completions", &long_body(Some("chat-1")));
    assert_eq!(busy.status, 200);
    assert!(busy.next_data().is_some());
    let (_, h) = get(&s, "/health");
    assert_eq!(h["sessions"], 1);
    let (st, b) = post(&s, "/v1/chat/completions", &chat_body("hi", 2));
    assert_error(st, &b, 429, None);
    assert_eq!(b["error"]["code"], "queue_full");
    // Walk away mid-stream: the worker stops and the session's cache is freed (a finished
    // turn would have kept the session).
    let t0 = Instant::now();
    drop(busy);
    wait_health(&s, 10.0, |h| h["active"] == 0 && h["sessions"] == 0);
    eprintln!("cancelled after {:?}", t0.elapsed());
    let (st, r) = post(&s, "/v1/chat/completions", &chat_body("hi", 2));
    assert_eq!(st, 200, "{r}");
}

#[test]
fn a_session_streams_past_the_context_at_constant_memory() {
    let s = tiny_server("sessions", config());
    let mut bytes = Vec::new();
    let mut total = 0;
    for turn in 0..12 {
        let b = json!({
            "messages": [{"role": "user", "content": format!("turn {turn}: the cat sat on the mat")}],
            "max_tokens": 16, "temperature": 0, "session": "s1", "kv": "sink:4+28",
        });
        let (st, r) = post(&s, "/v1/chat/completions", &b);
        assert_eq!(st, 200, "turn {turn}: {r}");
        total += r["usage"]["total_tokens"].as_u64().unwrap();
        assert_eq!(r["ferrite"]["session"], "s1");
        assert!(r["ferrite"]["cache_tokens"].as_u64().unwrap() <= 32);
        bytes.push(r["ferrite"]["cache_bytes"].as_u64().unwrap());
    }
    assert!(
        total > 3 * 128,
        "the chat went {total} tokens, past the context of 128"
    );
    let settled = &bytes[4..];
    assert!(
        settled.iter().all(|&b| b == settled[0]),
        "cache bytes {bytes:?}"
    );
    // A policy change within the session is refused; ending it works once.
    let mut b = chat_body("hi", 2);
    b["session"] = json!("s1");
    b["kv"] = json!("full");
    let (st, e) = post(&s, "/v1/chat/completions", &b);
    assert_error(st, &e, 400, Some("kv"));
    let del = |id: &str| {
        ureq::delete(&url(&s, &format!("/v1/sessions/{id}")))
            .call()
            .map(|r| r.status())
            .unwrap_or_else(|e| match e {
                ureq::Error::Status(c, _) => c,
                e => panic!("{e}"),
            })
    };
    assert_eq!(del("s1"), 200);
    assert_eq!(del("s1"), 404);
    // With a full cache, a session that outgrows the context is told so.
    let mut refused = false;
    for turn in 0..20 {
        let b = json!({
            "messages": [{"role": "user", "content": "the cat sat on the mat"}],
            "max_tokens": 16, "temperature": 0, "session": "s2",
        });
        let (st, r) = post(&s, "/v1/chat/completions", &b);
        if st == 400 {
            assert_eq!(r["error"]["code"], "context_length_exceeded", "{r}");
            refused = true;
            break;
        }
        assert_eq!(st, 200, "turn {turn}: {r}");
    }
    assert!(refused);
}

#[test]
fn shutdown_refuses_new_requests_and_cancels_running_ones_after_the_grace() {
    let s = tiny_server(
        "shutdown",
        ServerConfig {
            shutdown_grace: Duration::from_millis(300),
            ..config()
        },
    );
    let addr = s.addr();
    let mut running = post_stream(&s, "/v1/chat/completions", &long_body(None));
    assert!(running.next_data().is_some());
    let t0 = Instant::now();
    let stopper = std::thread::spawn(move || s.shutdown());
    // The running stream ends (an error event, then [DONE]) once the grace is over.
    let rest = running.collect();
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"), "{rest:?}");
    assert!(rest.iter().any(|d| d.contains("shutting_down")), "{rest:?}");
    stopper.join().unwrap().expect("clean shutdown");
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still listening"
    );
}
