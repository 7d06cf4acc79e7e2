//! HTTP routes: request validation, prompt building, admission to the queue, and the answer
//! (one JSON body, or server-sent events).

use crate::error::ApiError;
use crate::openai::{
    self, AssistantMessage, ChatChoice, ChatCompletion, ChatMessage, Completion, Content, Prompt,
    Request, Stop, TextChoice,
};
use crate::scheduler::{Event, Job, Summary};
use crate::sse::{self, Kind, StreamMeta};
use crate::{AppState, Overflow};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use ferrite_llm::generate::GenerateParams;
use ferrite_llm::sampling::SamplingParams;
use ferrite_llm::tokenizer::{chatml_prompt, Message};
use ferrite_llm::KvCache;
use serde_json::json;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::unbounded_channel;

/// The router of every endpoint.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/sessions/{id}", delete(end_session))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            refuse_declared_oversize,
        ))
        .with_state(state)
}

/// Answers 413 from a `Content-Length` above the limit before a byte of the body is read, so a
/// client that waits (`Expect: 100-continue`, as curl does) gets the refusal rather than a reset
/// connection. Bodies without a declared length are cut off by `DefaultBodyLimit` as they stream.
async fn refuse_declared_oversize(
    State(st): State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let limit = st.config.max_body_bytes;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > limit as u64 => ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            ..ApiError::invalid(
                format!("the body is {len} bytes; the limit is {limit}"),
                None,
            )
        }
        .into_response(),
        _ => next.run(req).await,
    }
}

async fn health(State(st): State<Arc<AppState>>) -> Response {
    let status = if st.scheduler.is_draining() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = json!({
        "status": if st.scheduler.is_draining() { "shutting_down" } else { "ok" },
        "model": st.config.model_name,
        "kv": st.config.default_kv,
        "workers": st.config.parallel,
        "active": st.scheduler.active(),
        "queued": st.scheduler.queued(),
        "queue_capacity": st.config.queue,
        "sessions": st.sessions.len(),
    });
    (status, Json(body)).into_response()
}

async fn models(State(st): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": st.config.model_name,
            "object": "model",
            "created": st.started,
            "owned_by": "ferrite",
        }]
    }))
}

async fn not_found() -> ApiError {
    ApiError::not_found(
        "no such route (see /v1/chat/completions, /v1/completions, /v1/models, /health)",
    )
}

async fn end_session(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    if st.sessions.remove(&id) {
        Json(json!({"id": id, "object": "session", "deleted": true})).into_response()
    } else {
        ApiError::not_found(format!("no idle session `{id}`")).into_response()
    }
}

async fn chat(State(st): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    answer(st, body, Kind::Chat)
        .await
        .unwrap_or_else(|e| e.into_response())
}

async fn completions(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(st, body, Kind::Text)
        .await
        .unwrap_or_else(|e| e.into_response())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Validated length, stop and sampling settings.
fn decode_params(
    req: &Request,
    st: &AppState,
) -> Result<(GenerateParams, SamplingParams), ApiError> {
    if let Some(n) = req.n {
        if n != 1 {
            return Err(ApiError::invalid("only `n` = 1 is supported", Some("n")));
        }
    }
    let max_tokens = req
        .max_completion_tokens
        .or(req.max_tokens)
        .unwrap_or(st.config.default_max_tokens as u64);
    if max_tokens == 0 || max_tokens > st.config.max_tokens_cap as u64 {
        return Err(ApiError::invalid(
            format!("`max_tokens` must be in 1..={}", st.config.max_tokens_cap),
            Some("max_tokens"),
        ));
    }
    let temperature = req.temperature.unwrap_or(1.0);
    if !temperature.is_finite() || !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(
            "`temperature` must be in [0, 2]",
            Some("temperature"),
        ));
    }
    let top_p = req.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(
            "`top_p` must be in (0, 1]",
            Some("top_p"),
        ));
    }
    let repetition_penalty = req.repetition_penalty.unwrap_or(1.0);
    if !repetition_penalty.is_finite() || repetition_penalty <= 0.0 {
        return Err(ApiError::invalid(
            "`repetition_penalty` must be > 0",
            Some("repetition_penalty"),
        ));
    }
    let stop = match &req.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    if stop.len() > 4 || stop.iter().any(|s| s.is_empty()) {
        return Err(ApiError::invalid(
            "`stop` takes at most 4 non-empty strings",
            Some("stop"),
        ));
    }
    let seed = req.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let generate = GenerateParams {
        max_tokens: max_tokens as usize,
        stop,
        ignore_eos: req.ignore_eos.unwrap_or(false),
    };
    let sampling = SamplingParams {
        temperature,
        top_k: req.top_k.unwrap_or(0) as usize,
        top_p,
        repetition_penalty,
        seed,
        ..Default::default()
    };
    Ok((generate, sampling))
}

