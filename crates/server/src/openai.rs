//! OpenAI request and response shapes for `/v1/chat/completions` and `/v1/completions`.
//!
//! Requests are parsed strictly, like OpenAI's own API: a field of the wrong type or a field
//! the server does not know is a 400 naming the field (`param`), never a silent default.
//! Extensions: `session` (a chat whose KV cache persists between turns), `kv` (a KV-cache
//! policy spec for this request), `top_k` and `repetition_penalty`.

use crate::error::ApiError;
use serde::{Deserialize, Serialize};

/// `stream_options` of a streaming request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` before `[DONE]`.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// `stop`: one string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop sequence.
    One(String),
    /// Up to four stop sequences.
    Many(Vec<String>),
}

/// A message's content: a string or a list of `{"type": "text", "text": ...}` parts.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts (text only).
    Parts(Vec<ContentPart>),
}

/// One part of a message's content.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentPart {
    /// Must be `text`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    pub text: Option<String>,
}

/// One chat message of a request.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    /// `system`, `developer` (treated as system), `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: Option<Content>,
    /// Speaker name (ignored).
    pub name: Option<String>,
}

/// `prompt` of a completion: a string, a one-element list of strings, or token ids.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// Text.
    Text(String),
    /// A list of texts (exactly one is supported).
    Texts(Vec<String>),
    /// Token ids.
    Tokens(Vec<u32>),
}

/// The body of `POST /v1/chat/completions` (`messages`) and `POST /v1/completions`
/// (`prompt`): one strict struct, so that every field is type-checked and an unknown one is a
/// 400; the handler checks which of `messages` / `prompt` its endpoint needs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Chat: the conversation (with `session`: only the new turns).
    pub messages: Option<Vec<ChatMessage>>,
    /// Completions: the text to continue.
    pub prompt: Option<Prompt>,
    /// Extension (chat): a session id whose KV cache persists between requests.
    pub session: Option<String>,
    /// Model name (any value is accepted: the server serves one model).
    pub model: Option<String>,
    /// Stream server-sent events.
    pub stream: Option<bool>,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Most tokens to generate.
    pub max_tokens: Option<u64>,
    /// Newer name of `max_tokens` (chat).
    pub max_completion_tokens: Option<u64>,
    /// Softmax temperature in [0, 2] (0 = greedy; default 1).
    pub temperature: Option<f32>,
    /// Nucleus mass in (0, 1].
    pub top_p: Option<f32>,
    /// Keep the k most likely tokens (extension; 0 = off).
    pub top_k: Option<u32>,
    /// CTRL repetition penalty (extension; 1 = off).
    pub repetition_penalty: Option<f32>,
    /// Keep generating past end-of-sequence tokens, up to `max_tokens` (extension, as
    /// llama.cpp's server; for benchmarks and tests).
    pub ignore_eos: Option<bool>,
    /// Accepted for compatibility and ignored.
    pub frequency_penalty: Option<f32>,
    /// Accepted for compatibility and ignored.
    pub presence_penalty: Option<f32>,
    /// Sampling seed (default: drawn per request).
    pub seed: Option<u64>,
    /// Choices to generate: only 1 is supported.
    pub n: Option<u32>,
    /// Stop sequences.
    pub stop: Option<Stop>,
    /// End-user id (ignored).
    pub user: Option<String>,
    /// Extension: KV-cache policy of this request (`full`, `sink:4+508`, `gear:...`).
    pub kv: Option<String>,
}

/// Parses a JSON body strictly; the error names the field at fault.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::invalid(format!("malformed JSON body: {inner}"), None)
                .with_code("invalid_json");
        }
        // An unknown field's error sits at the root: take its name from the message.
        let param = if path == "." {
            unknown_field(&inner.to_string())
        } else {
            Some(path)
        };
        ApiError {
            param,
            ..ApiError::invalid(format!("invalid request: {inner}"), None)
        }
    })
}

fn unknown_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

/// Token counts of a response.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens fed this request (in a session: this turn's new tokens).
    pub prompt_tokens: usize,
    /// Tokens generated (the stop token excluded).
    pub completion_tokens: usize,
    /// Their sum.
    pub total_tokens: usize,
}

