//! Serving with per-request cache policies on loopback, on a tiny random model (context 128):
//! GEAR (`gear:4`), attention sinks (`sink:S+W`) and the two composed (`sink:S+W/gear:4`), non-streaming and streaming, and sessions
//! that stream past the context on a sink cache at constant memory.

mod common;

use common::*;
use ferrite_server::ServerConfig;
use serde_json::{json, Value};

fn config() -> ServerConfig {
    ServerConfig {
        model_name: "tiny".into(),
        ..Default::default()
    }
}

/// A greedy chat that runs `max_tokens` (EOS ignored) in cache policy `kv`.
fn body(kv: &str, text: &str, max_tokens: usize) -> Value {
    let mut b = chat_body(text, max_tokens);
    b["kv"] = json!(kv);
    b["ignore_eos"] = json!(true);
    b
}

/// What a stream said: content, finish reason, the `ferrite` cache info and usage.
struct Streamed {
    content: String,
    finish: Value,
    ferrite: Value,
    usage: Value,
}

fn stream(s: &ferrite_server::Server, b: &Value) -> Streamed {
    let mut b = b.clone();
    b["stream"] = json!(true);
    b["stream_options"] = json!({"include_usage": true});
    let ev = post_stream(s, "/v1/chat/completions", &b);
    assert_eq!(ev.status, 200);
    let data = ev.collect();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let end = chunks
        .iter()
        .find(|c| !c["choices"][0]["finish_reason"].is_null())
        .expect("a finish chunk");
    Streamed {
        content: chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect(),
        finish: end["choices"][0]["finish_reason"].clone(),
        ferrite: end["ferrite"].clone(),
        usage: chunks.last().unwrap()["usage"].clone(),
    }
}

#[test]
fn gear_and_sink_caches_per_request_answer_streaming_and_not() {
    let s = tiny_server("kv-policies", config());
    // Long enough that GEAR compresses a block (its buffer holds 64 tokens) and the sink
    // window (4 + 28) evicts.
    let text = "the cat sat on the mat in the hat, then the ant ate the beans";
    let max_tokens = 30;
    let (st, full) = post(&s, "/v1/chat/completions", &body("full", text, max_tokens));
    assert_eq!(st, 200, "{full}");
    let prompt = full["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(
        prompt + max_tokens as u64 > 64 + 4,
        "prompt of {prompt} tokens"
    );
    for kv in ["gear:4", "sink:4+28", "sink:4+28/gear:4,buffer=16"] {
        let b = body(kv, text, max_tokens);
        let (st, r) = post(&s, "/v1/chat/completions", &b);
        assert_eq!(st, 200, "{kv}: {r}");
        let info = &r["ferrite"];
        assert!(info["kv"].as_str().unwrap().starts_with(&kv[..5]), "{r}");
        assert_eq!(r["usage"], full["usage"], "{kv}");
        assert_eq!(r["choices"][0]["finish_reason"], "length");
        let tokens = info["cache_tokens"].as_u64().unwrap();
        let bytes = info["cache_bytes"].as_u64().unwrap();
        let full_bytes = full["ferrite"]["cache_bytes"].as_u64().unwrap();
        if kv.starts_with("gear") {
            // Every token but the last sampled one is held, in fewer bytes than the full cache.
            assert!(info["kv"].as_str().unwrap().contains("bits=4"), "{r}");
            assert_eq!(tokens, prompt + max_tokens as u64 - 1);
            assert!(bytes < full_bytes, "gear {bytes} B vs full {full_bytes} B");
        } else {
            assert!(tokens <= 32, "{r}");
            if kv.contains("/gear") {
                // The window over a GEAR store: bounded like the sink, packed like GEAR.
                assert!(info["kv"].as_str().unwrap().contains("gear"), "{r}");
                assert!(bytes < full_bytes, "{kv} {bytes} B vs full {full_bytes} B");
            }
        }
        let content = r["choices"][0]["message"]["content"].as_str().unwrap();
        let streamed = stream(&s, &b);
        assert_eq!(
            streamed.content, content,
            "{kv}: greedy stream and non-stream differ"
        );
        assert_eq!(streamed.finish, "length");
        assert_eq!(streamed.usage, r["usage"]);
        assert_eq!(&streamed.ferrite, info);
    }
}

#[test]
fn a_sink_session_streams_turns_past_the_context_at_constant_cache_bytes() {
    let s = tiny_server("kv-session", config());
    let mut bytes = Vec::new();
    let mut total = 0;
    for turn in 0..12 {
        let mut b = body(
            "sink:4+28",
            &format!("turn {turn}: the cat sat on the mat"),
            16,
        );
        b["session"] = json!("chat");
        // Alternate streamed and whole answers within one session.
        let (ferrite, usage) = if turn % 2 == 0 {
            let r = stream(&s, &b);
            (r.ferrite, r.usage)
        } else {
            let (st, r) = post(&s, "/v1/chat/completions", &b);
            assert_eq!(st, 200, "turn {turn}: {r}");
            (r["ferrite"].clone(), r["usage"].clone())
        };
        assert_eq!(ferrite["session"], "chat");
        assert!(ferrite["cache_tokens"].as_u64().unwrap() <= 32);
        total += usage["total_tokens"].as_u64().unwrap();
        bytes.push(ferrite["cache_bytes"].as_u64().unwrap());
    }
    assert!(total > 3 * 128, "the chat went {total} tokens");
    let settled = &bytes[2..];
    assert!(settled.iter().all(|&b| b == settled[0]), "{bytes:?}");
    // A GEAR session cannot evict: outgrowing the context is refused, not a crash.
    let mut refused = false;
    for turn in 0..20 {
        let mut b = body("gear:4", "the cat sat on the mat", 16);
        b["session"] = json!("gear-chat");
        let (st, r) = post(&s, "/v1/chat/completions", &b);
        if st == 400 {
            assert_eq!(r["error"]["code"], "context_length_exceeded", "{r}");
            refused = true;
            break;
        }
        assert_eq!(st, 200, "turn {turn}: {r}");
    }
    assert!(
        refused,
        "a gear session outgrew the context without being told"
    );
}