/// The text of a message, or why it is refused.
fn message_text(m: &ChatMessage, i: usize) -> Result<Message, ApiError> {
    let param = format!("messages[{i}]");
    let role = match m.role.as_str() {
        "system" | "developer" => "system",
        "user" => "user",
        "assistant" => "assistant",
        other => {
            return Err(ApiError::invalid(
                format!("unsupported role `{other}` (system, developer, user, assistant)"),
                Some(&format!("{param}.role")),
            ))
        }
    };
    let content = match &m.content {
        None => String::new(),
        Some(Content::Text(t)) => t.clone(),
        Some(Content::Parts(parts)) => {
            let mut s = String::new();
            for (j, p) in parts.iter().enumerate() {
                match (p.kind.as_str(), &p.text) {
                    ("text", Some(t)) => s.push_str(t),
                    _ => {
                        return Err(ApiError::invalid(
                            "only `text` content parts with a `text` field are supported",
                            Some(&format!("{param}.content[{j}]")),
                        ))
                    }
                }
            }
            s
        }
    };
    if content.trim().is_empty() && role != "assistant" {
        return Err(ApiError::invalid(
            format!("{param} has empty content"),
            Some(&format!("{param}.content")),
        ));
    }
    Ok(Message {
        role: role.into(),
        content,
    })
}

/// ChatML text of `messages`, with the template's default system prompt on a first turn that
/// has none.
fn chat_text(
    st: &AppState,
    messages: &[ChatMessage],
    first_turn: bool,
) -> Result<String, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "`messages` must not be empty",
            Some("messages"),
        ));
    }
    let mut msgs = messages
        .iter()
        .enumerate()
        .map(|(i, m)| message_text(m, i))
        .collect::<Result<Vec<_>, _>>()?;
    if first_turn && msgs[0].role != "system" {
        if let Some(system) = &st.engine.tokenizer.default_system {
            msgs.insert(
                0,
                Message {
                    role: "system".into(),
                    content: system.clone(),
                },
            );
        }
    }
    Ok(chatml_prompt(&msgs))
}

fn encode(st: &AppState, text: &str) -> Result<Vec<u32>, ApiError> {
    st.engine
        .tokenizer
        .encode(text)
        .map_err(|e| ApiError::invalid(format!("cannot tokenize the prompt: {e:#}"), None))
}

/// Checks that `prompt` fits `cache` (room for it and one generated token), truncating its
/// oldest tokens instead when allowed.
fn fit(
    st: &AppState,
    prompt: &mut Vec<u32>,
    cache: &dyn KvCache,
    may_truncate: bool,
    param: &str,
) -> Result<(), ApiError> {
    let Some(left) = cache.remaining() else {
        return Ok(()); // the policy streams: it evicts instead of refusing
    };
    if prompt.len() < left {
        return Ok(());
    }
    if may_truncate && st.config.overflow == Overflow::Truncate && left > 1 {
        let cut = prompt.len() - (left - 1);
        prompt.drain(..cut);
        return Ok(());
    }
    Err(ApiError::context_length(
        format!(
            "the prompt is {} tokens but the KV cache `{}` has room for {} (the prompt and at least one generated token); shorten it, use --overflow truncate, or stream with a `sink:` policy",
            prompt.len(),
            cache.spec(),
            left
        ),
        param,
    ))
}