impl Usage {
    /// Counts with their total.
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// Extension block of every response: what the KV cache held.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheInfo {
    /// Spec of the policy used.
    pub kv: String,
    /// Tokens in the cache after the request.
    pub cache_tokens: usize,
    /// Heap bytes of the cache after the request.
    pub cache_bytes: usize,
    /// The session id, when there is one.
    pub session: Option<String>,
}

/// An assistant message of a response.
#[derive(Debug, Clone, Serialize)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: &'static str,
    /// The reply.
    pub content: String,
}

/// One choice of a chat completion.
#[derive(Debug, Clone, Serialize)]
pub struct ChatChoice {
    /// Always 0.
    pub index: u32,
    /// The reply.
    pub message: AssistantMessage,
    /// Always null.
    pub logprobs: Option<()>,
    /// `stop` or `length`.
    pub finish_reason: &'static str,
}

/// A chat completion response.
#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletion {
    /// `chatcmpl-...`.
    pub id: String,
    /// `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The served model.
    pub model: String,
    /// One choice.
    pub choices: Vec<ChatChoice>,
    /// Token counts.
    pub usage: Usage,
    /// Extension: the KV cache.
    pub ferrite: CacheInfo,
}

/// One choice of a text completion (also the shape of its stream chunks).
#[derive(Debug, Clone, Serialize)]
pub struct TextChoice {
    /// The text.
    pub text: String,
    /// Always 0.
    pub index: u32,
    /// Always null.
    pub logprobs: Option<()>,
    /// `stop`, `length` or null while streaming.
    pub finish_reason: Option<&'static str>,
}

/// A text completion response or stream chunk.
#[derive(Debug, Clone, Serialize)]
pub struct Completion {
    /// `cmpl-...`.
    pub id: String,
    /// `text_completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The served model.
    pub model: String,
    /// One choice (none in a usage-only chunk).
    pub choices: Vec<TextChoice>,
    /// Token counts (streams: only in the last chunk, when asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Extension: the KV cache (final response and final chunk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ferrite: Option<CacheInfo>,
}

/// The `delta` of a chat stream chunk.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Delta {
    /// `assistant` in the first chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// New text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// One choice of a chat stream chunk.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkChoice {
    /// Always 0.
    pub index: u32,
    /// What is new.
    pub delta: Delta,
    /// Always null.
    pub logprobs: Option<()>,
    /// Set in the last chunk.
    pub finish_reason: Option<&'static str>,
}

/// A chat stream chunk.
#[derive(Debug, Clone, Serialize)]
pub struct ChatChunk {
    /// Same id in every chunk of a stream.
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The served model.
    pub model: String,
    /// One choice (none in the usage chunk).
    pub choices: Vec<ChunkChoice>,
    /// Token counts (only in the usage chunk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Extension: the KV cache (in the chunk that finishes the choice).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ferrite: Option<CacheInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_types_and_unknown_fields_name_the_param() {
        let e = parse::<Request>(br#"{"messages": [], "temperature": "hot"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"), "{}", e.message);
        let e = parse::<Request>(br#"{"messages": [], "temprature": 1}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temprature"), "{}", e.message);
        let e = parse::<Request>(br#"{"messages": [{"role": 3}]}"#).unwrap_err();
        assert_eq!(
            e.param.as_deref(),
            Some("messages[0].role"),
            "{}",
            e.message
        );
        let e = parse::<Request>(br#"{"messages": ["#).unwrap_err();
        assert_eq!(e.code, Some("invalid_json"));
    }

    #[test]
    fn content_parts_and_prompt_forms_parse() {
        let r: Request = parse(
            br#"{"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                 "stop": ["a", "b"], "session": "s1", "kv": "full"}"#,
        )
        .unwrap();
        assert!(matches!(
            r.messages.unwrap()[0].content,
            Some(Content::Parts(_))
        ));
        assert!(matches!(r.stop, Some(Stop::Many(_))));
        let c: Request = parse(br#"{"prompt": [1, 2, 3]}"#).unwrap();
        assert!(matches!(c.prompt, Some(Prompt::Tokens(_))));
    }
}
