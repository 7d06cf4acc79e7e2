//! One short end-to-end chat on the real SmolLM2-135M-Instruct (Q4_1 GGUF). Fails, never skips,
//! when the model is absent (`make setup` installs it).

mod common;

use common::*;
use ferrite_server::ServerConfig;
use serde_json::json;
use std::path::Path;

#[test]
fn smollm2_answers_a_chat_over_http() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.exists(),
        "{} is missing: run `make setup`",
        path.display()
    );
    let s = server_on(
        &path,
        ServerConfig {
            model_name: "smollm2".into(),
            ..Default::default()
        },
    );
    let body = json!({
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 12, "temperature": 0, "kv": "sink:4+252",
    });
    let (st, r) = post(&s, "/v1/chat/completions", &body);
    assert_eq!(st, 200, "{r}");
    let text = r["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.contains("Paris"), "{text}");
    assert_eq!(r["ferrite"]["kv"], "sink:4+252");
    assert!(r["usage"]["prompt_tokens"].as_u64().unwrap() > 7, "{r}");
    assert_eq!(r["choices"][0]["finish_reason"], "stop", "{r}");
}