async fn answer(
    st: Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
    kind: Kind,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| ApiError {
        status: e.status(),
        ..ApiError::invalid(format!("cannot read the body: {}", e.body_text()), None)
    })?;
    let req: Request = openai::parse(&body)?;
    if st.scheduler.is_draining() {
        return Err(ApiError::shutting_down());
    }
    let (params, sampling) = decode_params(&req, &st)?;
    let stream = req.stream.unwrap_or(false);
    let include_usage = req
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    if req.stream_options.is_some() && !stream {
        return Err(ApiError::invalid(
            "`stream_options` needs `stream: true`",
            Some("stream_options"),
        ));
    }
    let default_kv = st.config.default_kv.as_str();
    let new_cache = |kv: Option<&str>| {
        (st.factory)(kv.unwrap_or(default_kv))
            .map_err(|e| ApiError::invalid(format!("bad KV policy: {e:#}"), Some("kv")))
    };
    let (mut prompt, cache, session, session_pending, param) = match kind {
        Kind::Chat => {
            if req.prompt.is_some() {
                return Err(ApiError::invalid(
                    "`prompt` belongs to /v1/completions; chat takes `messages`",
                    Some("prompt"),
                ));
            }
            let messages = req
                .messages
                .as_deref()
                .ok_or_else(|| ApiError::invalid("`messages` is required", Some("messages")))?;
            match &req.session {
                Some(id) => {
                    let (lease, cache, pending) =
                        st.sessions
                            .checkout(id, req.kv.as_deref(), default_kv, &st.factory)?;
                    let text = match chat_text(&st, messages, lease.first_turn) {
                        Ok(t) => t,
                        Err(e) => {
                            lease.finish(cache, pending);
                            return Err(e);
                        }
                    };
                    let mut prompt = pending.clone();
                    match encode(&st, &text) {
                        Ok(ids) => prompt.extend(ids),
                        Err(e) => {
                            lease.finish(cache, pending);
                            return Err(e);
                        }
                    }
                    (prompt, cache, Some(lease), pending, "messages")
                }
                None => {
                    let text = chat_text(&st, messages, true)?;
                    let cache = new_cache(req.kv.as_deref())?;
                    (encode(&st, &text)?, cache, None, Vec::new(), "messages")
                }
            }
        }
        Kind::Text => {
            if req.messages.is_some() || req.session.is_some() {
                return Err(ApiError::invalid(
                    "/v1/completions takes `prompt` (`messages` and `session` are for chat)",
                    Some(if req.session.is_some() {
                        "session"
                    } else {
                        "messages"
                    }),
                ));
            }
            let prompt = match &req.prompt {
                None => return Err(ApiError::invalid("`prompt` is required", Some("prompt"))),
                Some(Prompt::Text(t)) => encode(&st, t)?,
                Some(Prompt::Texts(v)) if v.len() == 1 => encode(&st, &v[0])?,
                Some(Prompt::Texts(_)) => {
                    return Err(ApiError::invalid(
                        "exactly one prompt per request is supported",
                        Some("prompt"),
                    ))
                }
                Some(Prompt::Tokens(ids)) => {
                    let vocab = st.engine.model.config.vocab_size;
                    if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
                        return Err(ApiError::invalid(
                            format!("token id {bad} is outside the vocabulary of {vocab}"),
                            Some("prompt"),
                        ));
                    }
                    ids.clone()
                }
            };
            if prompt.is_empty() {
                return Err(ApiError::invalid(
                    "`prompt` must not be empty",
                    Some("prompt"),
                ));
            }
            (
                prompt,
                new_cache(req.kv.as_deref())?,
                None,
                Vec::new(),
                "prompt",
            )
        }
    };
    if let Err(e) = fit(&st, &mut prompt, cache.as_ref(), session.is_none(), param) {
        if let Some(lease) = session {
            lease.finish(cache, session_pending);
        }
        return Err(e);
    }

    let n = st
        .next_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = match kind {
        Kind::Chat => format!("chatcmpl-{n}"),
        Kind::Text => format!("cmpl-{n}"),
    };
    let (tx, mut rx) = unbounded_channel();
    let job = Job {
        id: id.clone(),
        prompt,
        params,
        sampling,
        cache,
        session,
        session_pending,
        events: tx,
        queued_at: Instant::now(),
    };
    if let Err(refused) = st.scheduler.submit(job) {
        let (e, job) = *refused;
        job.restore();
        return Err(e);
    }
    // Wait for a worker, so that a refusal while queued is still an HTTP error.
    match rx.recv().await {
        Some(Event::Started) => {}
        Some(Event::Failed(e)) => return Err(e),
        _ => return Err(ApiError::internal("the worker dropped the request")),
    }
    let created = unix_now();
    let model = st.config.model_name.clone();
    if stream {
        let meta = StreamMeta {
            id,
            created,
            model,
            kind,
            include_usage,
        };
        return Ok(sse::stream(rx, meta).into_response());
    }
    let mut text = String::new();
    let summary: Summary = loop {
        match rx.recv().await {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Done(s)) => break s,
            Some(Event::Failed(e)) => return Err(e),
            Some(Event::Started) => {}
            None => return Err(ApiError::internal("the worker dropped the request")),
        }
    };
    let body = match kind {
        Kind::Chat => serde_json::to_value(ChatCompletion {
            id,
            object: "chat.completion",
            created,
            model,
            choices: vec![ChatChoice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content: text,
                },
                logprobs: None,
                finish_reason: summary.finish_reason,
            }],
            usage: summary.usage,
            ferrite: summary.cache,
        }),
        Kind::Text => serde_json::to_value(Completion {
            id,
            object: "text_completion",
            created,
            model,
            choices: vec![TextChoice {
                text,
                index: 0,
                logprobs: None,
                finish_reason: Some(summary.finish_reason),
            }],
            usage: Some(summary.usage),
            ferrite: Some(summary.cache),
        }),
    };
    body.map(|b| Json(b).into_response())
        .map_err(|e| ApiError::internal(format!("serializing the response: {e}")))
}
