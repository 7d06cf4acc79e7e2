//! Sessions: chats whose KV cache persists between requests (the `session` extension).
//!
//! A turn feeds only its new tokens, so a conversation is never re-encoded; with a `sink:S+W`
//! policy it streams past the model's context at constant memory. A session is checked out for
//! one request at a time (a second concurrent request gets 409). A turn that is cancelled (the
//! client went away) or fails ends the session and frees its cache; a later request with the
//! same id starts afresh. When the table is full the least recently used idle session is
//! evicted; when every session is busy a new one is refused (429).

use crate::error::ApiError;
use crate::KvFactory;
use ferrite_llm::KvCache;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

struct Slot {
    /// `None` while a request holds the cache.
    cache: Option<Box<dyn KvCache>>,
    /// Tokens that close the previous assistant turn, fed with the next one.
    pending: Vec<u32>,
    /// The policy as the first request named it (`gear:4`) ...
    asked: String,
    /// ... and as the cache spells it (`gear:bits=4,group=0,...`); a later `kv` may be either.
    spec: String,
    last_used: Instant,
}

/// A checked-out session: its lease, its cache and the pending tokens of the previous turn.
pub type CheckedOut = (SessionLease, Box<dyn KvCache>, Vec<u32>);

/// The table of live sessions.
pub struct SessionStore {
    slots: Mutex<HashMap<String, Slot>>,
    max_sessions: usize,
}

/// A session checked out by one request: its cache and the tokens still to feed. Dropping it
/// without [`SessionLease::finish`] ends the session.
pub struct SessionLease {
    store: Arc<SessionStore>,
    id: String,
    /// Whether this is the session's first turn (the system prompt goes in).
    pub first_turn: bool,
    done: bool,
}

impl SessionStore {
    /// An empty table holding at most `max_sessions` sessions.
    pub fn new(max_sessions: usize) -> Arc<Self> {
        Arc::new(Self {
            slots: Mutex::new(HashMap::new()),
            max_sessions: max_sessions.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        // A panic elsewhere cannot leave the map half-updated: every update is one statement.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks out session `id`, creating it with policy `kv` (or `default_kv`) when new.
    /// Returns the lease, the cache and the pending tokens of the previous turn.
    pub fn checkout(
        self: &Arc<Self>,
        id: &str,
        kv: Option<&str>,
        default_kv: &str,
        factory: &KvFactory,
    ) -> Result<CheckedOut, ApiError> {
        if id.is_empty() || id.len() > 128 {
            return Err(ApiError::invalid(
                "`session` must be 1 to 128 characters",
                Some("session"),
            ));
        }
        let mut slots = self.lock();
        if let Some(slot) = slots.get_mut(id) {
            if let Some(kv) = kv {
                if kv != slot.asked && kv != slot.spec {
                    return Err(ApiError::invalid(
                        format!(
                            "session `{id}` uses KV policy `{}`; `kv` cannot change within a session",
                            slot.spec
                        ),
                        Some("kv"),
                    ));
                }
            }
            let cache = slot
                .cache
                .take()
                .ok_or_else(|| ApiError::session_busy(id))?;
            slot.last_used = Instant::now();
            let pending = std::mem::take(&mut slot.pending);
            return Ok((self.lease(id, false), cache, pending));
        }
        let spec = kv.unwrap_or(default_kv);
        let cache = factory(spec)
            .map_err(|e| ApiError::invalid(format!("bad KV policy: {e:#}"), Some("kv")))?;
        if slots.len() >= self.max_sessions {
            let idle = slots
                .iter()
                .filter(|(_, s)| s.cache.is_some())
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone());
            match idle {
                Some(k) => {
                    slots.remove(&k);
                }
                None => {
                    return Err(ApiError::busy(
                        format!("all {} sessions are busy", self.max_sessions),
                        "too_many_sessions",
                    ))
                }
            }
        }
        slots.insert(
            id.to_string(),
            Slot {
                cache: None,
                pending: Vec::new(),
                asked: spec.to_string(),
                spec: cache.spec(),
                last_used: Instant::now(),
            },
        );
        Ok((self.lease(id, true), cache, Vec::new()))
    }

    fn lease(self: &Arc<Self>, id: &str, first_turn: bool) -> SessionLease {
        SessionLease {
            store: self.clone(),
            id: id.to_string(),
            first_turn,
            done: false,
        }
    }

    /// Ends session `id`; false when there was none or it is busy (it ends when its request does).
    pub fn remove(&self, id: &str) -> bool {
        let mut slots = self.lock();
        match slots.get(id) {
            Some(s) if s.cache.is_some() => slots.remove(id).is_some(),
            _ => false,
        }
    }
}

impl SessionLease {
    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Returns the cache to the session with the tokens to feed next turn.
    pub fn finish(mut self, cache: Box<dyn KvCache>, pending: Vec<u32>) {
        self.done = true;
        if let Some(slot) = self.store.lock().get_mut(&self.id) {
            slot.cache = Some(cache);
            slot.pending = pending;
            slot.last_used = Instant::now();
        }
    }
}

impl Drop for SessionLease {
    fn drop(&mut self) {
        if !self.done {
            self.store.lock().remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_llm::{FullCache, KvGeometry};

    fn factory() -> KvFactory {
        Arc::new(|spec: &str| {
            anyhow::ensure!(spec == "full", "unknown policy `{spec}`");
            Ok(Box::new(FullCache::new(&KvGeometry {
                n_layer: 1,
                n_kv_head: 1,
                head_dim: 2,
                max_tokens: 8,
                device: candle_core::Device::Cpu,
            })) as Box<dyn KvCache>)
        })
    }

    #[test]
    fn busy_sessions_conflict_and_finished_ones_come_back() {
        let store = SessionStore::new(2);
        let f = factory();
        let (lease, cache, pending) = store.checkout("a", None, "full", &f).unwrap();
        assert!(lease.first_turn && pending.is_empty());
        let e = store.checkout("a", None, "full", &f).err().unwrap();
        assert_eq!(e.status.as_u16(), 409);
        lease.finish(cache, vec![7]);
        let (lease, _cache, pending) = store.checkout("a", None, "full", &f).unwrap();
        assert!(!lease.first_turn);
        assert_eq!(pending, vec![7]);
        drop(lease); // cancelled turn: the session ends
        assert!(store.is_empty());
    }

    #[test]
    fn full_table_evicts_idle_and_refuses_when_all_busy() {
        let store = SessionStore::new(1);
        let f = factory();
        let (lease, cache, _) = store.checkout("a", None, "full", &f).unwrap();
        let e = store.checkout("b", None, "full", &f).err().unwrap();
        assert_eq!(e.status.as_u16(), 429);
        lease.finish(cache, vec![]);
        let (_lease, _, _) = store.checkout("b", None, "full", &f).unwrap();
        assert_eq!(store.len(), 1);
        let e = store.checkout("c", Some("nope"), "full", &f).err().unwrap();
        assert_eq!(e.status.as_u16(), 400);
        assert_eq!(store.len(), 1, "a bad policy evicts nothing");
    }
}
