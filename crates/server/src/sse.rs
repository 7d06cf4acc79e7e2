//! Server-sent events: worker events turned into OpenAI stream chunks, then `data: [DONE]`.
//!
//! The stream owns the event receiver; when the client disconnects the HTTP layer drops the
//! stream, the receiver closes, and the worker cancels (see [`crate::scheduler`]).

use crate::openai::{ChatChunk, ChunkChoice, Completion, Delta, TextChoice};
use crate::scheduler::{Event, Summary};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use std::collections::VecDeque;
use std::convert::Infallible;
use tokio::sync::mpsc::UnboundedReceiver;

/// Which endpoint's chunk shape to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `chat.completion.chunk`.
    Chat,
    /// `text_completion`.
    Text,
}

/// Identity of a stream, repeated in every chunk.
#[derive(Debug, Clone)]
pub struct StreamMeta {
    /// Response id.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// Served model.
    pub model: String,
    /// Endpoint.
    pub kind: Kind,
    /// Send a usage chunk before `[DONE]`.
    pub include_usage: bool,
}

impl StreamMeta {
    fn chat(&self, delta: Delta, finish: Option<&'static str>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason: finish,
            }],
            usage: None,
            ferrite: None,
        }
    }

    fn text(&self, text: String, finish: Option<&'static str>) -> Completion {
        Completion {
            id: self.id.clone(),
            object: "text_completion",
            created: self.created,
            model: self.model.clone(),
            choices: vec![TextChoice {
                text,
                index: 0,
                logprobs: None,
                finish_reason: finish,
            }],
            usage: None,
            ferrite: None,
        }
    }

    /// The opening chunk (chat only: the assistant role).
    fn opening(&self) -> Option<SseEvent> {
        (self.kind == Kind::Chat).then(|| {
            let delta = Delta {
                role: Some("assistant"),
                content: Some(String::new()),
            };
            json_event(&self.chat(delta, None))
        })
    }

    fn piece(&self, text: String) -> SseEvent {
        match self.kind {
            Kind::Chat => json_event(&self.chat(
                Delta {
                    role: None,
                    content: Some(text),
                },
                None,
            )),
            Kind::Text => json_event(&self.text(text, None)),
        }
    }

    fn finish(&self, s: Summary) -> Vec<SseEvent> {
        let mut out = Vec::new();
        match self.kind {
            Kind::Chat => {
                let mut c = self.chat(Delta::default(), Some(s.finish_reason));
                c.ferrite = Some(s.cache.clone());
                out.push(json_event(&c));
                if self.include_usage {
                    let mut u = self.chat(Delta::default(), None);
                    u.choices.clear();
                    u.usage = Some(s.usage);
                    out.push(json_event(&u));
                }
            }
            Kind::Text => {
                let mut c = self.text(String::new(), Some(s.finish_reason));
                c.ferrite = Some(s.cache.clone());
                out.push(json_event(&c));
                if self.include_usage {
                    let mut u = self.text(String::new(), None);
                    u.choices.clear();
                    u.usage = Some(s.usage);
                    out.push(json_event(&u));
                }
            }
        }
        out
    }
}

fn json_event<T: serde::Serialize>(value: &T) -> SseEvent {
    SseEvent::default().data(serde_json::to_string(value).unwrap_or_else(|_| "{}".into()))
}

fn done() -> SseEvent {
    SseEvent::default().data("[DONE]")
}

struct State {
    rx: UnboundedReceiver<Event>,
    meta: StreamMeta,
    out: VecDeque<SseEvent>,
    finished: bool,
}

/// The SSE response of a started request.
pub fn stream(
    rx: UnboundedReceiver<Event>,
    meta: StreamMeta,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let out = meta.opening().into_iter().collect();
    let state = State {
        rx,
        meta,
        out,
        finished: false,
    };
    let s = stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.out.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.finished {
                return None;
            }
            match st.rx.recv().await {
                Some(Event::Started) => {}
                Some(Event::Text(t)) => st.out.push_back(st.meta.piece(t)),
                Some(Event::Done(s)) => {
                    let evs = st.meta.finish(s);
                    st.out.extend(evs);
                    st.out.push_back(done());
                    st.finished = true;
                }
                Some(Event::Failed(e)) => {
                    st.out.push_back(json_event(&e.body()));
                    st.out.push_back(done());
                    st.finished = true;
                }
                None => st.finished = true,
            }
        }
    });
    Sse::new(s).keep_alive(KeepAlive::default())
}
